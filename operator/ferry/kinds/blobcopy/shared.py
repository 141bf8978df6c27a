"""A multi-blob copy spread over several worker pods (spec.workers): the pages of the manifest handed out by leases.

Worker 0, the coordinator, lists the source: each page it lists is added to the manifest's open pages (with the
marker that lists it again), at most LIST_AHEAD_PER_WORKER per worker ahead of the copying. Every worker, the
coordinator too, claims an open page (claims), lists it again from its marker, copies its blobs as a single
worker does (bulk) and closes it: its failures file, then the page removed from the state and its counts added,
in one conditional read-modify-write that only the first to close the page wins, so a page done twice (its first
worker lost its claim) is counted once. The copy is done when the listing is and no page is open; every worker
then ends. Only the coordinator reports into the BlobCopy's status, from the manifest: one writer of the counts.
"""

from __future__ import annotations

import functools
import queue
import threading

from azure.storage.blob import ContainerClient

from ferry.kinds.blobcopy.bulk import WAIT_STEP, BulkCopy, Page, PageRun, ProgressFn
from ferry.kinds.blobcopy.claims import Claims
from ferry.kinds.blobcopy.items import Endpoints, RunContext, list_again, list_page
from ferry.kinds.blobcopy.manifest import Manifest, ManifestState, OpenPage, add_first_failures

SHARED_PAGE_SIZE = 500  # small pages spread a copy of a few thousand blobs too, and a lost page costs little
LIST_AHEAD_PER_WORKER = 2
POLL = 1.0  # how often a worker without a page looks for one
CLAIMED_PER_WORKER = 2  # pages a worker holds at once: one copying, the next one listed behind it


class SharedCopy(BulkCopy):
    def __init__(
        self,
        ctx: RunContext,
        endpoints: Endpoints,
        manifest: Manifest,
        state: ManifestState,
        source: ContainerClient,
        previous_id: str | None,
        send: ProgressFn,
        index: int,
        page_size: int,
    ) -> None:
        super().__init__(ctx, endpoints, manifest, state, source, previous_id, send, page_size)
        self.index = index
        self.page_slots = threading.Semaphore(CLAIMED_PER_WORKER)
        self.claims = Claims(manifest.container, manifest.prefix)
        self.all_done = False

    @property
    def coordinator(self) -> bool:
        return self.index == 0

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.claims.close()

    def report(self, force: bool = False) -> None:
        if self.coordinator:
            super().report(force)

    # -- handing out pages -----------------------------------------------------------------------------------

    def _list(self, pages: queue.Queue[Page | None]) -> None:
        lister = None
        try:
            if self.coordinator:
                lister = threading.Thread(target=self._list_ahead, name="ferry-list-ahead", daemon=True)
                lister.start()
            while not self._halted():
                if not self._acquire(self.page_slots):
                    return
                page = self._claim_next()
                if page is None:
                    self.page_slots.release()
                    if self.all_done:
                        return
                    self.ctx.stop.wait(POLL)
                    continue
                if not self._put(pages, page):
                    return
        except BaseException as error:
            self._fail(error)
        finally:
            if lister is not None:
                lister.join()
            self._end_pages(pages)

    def _fresh(self) -> ManifestState | None:
        state = self.manifest.read()
        if state is not None:
            with self.lock:
                self.state = state
            if state.started_at is not None:
                self.ctx.start_time = min(self.ctx.start_time, state.started_at)
            self.page_size = state.page_size or self.page_size
        return state

    def _claim_next(self) -> Page | None:
        """Claim an open page no one copies and list it again; None when there is none now."""
        state = self._fresh()
        if state is None:
            return None  # the coordinator has not started the manifest yet
        if state.listing_done and not state.open:
            self.all_done = True
            return None
        self.report()
        order = sorted(state.open)
        turn = self.index % len(order) if order else 0
        for index in order[turn:] + order[:turn]:  # the workers start at different pages
            if self.claims.held(index) is not None:
                continue
            claim = self.claims.claim(index)
            if claim is None:
                continue
            opened = (self.manifest.read() or state).open.get(index)
            if opened is None:  # closed by another since we read the state
                self.claims.release(claim)
                continue
            sources = list_again(self.spec, self.source, opened.marker, opened.last, self.page_size)
            if len(sources) != opened.count:  # the source changed in this page's range since it was listed
                self._recount(index, len(sources))
            return Page(index, sources, redo=claim.redone)
        return None

    def _recount(self, index: int, count: int) -> None:
        def change(state: ManifestState) -> bool:
            opened = state.open.get(index)
            if opened is None or opened.count == count:
                return False
            state.listed += count - opened.count
            opened.count = count
            return True

        self.manifest.update(change)

    def _list_ahead(self) -> None:
        """The coordinator's listing: pages added to the manifest, a bounded number ahead of the copying."""
        ahead = LIST_AHEAD_PER_WORKER * max(1, self.spec.workers)
        try:
            while not self._halted():
                state = self.manifest.read()
                if state is None or state.listing_done:
                    return
                if len(state.open) >= ahead:
                    self.ctx.stop.wait(WAIT_STEP)
                    continue
                marker = state.next_marker
                sources, following = list_page(self.spec, self.source, marker, self.page_size)
                page = OpenPage(
                    marker=marker,
                    last=sources[-1].name if sources else None,
                    count=len(sources),
                    bytes=sum(s.size for s in sources),
                )
                del sources  # the workers list the page again when they claim it
                written = self.manifest.update(functools.partial(_add_page, page, following))
                if written is not None:
                    with self.lock:
                        self.state = written
                self.report()
        except BaseException as error:
            self._fail(error)

    # -- closing pages ---------------------------------------------------------------------------------------

    def _lost(self, run: PageRun) -> bool:
        claim = self.claims.held(run.index)
        return claim is None or claim.lost.is_set()

    def _abandon(self, run: PageRun) -> None:
        with self.lock:
            run.stopped = True
            self.runs.pop(run.index, None)
        claim = self.claims.held(run.index)
        if claim is not None:
            self.claims.release(claim)
        self.page_slots.release()

    def _close(self, run: PageRun) -> None:
        claim = self.claims.held(run.index)
        # Still ours right now: no other worker can be copying the page, nor writing its failures.
        if claim is None or not self.claims.renew(claim):
            self._abandon(run)
            return
        if run.failures:
            self.manifest.write_failures(run.index, run.failures)

        def close(state: ManifestState) -> bool:
            if run.index not in state.open:
                return False  # closed by another worker, who counted it
            state.open.pop(run.index)
            state.succeeded += run.succeeded
            state.failed += run.failed
            state.skipped += run.skipped
            state.bytes_copied += run.bytes
            state.bytes_skipped += run.bytes_skipped
            add_first_failures(state, run.failures)
            return True

        written = self.manifest.update(close)
        with self.lock:
            if written is not None:
                self.state = written
            self.runs.pop(run.index, None)
        self.claims.release(claim)
        self.page_slots.release()
        self.report(force=True)


def _add_page(page: OpenPage, following: str | None, state: ManifestState) -> bool:
    """The next listed page into the state, unless it is there already (a coordinator before us got this far)."""
    if state.listing_done or state.next_marker != page.marker:
        return False
    state.open[state.pages_listed] = page
    state.pages_listed += 1
    state.listed += page.count
    state.listed_bytes += page.bytes
    state.next_marker = following
    state.listing_done = following is None
    return True
