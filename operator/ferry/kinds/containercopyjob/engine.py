"""The container copy engine as a library, independent of Kubernetes.

run_instance() is one copy instance working on one job: it makes sure the job is recorded in
`__datatransferstate`, splits it into work units (one per source feed range) on first start,
then leases units one at a time and copies their items page by page, checkpointing after each
page. Several instances (threads, processes, pods) share a job through the leases; a killed
instance's lease expires and another resumes from its last checkpoint.

The source is read as the service's container copy reads it, through its change feed: each unit
reads its feed range's latest-version feed from the beginning, page by page, and checkpoints the
feed's continuation; the unit is done when the feed has nothing more. (cosmosdb-server's own change
feed is a stub: the local stack and the tests put the stand-in of dev/ferry_dev/changefeed.py in
front of it.)

Online copies (mode Online) also take, before copying anything, each feed range's position in the
all-versions-and-deletes feed (the probe: a source without that feed fails the job at once with
ChangeFeedModeUnsupported). A unit whose copy is done then streams: it applies the creates,
replaces and deletes made since that position, page by page, checkpointing the feed's continuation
and its lag as found when reading a page (pendingChanges from the range's latest LSN, secondsBehind
from the time of the oldest change not yet applied). An
instance visits the streaming units in turn, least recently visited first. Once the job's cutover
is asked for, a unit that has applied everything is done, and the job completes when all are.

Errors that outlast the bounded retries (5xx, throttling, connection failures) raise
TransientJobError after the lease is released: run the instance again, it resumes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos.exceptions import CosmosHttpResponseError

from ferry.api.common import Failure
from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.api.transfer import VerifyMode
from ferry.storage.cosmos import (
    ALL_VERSIONS_AND_DELETES,
    CosmosAccess,
    change_feed_now,
    change_feed_page,
    container_properties,
    count_items,
    describe,
    feed_ranges,
    is_transient,
    partition_key_paths,
    partition_key_value,
    status_code,
    strip_system,
    unique_key_paths,
)
from ferry.transfer.item_writer import Conflict, ItemWriter, SourceChange, TokenBucket
from ferry.transfer.job_document import (
    InstanceOutcome,
    JobInstance,
    TransientJobError,
    complete_job,
    fail_job,
    mark_running,
    open_job,
    outcome_of,
    reopen_job,
)
from ferry.transfer.progress import Reporter, ReportFn, Totals, transfer_record, verification_of
from ferry.transfer.state import JobState, StateStore, epoch, now_iso
from ferry.transfer.unit_leases import LeaseLost, UnitLease, acquire
from ferry.transfer.verify import VERIFY_UNIT, all_items, compared, counted, verification_unit

__all__ = ["InstanceOutcome", "JobSpec", "TransientJobError", "run_instance"]

PAGE_SIZE = 100
PAGES_IN_FLIGHT = 2
JOB_CHECK_INTERVAL = 2.0  # how often the job document is re-read for a state set elsewhere
MAX_IDS_IN_MESSAGE = 10
STREAM_POLL_SECONDS = 1.0  # an online copy with nothing new on any unit looks again after this
ONLINE = "Online"


@dataclass
class JobSpec:
    job_id: str
    name: str
    source_db: str
    source_container: str
    dest_db: str
    dest_container: str
    max_items_per_second: int | None
    instances: int
    write_region: str | None
    mode: str = "Offline"
    verify: VerifyMode = VerifyMode.COUNT
    source_account: str | None = None  # another DatabaseAccount to read from (its name), or the job's own
    attempt: int = 1  # the run of the job: a re-run that resumes reopens the record an earlier run ended


def run_instance(
    access: CosmosAccess,
    job: JobSpec,
    instance_id: str,
    report: ReportFn[ContainerCopyProgress],
    should_stop: Callable[[], bool],
    lease_seconds: float = 15.0,
    *,
    concurrency: int = 8,
    page_size: int = PAGE_SIZE,
    previous: ContainerCopyProgress | None = None,
    cutover: Callable[[], bool] = lambda: False,
    source: CosmosAccess | None = None,
) -> InstanceOutcome:
    """Work on the job until it is done, fails, or `should_stop`; `cutover` says the user asked an
    online copy to finish (spec.cutover). `access` is the job's account (the destination, which also holds
    the job's state); `source` the account read from, when it is another."""
    if job.max_items_per_second:
        # Pages of about two seconds of work: a rate-limited instance still stops within seconds when asked.
        share = job.max_items_per_second / max(1, job.instances)
        page_size = max(5, min(page_size, int(share * 2)))
    store = StateStore(access)
    try:
        reporter = _reporter(report, store, job.job_id, previous)
        names = {
            "spec.source.database": job.source_db,
            "spec.source.container": job.source_container,
            "spec.destination.database": job.dest_db,
            "spec.destination.container": job.dest_container,
        }
        if (refused := open_job(store, _new_job_doc(job), names, reporter)) is not None:
            return refused
        if job.attempt > 1:
            reporter.send(reopen_job(store, job.job_id, job.attempt), force=True)  # the status shows the new run
        instance = _Instance(access, store, job, instance_id, reporter, should_stop, lease_seconds, cutover, source)
        return instance.run(concurrency, page_size)
    except (AzureError, OSError) as error:
        if is_transient(error):
            raise TransientJobError(describe(error)) from None
        if status_code(error) == 404:
            # Most likely __datatransferstate was deleted while the job ran: recreate it next time.
            store.forget()
            raise TransientJobError(describe(error)) from None
        failure = Failure(reason="CosmosError", message=describe(error))
        doc = fail_job(store, job.job_id, failure)
        _reporter(report, store, job.job_id, previous).send(doc, force=True)
        return InstanceOutcome("failed", failure)


def _reporter(
    report: ReportFn[ContainerCopyProgress], store: StateStore, job_id: str, previous: ContainerCopyProgress | None
) -> Reporter[ContainerCopyProgress]:
    rate = (previous.items_per_second, previous.estimated_seconds_remaining) if previous else (None, None)
    return Reporter(report, copy_progress, store, job_id, rate)


def copy_progress(job: dict[str, Any], totals: Totals) -> ContainerCopyProgress:
    online = job.get("mode") == ONLINE
    return ContainerCopyProgress(
        verification=verification_of(job),
        pending_changes=totals.pending_changes if online else None,
        seconds_behind=totals.seconds_behind if online else None,
        processed_count=totals.processed,
        total_count=totals.total,
        percent=totals.percent,
        items_per_second=totals.items_per_second,
        estimated_seconds_remaining=totals.estimated_seconds_remaining,
        throttled_requests=totals.throttled,
        last_update_time=datetime.now(UTC).replace(microsecond=0),
        transfer=transfer_record(job),
    )


def _new_job_doc(job: JobSpec) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "jobId": job.job_id,
        "name": job.name,
        "source": {
            "database": job.source_db,
            "container": job.source_container,
            **({"account": job.source_account} if job.source_account else {}),
        },
        "destination": {"database": job.dest_db, "container": job.dest_container},
        "state": JobState.PENDING.value,
        "writeRegion": job.write_region,
        "instances": job.instances,
        "maxItemsPerSecond": job.max_items_per_second,
        "totalCount": None,
        "processedCount": 0,
        "createdTime": now_iso(),
        "startTime": None,
        "lastUpdateTime": now_iso(),
        "completionTime": None,
        "failure": None,
        "unitsReady": False,
        "mode": job.mode,
        "cutover": False,
        "verify": VerifyMode(job.verify).value,
        "attempt": job.attempt,
    }


def _conflict_failure(conflicts: list[Conflict], unique_keys: list[list[str]]) -> Failure:
    ids = ", ".join(sorted({c.item_id for c in conflicts})[:MAX_IDS_IN_MESSAGE])
    more = len(conflicts) - min(len(conflicts), MAX_IDS_IN_MESSAGE)
    listed = f"{ids} (and {more} more)" if more > 0 else ids
    kinds = []
    if any(not c.unique_key for c in conflicts):
        kinds.append("another item with the same id and partition key is already in the destination")
    if any(c.unique_key for c in conflicts):
        keys = "; ".join("+".join(paths) for paths in unique_keys) or "a unique key"
        kinds.append(f"the destination's unique key ({keys}) refused them")
    return Failure(reason="ItemConflict", message=f"items {listed} conflict in the destination: {' and '.join(kinds)}")


class _Instance(JobInstance[ContainerCopyProgress]):
    def __init__(
        self,
        access: CosmosAccess,
        store: StateStore,
        job: JobSpec,
        instance_id: str,
        reporter: Reporter[ContainerCopyProgress],
        should_stop: Callable[[], bool],
        lease_seconds: float,
        cutover: Callable[[], bool],
        source: CosmosAccess | None,
    ) -> None:
        super().__init__(access, store, job.job_id, instance_id, reporter, should_stop, lease_seconds)
        self.job = job
        self.cutover = cutover
        self.source = source or access  # the account the source container is read from
        self._checked = 0.0
        self._quiet_visits = 0  # streaming visits in a row that found nothing new
        self._source_paths: list[str] = []
        self._units = 0

    def _refresh(self, force: bool = False) -> InstanceOutcome | None:
        """Re-read the job (at most every JOB_CHECK_INTERVAL): another party may have ended it."""
        now = time.monotonic()
        if force or now - self._checked >= JOB_CHECK_INTERVAL:
            self._checked = now
            return self.read_job()
        return outcome_of(self.doc)

    def run(self, concurrency: int, page_size: int) -> InstanceOutcome:
        ended = self._refresh(force=True)
        if self.doc.get("state") == JobState.PAUSED:
            self._resume()
            ended = self._refresh(force=True)
        if ended is not None:
            self.reporter.send(self.doc, force=True)
            return ended
        source = container_properties(self.source, self.job.source_db, self.job.source_container)
        if source is None:
            return self.failed(
                Failure(
                    reason="SourceNotFound",
                    message=f"source container {self.job.source_db}/{self.job.source_container} does not exist",
                )
            )
        destination = container_properties(self.access, self.job.dest_db, self.job.dest_container)
        if destination is None:
            return self.failed(
                Failure(
                    reason="DestinationNotFound",
                    message=(
                        f"destination container {self.job.dest_db}/{self.job.dest_container} does not exist "
                        "(Owner resource does not exist): create the destination container with the settings "
                        "you want (partition key, unique keys, throughput) before the copy job"
                    ),
                )
            )
        self._source_paths = partition_key_paths(source)
        if not self.doc.get("unitsReady"):
            if (refused := self._initialise()) is not None:
                return refused
            self.reporter.send(self.doc, force=True)  # the total, as soon as it is known
        rate = self.job.max_items_per_second
        bucket = TokenBucket(rate / max(1, self.job.instances)) if rate else None
        dest = self.access.container(self.job.dest_db, self.job.dest_container)
        newer = self._source_paths if self.job.mode == ONLINE else None
        with ItemWriter(dest, partition_key_paths(destination), concurrency, bucket, newer) as writer:
            return self._work(writer, unique_key_paths(destination), page_size)

    def _initialise(self) -> InstanceOutcome | None:
        """Count the source and create one work unit per feed range (idempotent across instances).

        An online copy first takes each range's position in the all-versions-and-deletes feed: the
        changes after it are applied once the range is copied, so none made during the copy is lost.
        """
        source = self.source.container(self.job.source_db, self.job.source_container)
        ranges = feed_ranges(source)
        streams: list[str | None] = [None] * len(ranges)
        if self.job.mode == ONLINE:
            try:
                streams = [change_feed_now(source, r, ALL_VERSIONS_AND_DELETES) for r in ranges]
            except CosmosHttpResponseError as error:
                if status_code(error) != 400:
                    raise
                return self.failed(
                    Failure(
                        reason="ChangeFeedModeUnsupported",
                        message="an online copy reads the source's all-versions-and-deletes change feed, which "
                        f"the account does not offer ({describe(error)}): enable that change feed mode on the "
                        "account (it needs continuous backup), or copy offline (spec.mode: Offline)",
                    )
                )
        total = count_items(source)
        for index, feed_range in enumerate(ranges):
            self.store.create_unit(
                {
                    "id": f"{self.job.job_id}-{index}",
                    "jobId": self.job.job_id,
                    "index": index,
                    "feedRange": feed_range,
                    "owner": None,
                    "leaseExpiresAt": 0.0,
                    "continuation": None,
                    "processedCount": 0,
                    "done": False,
                    "stream": streams[index],
                    "streaming": False,
                }
            )
        self.store.create_unit(verification_unit(self.job.job_id))

        def change(doc: dict[str, Any]) -> bool:
            if doc.get("unitsReady"):
                return False
            doc.update(unitsReady=True, totalCount=total)
            if doc.get("state") == JobState.PENDING:
                doc.update(state=JobState.RUNNING.value, startTime=now_iso())
            return True

        self.doc = self.store.update_job(self.job.job_id, change)
        return None

    def _note_cutover(self) -> None:
        """Record the user's cutover in the job, where every instance sees it."""
        if self.job.mode != ONLINE or self.doc.get("cutover") or not self.cutover():
            return

        def change(doc: dict[str, Any]) -> bool:
            if doc.get("cutover"):
                return False
            doc["cutover"] = True
            return True

        self.doc = self.store.update_job(self.job.job_id, change)

    def _mark_running(self) -> None:
        self.doc = mark_running(self.store, self.job.job_id)

    def _resume(self) -> None:
        """The job is active again after a pause: it runs from its checkpoints."""

        def change(doc: dict[str, Any]) -> bool:
            if doc.get("state") != JobState.PAUSED:
                return False
            doc.update(state=JobState.RUNNING.value, startTime=doc.get("startTime") or now_iso())
            return True

        self.doc = self.store.update_job(self.job.job_id, change)

    def _work(self, writer: ItemWriter, unique_keys: list[list[str]], page_size: int) -> InstanceOutcome:
        while True:
            if self.should_stop():
                return InstanceOutcome("stopped")  # between units: the holder of a unit reported its stop
            # Between units the job is read again; streaming units come round often, so every few seconds then.
            ended = self._refresh(force=self._quiet_visits == 0)
            if ended is not None:
                self.reporter.send(self.doc, force=True)
                return ended
            self._note_cutover()
            lease, availability = acquire(self.store, self.job.job_id, self.instance_id, self.lease_seconds)
            if lease is None:
                if availability.all_done:
                    return self._complete()
                return InstanceOutcome("idle", retry_after=availability.retry_after)
            if self.doc.get("state") == JobState.PENDING:
                self._mark_running()  # the job was just read: a running job needs no request
            try:
                if lease.doc.get("type") == VERIFY_UNIT:
                    outcome = self._verify(lease)
                elif lease.doc.get("streaming"):
                    outcome = self._stream_unit(lease, writer, unique_keys, page_size)
                else:
                    outcome = self._copy_unit(lease, writer, unique_keys, page_size)
            except LeaseLost:
                continue  # another instance resumed this unit; look for other work
            except BaseException as error:
                lease.release()
                if isinstance(error, AzureError | OSError) and is_transient(error):
                    raise TransientJobError(describe(error)) from None
                raise
            finally:
                lease.close()
            if outcome is not None:
                return outcome
            if self._quiet_visits and self._quiet_visits >= self._unit_count():
                # Every streaming unit is caught up: look again in a while, not in a busy loop.
                self._quiet_visits = 0
                deadline = time.monotonic() + STREAM_POLL_SECONDS
                while time.monotonic() < deadline and not self.should_stop():
                    time.sleep(0.1)

    def _copy_unit(
        self, lease: UnitLease, writer: ItemWriter, unique_keys: list[list[str]], page_size: int
    ) -> InstanceOutcome | None:
        """Copy the unit from its checkpoint; None when it is done, else the instance's outcome.

        Reads run one page ahead and up to PAGES_IN_FLIGHT pages are written at once, so writers
        never wait for a read, a page's slowest items or a checkpoint. Pages are checkpointed in
        order and only once all their items are in the destination: a replay after a crash
        rewrites at most the pages that were in flight, which the writer recognises as replays.
        """
        source = self.source.container(self.job.source_db, self.job.source_container)

        def read(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            items, after = change_feed_page(source, lease.feed_range, token, page_size)
            return items, after if items else None  # an empty page: the unit's feed is read to its end

        processed = lease.processed
        in_flight: deque[tuple[Future[list[Conflict]], str | None, int]] = deque()

        def settle_oldest() -> InstanceOutcome | None:
            nonlocal processed
            written, continuation, count = in_flight.popleft()
            conflicts = written.result()
            if conflicts:
                for later, _, _ in in_flight:
                    later.result()
                in_flight.clear()
                lease.release()
                return self.failed(_conflict_failure(conflicts, unique_keys))
            processed += count
            if continuation is None and self.job.mode == ONLINE:
                # Copied: the unit now streams the changes made since the copy began.
                lease.checkpoint(None, processed, streaming=True, visitedAt=0.0)
            else:
                lease.checkpoint(continuation, processed, done=continuation is None)
            self.reporter.checkpointed(str(lease.doc["id"]), processed)
            self.reporter.send(self.doc)
            return None

        def drain() -> InstanceOutcome | None:
            while in_flight:
                if (failed := settle_oldest()) is not None:
                    return failed
            return None

        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-read") as reader,
            ThreadPoolExecutor(max_workers=PAGES_IN_FLIGHT, thread_name_prefix="copy-page") as pages,
        ):
            pending: Future[tuple[list[dict[str, Any]], str | None]] | None = reader.submit(read, lease.continuation)
            while pending is not None:
                if self.should_stop():
                    failed = drain()
                    if failed is not None:
                        return failed
                    lease.release()
                    self.reporter.send(self.doc, force=True)
                    return InstanceOutcome("stopped")
                ended = self._refresh()
                if ended is not None:
                    drain()
                    lease.release()
                    self.reporter.send(self.doc, force=True)
                    return ended
                items, continuation = pending.result()
                lease.check()  # no page is written by an instance that may have lost the unit
                pending = reader.submit(read, continuation) if continuation is not None else None
                in_flight.append((pages.submit(writer.write_page, items), continuation, len(items)))
                while len(in_flight) >= PAGES_IN_FLIGHT:
                    if (failed := settle_oldest()) is not None:
                        return failed
            return drain()

    def _unit_count(self) -> int:
        if not self._units:
            self._units = len([u for u in self.store.job_units(self.job.job_id) if not u.get("final")])
        return self._units

    def _verify(self, lease: UnitLease) -> InstanceOutcome | None:
        """Compare the destination with the source once every unit is done (after the cutover, when online)."""
        source = self.source.container(self.job.source_db, self.job.source_container)
        destination = self.access.container(self.job.dest_db, self.job.dest_container)
        mode = VerifyMode(self.doc.get("verify") or self.job.verify)
        if mode == VerifyMode.FULL:
            result = compared(all_items(source), all_items(destination), self._source_paths)
        else:
            result = counted(count_items(source), count_items(destination))
        return self.verified(lease, result)

    def _stream_unit(
        self, lease: UnitLease, writer: ItemWriter, unique_keys: list[list[str]], page_size: int
    ) -> InstanceOutcome | None:
        """Apply the unit's source changes until none is left; None when this visit is over.

        A page's changes are applied after the previous page's: per item only its last change in the
        page counts, so the destination follows the source's order. The unit is given back after the
        visit (other units take their turn); after the cutover, a unit with nothing left is done.
        """
        source = self.source.container(self.job.source_db, self.job.source_container)
        token = lease.doc.get("stream")
        applied = int(lease.doc.get("appliedChanges") or 0)
        while True:
            if self.should_stop():
                lease.release()
                self.reporter.send(self.doc, force=True)
                return InstanceOutcome("stopped")
            ended = self._refresh()
            if ended is not None:
                lease.release()
                self.reporter.send(self.doc, force=True)
                return ended
            self._note_cutover()
            cutover = bool(self.doc.get("cutover"))
            headers: dict[str, str] = {}
            docs, after = change_feed_page(
                source, lease.feed_range, str(token), page_size, mode=ALL_VERSIONS_AND_DELETES, headers=headers
            )
            lease.check()
            if not docs:
                lease.checkpoint(
                    None,
                    lease.processed,
                    done=cutover,
                    release=True,  # other units take their turn
                    stream=token,
                    pendingChanges=0,
                    secondsBehind=0,
                    visitedAt=epoch(),
                    appliedChanges=applied,
                )
                self.reporter.lagged(str(lease.doc["id"]), 0, 0.0)
                self.reporter.send(self.doc)
                self._quiet_visits += 1
                return None
            self._quiet_visits = 0
            # The lag as found: the changes not applied when read, and how long the oldest has waited.
            first = docs[0].get("metadata") or {}
            latest = int(headers.get("lsn") or 0)
            pending = max(len(docs), latest - int(first.get("lsn") or 0) + 1) if latest else len(docs)
            behind = max(0.0, time.time() - float(first.get("crts") or time.time()))
            self.reporter.lagged(str(lease.doc["id"]), pending, behind)
            self.reporter.send(self.doc)
            changes = _latest_per_item([_source_change(d, self._source_paths) for d in docs])
            conflicts = writer.apply_changes(changes, self._source_paths)
            if conflicts:
                lease.release()
                return self.failed(_conflict_failure(conflicts, unique_keys))
            applied += len(docs)
            token = after
            lease.checkpoint(
                None,
                lease.processed,
                stream=token,
                pendingChanges=pending,
                secondsBehind=round(behind, 1),
                appliedChanges=applied,
            )

    def _complete(self) -> InstanceOutcome:
        self.doc = complete_job(self.store, self.job.job_id, self.reporter.processed())
        self.reporter.send(self.doc, force=True)
        return outcome_of(self.doc) or InstanceOutcome("completed")


def _source_change(doc: dict[str, Any], source_paths: list[str]) -> SourceChange:
    """A change of the all-versions-and-deletes feed: the new version, or the deleted item's id and key."""
    metadata = doc.get("metadata") or {}
    if metadata.get("operationType") != "delete":
        current = strip_system(doc["current"])
        return SourceChange(str(current["id"]), partition_key_value(current, source_paths), current)
    previous = doc.get("previous")
    if isinstance(previous, dict) and "id" in previous:
        return SourceChange(str(previous["id"]), partition_key_value(previous, source_paths), None)
    key = metadata.get("partitionKey")
    if isinstance(key, dict):  # by path, as some service versions give it
        key = [key.get(path.strip("/")) for path in source_paths]
    if isinstance(key, list) and len(key) == 1:
        key = key[0]
    return SourceChange(str(metadata.get("id")), key, None)


def _latest_per_item(changes: list[SourceChange]) -> list[SourceChange]:
    """Each item's last change of the page (in feed order), so that the page's items can be written at once."""
    latest: dict[tuple[str, str], SourceChange] = {}
    for change in changes:
        latest[(change.item_id, repr(change.source_key))] = change
    return list(latest.values())
