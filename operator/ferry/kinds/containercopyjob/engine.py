"""The container copy engine as a library, independent of Kubernetes.

run_instance() is one copy instance working on one job: it makes sure the job is recorded in
`__datatransferstate`, splits it into work units (one per source feed range) on first start,
then leases units one at a time and copies their items page by page, checkpointing after each
page. Several instances (threads, processes, pods) share a job through the leases; a killed
instance's lease expires and another resumes from its last checkpoint.

The source is read with a query restricted to each feed range, not the change feed: both give
every item with a continuation token to checkpoint, but the query's token resumes exactly on the
service and on the local cosmosdb-server alike, whose change feed stops after its first page.
Offline copies read a quiescent source, so a query sees the same items the change feed would.

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

from ferry.api.common import Failure
from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.storage.cosmos import (
    CosmosAccess,
    container_properties,
    count_items,
    describe,
    feed_ranges,
    is_transient,
    partition_key_paths,
    query_page,
    status_code,
    throttled_requests,
    unique_key_paths,
)
from ferry.transfer.item_writer import Conflict, ItemWriter, TokenBucket
from ferry.transfer.job_document import (
    InstanceOutcome,
    JobInstance,
    TransientJobError,
    complete_job,
    fail_job,
    mark_running,
    open_job,
    outcome_of,
)
from ferry.transfer.progress import Reporter, ReportFn, Totals, transfer_record
from ferry.transfer.state import JobState, StateStore, now_iso
from ferry.transfer.unit_leases import LeaseLost, UnitLease, acquire

__all__ = ["InstanceOutcome", "JobSpec", "TransientJobError", "run_instance"]

PAGE_SIZE = 100
PAGES_IN_FLIGHT = 2
JOB_CHECK_INTERVAL = 2.0  # how often the job document is re-read for a state set elsewhere
MAX_IDS_IN_MESSAGE = 10
SOURCE_QUERY = "SELECT * FROM c"


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
) -> InstanceOutcome:
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
        return _Instance(access, store, job, instance_id, reporter, should_stop, lease_seconds).run(
            concurrency, page_size
        )
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
    return ContainerCopyProgress(
        processed_count=totals.processed,
        total_count=totals.total,
        percent=totals.percent,
        items_per_second=totals.items_per_second,
        estimated_seconds_remaining=totals.estimated_seconds_remaining,
        throttled_requests=throttled_requests(),
        last_update_time=datetime.now(UTC).replace(microsecond=0),
        transfer=transfer_record(job),
    )


def _new_job_doc(job: JobSpec) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "jobId": job.job_id,
        "name": job.name,
        "source": {"database": job.source_db, "container": job.source_container},
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
    ) -> None:
        super().__init__(access, store, job.job_id, instance_id, reporter, should_stop, lease_seconds)
        self.job = job
        self._checked = 0.0

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
        source = container_properties(self.access, self.job.source_db, self.job.source_container)
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
        if not self.doc.get("unitsReady"):
            self._initialise()
            self.reporter.send(self.doc, force=True)  # the total, as soon as it is known
        rate = self.job.max_items_per_second
        bucket = TokenBucket(rate / max(1, self.job.instances)) if rate else None
        dest = self.access.container(self.job.dest_db, self.job.dest_container)
        with ItemWriter(dest, partition_key_paths(destination), concurrency, bucket) as writer:
            return self._work(writer, unique_key_paths(destination), page_size)

    def _initialise(self) -> None:
        """Count the source and create one work unit per feed range (idempotent across instances)."""
        source = self.access.container(self.job.source_db, self.job.source_container)
        total = count_items(source)
        for index, feed_range in enumerate(feed_ranges(source)):
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
                }
            )

        def change(doc: dict[str, Any]) -> bool:
            if doc.get("unitsReady"):
                return False
            doc.update(unitsReady=True, totalCount=total)
            if doc.get("state") == JobState.PENDING:
                doc.update(state=JobState.RUNNING.value, startTime=now_iso())
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
            ended = self._refresh(force=True)
            if ended is not None:
                self.reporter.send(self.doc, force=True)
                return ended
            lease, availability = acquire(self.store, self.job.job_id, self.instance_id, self.lease_seconds)
            if lease is None:
                if availability.all_done:
                    return self._complete()
                return InstanceOutcome("idle", retry_after=availability.retry_after)
            self._mark_running()
            try:
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

    def _copy_unit(
        self, lease: UnitLease, writer: ItemWriter, unique_keys: list[list[str]], page_size: int
    ) -> InstanceOutcome | None:
        """Copy the unit from its checkpoint; None when it is done, else the instance's outcome.

        Reads run one page ahead and up to PAGES_IN_FLIGHT pages are written at once, so writers
        never wait for a read, a page's slowest items or a checkpoint. Pages are checkpointed in
        order and only once all their items are in the destination: a replay after a crash
        rewrites at most the pages that were in flight, which the writer recognises as replays.
        """
        source = self.access.container(self.job.source_db, self.job.source_container)

        def read(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            return query_page(source, SOURCE_QUERY, lease.feed_range, token, page_size)

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

    def _complete(self) -> InstanceOutcome:
        self.doc = complete_job(self.store, self.job.job_id, self.reporter.processed())
        self.reporter.send(self.doc, force=True)
        return outcome_of(self.doc) or InstanceOutcome("completed")
