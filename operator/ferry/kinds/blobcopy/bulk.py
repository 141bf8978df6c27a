"""Multi-blob copies at the size of real storage accounts: listed page by page, copied across blobs.

A lister thread lists the source one page (PAGE_SIZE blobs; the first one shorter) at a time, records
the page as open in the manifest (with the marker and the last name that list it again) and hands it
on; copying starts with the first page. `parallelism` blobs are in flight at once, across page
boundaries. When a page's last blob is settled, its failures and counts go to the manifest and the
page is closed. At most MAX_OPEN_PAGES pages are open, which bounds memory and what a restart does again.

A restarted worker lists its open pages again (their blobs are checked on the destination: a blob
this copy finished carries Ferry's mark, or the service's copy properties, and is counted once, not
copied again) and then continues the listing from the saved marker.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from ferry.api.blobcopy import FIRST_FAILURES, BlobCopyMode, BlobFailureEntry
from ferry.kinds.blobcopy import locks as leases
from ferry.kinds.blobcopy import serverside
from ferry.kinds.blobcopy.items import (
    MARK_ID,
    PAGE_SIZE,
    PENDING,
    AlreadyCopied,
    BlobFailure,
    CopyItem,
    CopyStopped,
    Endpoints,
    RunContext,
    dest_properties,
    destination_name,
    list_again,
    list_page,
)
from ferry.kinds.blobcopy.manifest import Manifest, ManifestState, OpenPage, add_first_failures
from ferry.kinds.blobcopy.smallblobs import SmallBlobMover
from ferry.kinds.blobcopy.stream import abort_pending, copy_stream, is_small
from ferry.storage.blobs import describe, is_transient
from ferry.storage.sources import SourceChangedError, SourceObject, SourceUnavailableError, bind

# Receives the blob counts, the first failures (wire form), the total bytes to copy, the bytes of the settled
# blobs copied, and whether to send now.
ProgressFn = Callable[[dict[str, Any], list[dict[str, Any]], int, int, bool], None]

MAX_OPEN_PAGES = 3
FIRST_PAGE_SIZE = 500
REPORT_EVERY = 0.5
WAIT_STEP = 0.2


@dataclass
class Page:
    index: int
    sources: list[SourceObject]
    redo: bool  # open before a restart: its blobs may already be copied


@dataclass
class PageRun:
    """One open page's progress: counts of its settled blobs and its failures."""

    index: int
    redo: bool
    remaining: int
    submitted: bool = False
    stopped: bool = False
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    bytes_skipped: int = 0
    failures: list[BlobFailureEntry] = field(default_factory=list)


class BulkCopy:
    def __init__(
        self,
        ctx: RunContext,
        endpoints: Endpoints,
        manifest: Manifest,
        state: ManifestState,
        source: ContainerClient,
        previous_id: str | None,
        send: ProgressFn,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.page_size = page_size
        self.ctx = ctx
        self.spec = ctx.spec
        self.endpoints = endpoints
        self.manifest = manifest
        self.state = state
        self.source = source
        self.dest = ctx.dest_container
        self.previous_id = previous_id
        self.send = send
        self.lock = threading.Lock()
        self.runs: dict[int, PageRun] = {}
        self.error: BaseException | None = None
        self.page_slots = threading.Semaphore(MAX_OPEN_PAGES)
        self.blob_slots = threading.Semaphore(self.spec.parallelism)
        self.large = threading.Lock()  # one blob at a time moves in blocks (with its own block parallelism)
        self.pending: dict[str, tuple[PageRun, serverside.ServerCopy]] = {}
        self.scheduled = threading.Event()
        self.last_report = 0.0
        self.small: SmallBlobMover | None = None
        if self.spec.mode == BlobCopyMode.STREAM and endpoints.source is not None:
            self.small = SmallBlobMover(
                ctx,
                (endpoints.source, self.spec.source.container or ""),
                (endpoints.destination, self.spec.destination.container),
            )

    # -- the flow ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        pages: queue.Queue[Page | None] = queue.Queue(maxsize=1)  # list one page ahead of the copying
        lister = threading.Thread(target=self._list, args=(pages,), name="ferry-list", daemon=True)
        lister.start()
        monitor = None
        if self.spec.mode == BlobCopyMode.SERVER_SIDE:
            monitor = threading.Thread(target=self._monitor, name="ferry-monitor", daemon=True)
            monitor.start()
        self.report(force=True)
        try:
            with ThreadPoolExecutor(self.spec.parallelism, thread_name_prefix="ferry-copy") as pool:
                while (page := pages.get()) is not None:
                    run = PageRun(page.index, page.redo, remaining=len(page.sources))
                    with self.lock:
                        self.runs[page.index] = run
                    lost = False
                    for source in page.sources:
                        if self._lost(run):
                            lost = True
                            break
                        if not self._acquire(self.blob_slots):
                            break
                        if self.small is not None and is_small(self.spec, source):
                            moving = self.small.submit(source, destination_name(self.spec, source.name), run.redo)
                            moving.add_done_callback(functools.partial(self._small_done, run, source))
                        else:
                            pool.submit(self._copy, run, source)
                    else:
                        self._submitted(run)
                    page.sources = []  # the tasks hold what they need
                    if lost:
                        self._abandon(run)
                    if self._halted():
                        self._drain(pages)
                        break
            for _ in range(self.spec.parallelism):  # every blob in flight has settled
                self.blob_slots.acquire()
        finally:
            self.scheduled.set()
            lister.join()
            if monitor is not None:
                monitor.join()
            if self.small is not None:
                self.small.close()
        if self.error is not None:
            raise self.error
        self.ctx.check_stop()
        self.report(force=True)

    def _lost(self, run: PageRun) -> bool:
        """Whether another worker took the page over (only where several share the copy)."""
        return False

    def _abandon(self, run: PageRun) -> None:
        """Give up a page another worker took over: its blobs in flight settle, uncounted."""

    def _halted(self) -> bool:
        return self.error is not None or self.ctx.stop.is_set()

    def _acquire(self, slots: threading.Semaphore) -> bool:
        while not self._halted():
            if slots.acquire(timeout=WAIT_STEP):
                return True
        return False

    def _drain(self, pages: queue.Queue[Page | None]) -> None:
        while pages.get() is not None:
            pass

    def _fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error

    def _put(self, pages: queue.Queue[Page | None], page: Page) -> bool:
        while not self._halted():
            try:
                pages.put(page, timeout=WAIT_STEP)
                return True
            except queue.Full:
                continue
        return False

    # -- listing ---------------------------------------------------------------------------------------------

    def _list(self, pages: queue.Queue[Page | None]) -> None:
        try:
            for index in sorted(self.state.open):
                if not self._acquire(self.page_slots):
                    return
                opened = self.state.open[index]
                sources = list_again(self.spec, self.source, opened.marker, opened.last, self.page_size)
                with self.manifest.lock:
                    if len(sources) != opened.count:  # the source changed in this page's range since
                        with self.lock:
                            self.state.listed += len(sources) - opened.count
                            opened.count = len(sources)
                        self.manifest.save(self.state)
                if not self._put(pages, Page(index, sources, redo=True)):
                    return
            while not self.state.listing_done:
                if not self._acquire(self.page_slots):
                    return
                marker = self.state.next_marker
                # A short first page: copying starts after one quick listing request, whatever the source's size.
                size = min(self.page_size, FIRST_PAGE_SIZE) if self.state.pages_listed == 0 else self.page_size
                sources, following = list_page(self.spec, self.source, marker, size)
                # The SDK's listing models hold reference cycles (tens of MiB for a page of 5,000): collect
                # them now, so the peak stays one page's worth instead of growing until the collector runs.
                gc.collect()
                size = sum(s.size for s in sources)
                with self.manifest.lock:
                    with self.lock:
                        index = self.state.pages_listed
                        self.state.open[index] = OpenPage(
                            marker=marker, last=sources[-1].name if sources else None, count=len(sources), bytes=size
                        )
                        self.state.pages_listed += 1
                        self.state.listed += len(sources)
                        self.state.listed_bytes += size
                        self.state.next_marker = following
                        self.state.listing_done = following is None
                    self.manifest.save(self.state)
                self.report()
                if not self._put(pages, Page(index, sources, redo=False)):
                    return
        except BaseException as error:
            self._fail(error)
        finally:
            self._end_pages(pages)

    def _end_pages(self, pages: queue.Queue[Page | None]) -> None:
        while True:
            try:
                pages.put(None, timeout=WAIT_STEP)
                break
            except queue.Full:
                if self._halted():
                    with contextlib.suppress(queue.Empty):
                        pages.get_nowait()  # the main thread is draining or gone: make room

    # -- one blob --------------------------------------------------------------------------------------------

    def _item(self, source: SourceObject) -> CopyItem:
        name = destination_name(self.spec, source.name)
        bound = bind(source, self.source.get_blob_client(source.name))
        return CopyItem(bound, name, self.dest.get_blob_client(name))

    def _copy(self, run: PageRun, source: SourceObject) -> None:
        try:
            self.ctx.check_stop()
            item = self._item(source)
            if self.spec.mode == BlobCopyMode.STREAM:
                self._stream(run, item)
            else:
                self._schedule(run, item)
        except BaseException as error:  # each blob's outcome, or the worker's end: see _failed
            self._failed(run, source, error, written=True)
        finally:
            self.blob_slots.release()

    def _small_done(self, run: PageRun, source: SourceObject, done: Future[str | None]) -> None:
        try:
            try:
                reason = done.result()
            except AlreadyCopied:
                self.ctx.add_bytes(source.size)
                reason = None
            self._settle(run, source, skipped=reason)
        except BaseException as error:  # each blob's outcome, or the worker's end: see _failed
            self._failed(run, source, error, written=False)
        finally:
            self.blob_slots.release()

    def _failed(self, run: PageRun, source: SourceObject, error: BaseException, written: bool) -> None:
        """A blob's failure is settled and recorded; a stop or an error that ends the worker is not."""
        if isinstance(error, CopyStopped):
            with self.lock:
                run.stopped = True
        elif isinstance(error, BlobFailure):
            if error.reason == "MaxLifetimeExceeded" and written:
                self._abort_expired(self._item(source))
            self._settle(run, source, failure=error)
        elif isinstance(error, SourceChangedError | SourceUnavailableError):
            code = "SourceChanged" if isinstance(error, SourceChangedError) else "SourceUnavailable"
            self._settle(run, source, failure=BlobFailure(code, str(error)))
        elif isinstance(error, HttpResponseError) and not is_transient(error):
            self._settle(run, source, failure=BlobFailure("StorageError", describe(error)))
        else:  # transient past the retries, or unexpected: the worker runs again from the checkpoint
            self._fail(error)

    def _stream(self, run: PageRun, item: CopyItem) -> None:
        try:
            with self.large:
                reason = copy_stream(self.ctx, item)
        except AlreadyCopied:
            self.ctx.add_bytes(item.source.size)
            reason = None
        except CopyStopped:
            raise
        except BaseException:
            self._release(item)
            raise
        self._release(item)
        self._settle(run, item.source, skipped=reason)

    def _schedule(self, run: PageRun, item: CopyItem) -> None:
        copy = serverside.ServerCopy(item)
        try:
            serverside.start(self.ctx, copy, self.endpoints.source_url, self.previous_id, check=run.redo)
            if copy.finished and copy.state == PENDING:
                serverside.settle(self.ctx, copy)
        except BlobFailure:
            self._release(item)
            raise
        if copy.state == PENDING and copy.copy_id is not None:
            with self.lock:
                self.pending[item.dest_name] = (run, copy)  # settled by the monitor
            return
        self._server_done(run, copy)

    def _server_done(self, run: PageRun, copy: serverside.ServerCopy) -> None:
        self._release(copy.item)
        if copy.state == "success":
            self.ctx.add_bytes(copy.item.source.size)
        self._settle(run, copy.item.source, failure=copy.failure, skipped=copy.skipped)

    def _release(self, item: CopyItem) -> None:
        if self.ctx.stop.is_set():
            return  # a stopped worker keeps its leases: the next run settles the blob again and releases them
        try:
            if self.spec.lock_source and item.source.client is not None:
                leases.release(item.source.client, self.ctx.source_lease_id)
            if self.spec.lock_destination:
                leases.release(item.dest, self.ctx.dest_lease_id)
        except HttpResponseError as error:
            self.ctx.note(f"lease release on {item.dest_name} failed: {describe(error)}")

    def _abort_expired(self, item: CopyItem) -> None:
        props = dest_properties(item.dest)
        if props is not None and (props.metadata or {}).get(MARK_ID) == self.ctx.copy_id:
            abort_pending(item.dest, props, self.ctx.dest_lease_id if self.spec.lock_destination else None)

    # -- ServerSide monitoring -------------------------------------------------------------------------------

    def _monitor(self) -> None:
        delay = 0.5
        try:
            while True:
                with self.lock:
                    names = list(self.pending)
                if not names:
                    if self.scheduled.is_set() or self._halted():
                        return
                    time.sleep(WAIT_STEP)
                    delay = 0.5
                    continue
                if self.ctx.stop.wait(delay) or self.error is not None:
                    return
                seen = serverside.list_copies(self.dest, names)
                now = datetime.now(UTC)
                for name in names:
                    run, copy = self.pending[name]
                    serverside.advance(self.ctx, copy, seen.get(name), self.endpoints.source_url, now)
                    if copy.state != PENDING:
                        with self.lock:
                            del self.pending[name]
                        self._server_done(run, copy)
                self.report()
                delay = min(delay * 2, serverside.MAX_POLL)
        except BaseException as error:
            self._fail(error)

    # -- counting and checkpoints ----------------------------------------------------------------------------

    def _settle(
        self,
        run: PageRun,
        source: SourceObject,
        failure: BlobFailure | None = None,
        skipped: str | None = None,
    ) -> None:
        with self.lock:
            run.remaining -= 1
            if failure is not None:
                run.failed += 1
                run.failures.append(
                    BlobFailureEntry(
                        name=destination_name(self.spec, source.name), reason=failure.reason, message=failure.message
                    )
                )
            elif skipped is not None:
                run.skipped += 1
                run.bytes_skipped += source.size
            else:
                run.succeeded += 1
                run.bytes += source.size
            done = run.submitted and run.remaining == 0 and not run.stopped
        if skipped is not None:
            self.ctx.note(skipped)
        if done:
            self._close(run)
        self.report(force=failure is not None)

    def _submitted(self, run: PageRun) -> None:
        with self.lock:
            run.submitted = True
            done = run.remaining == 0 and not run.stopped
        if done:
            self._close(run)

    def _close(self, run: PageRun) -> None:
        """The page's outcome into the manifest: its failures first, then the state without the page."""
        with self.manifest.lock:
            if run.failures:
                self.manifest.write_failures(run.index, run.failures)
            with self.lock:
                state = self.state
                state.open.pop(run.index, None)
                state.succeeded += run.succeeded
                state.failed += run.failed
                state.skipped += run.skipped
                state.bytes_copied += run.bytes
                state.bytes_skipped += run.bytes_skipped
                add_first_failures(state, run.failures)
                self.runs.pop(run.index, None)
            self.manifest.save(state)
        self.page_slots.release()
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < REPORT_EVERY:
            return
        self.last_report = now
        with self.lock:
            state = self.state
            runs = [r for r in self.runs.values() if r.index in state.open]  # not counted in the state yet
            succeeded = state.succeeded + sum(r.succeeded for r in runs)
            failed = state.failed + sum(r.failed for r in runs)
            skipped = state.skipped + sum(r.skipped for r in runs)
            first = list(state.first_failures)
            for r in runs:
                first.extend(r.failures[: FIRST_FAILURES - len(first)])
            blobs: dict[str, Any] = {
                "total": state.listed,
                "pending": state.listed - succeeded - failed - skipped,
                "succeeded": succeeded,
                "failed": failed,
                "skipped": skipped,
            }
            if not state.listing_done:
                blobs.update(listing=True, listed=state.listed)
            total_bytes = state.listed_bytes - state.bytes_skipped - sum(r.bytes_skipped for r in runs)
            copied = state.bytes_copied + sum(r.bytes for r in runs)
        self.send(blobs, [f.wire() for f in first[:FIRST_FAILURES]], total_bytes, copied, force)
