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
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from ferry.api.common import Failure
from ferry.api.containercopyjob import ContainerCopyProgress, TaskPhase, TaskProgress
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
    fail_job,
    open_job,
    reopen_job,
)
from ferry.transfer.progress import GroupCount, Reporter, ReportFn, Totals, transfer_record, verification_of
from ferry.transfer.state import JobState, JobStore, StateStore, epoch, now_iso
from ferry.transfer.unit_leases import LeaseLost, UnitLease
from ferry.transfer.verify import VERIFY_UNIT, all_items, combined, compared, counted, verification_unit

__all__ = ["InstanceOutcome", "JobSpec", "TransientJobError", "run_instance"]

PAGE_SIZE = 100
PAGES_IN_FLIGHT = 2
WRITERS_OPEN = 2  # tasks whose writers an instance keeps open at once
MAX_IDS_IN_MESSAGE = 10
STREAM_POLL_SECONDS = 1.0  # an online copy with nothing new on any unit looks again after this
ONLINE = "Online"


@dataclass(frozen=True)
class CopyTask:
    """One source → destination pair of a job."""

    source_db: str
    source_container: str
    dest_db: str
    dest_container: str

    @property
    def source_path(self) -> str:
        return f"{self.source_db}/{self.source_container}"

    @property
    def dest_path(self) -> str:
        return f"{self.dest_db}/{self.dest_container}"


@dataclass
class JobSpec:
    job_id: str
    name: str
    tasks: list[CopyTask]
    max_items_per_second: int | None
    instances: int
    write_region: str | None
    mode: str = "Offline"
    verify: VerifyMode = VerifyMode.COUNT
    source_account: str | None = None  # another DatabaseAccount to read from (its name), or the job's own
    attempt: int = 1  # the run of the job: a re-run that resumes reopens the record an earlier run ended
    listed: bool = False  # the spec lists its pairs under spec.tasks (field names in messages say so)

    def __post_init__(self) -> None:
        # Given as plain mappings when the spec travels as JSON (a test's instance in another process).
        self.tasks = [t if isinstance(t, CopyTask) else CopyTask(**t) for t in self.tasks]

    def field(self, index: int, side: str, name: str) -> str:
        """The spec field a task's name came from, for messages."""
        return f"spec.tasks[{index}].{side}.{name}" if self.listed else f"spec.{side}.{name}"

    def names(self) -> dict[str, str]:
        """Every database and container name of the tasks, by the spec field it came from."""
        return {
            self.field(i, side, name): value
            for i, task in enumerate(self.tasks)
            for side, name, value in (
                ("source", "database", task.source_db),
                ("source", "container", task.source_container),
                ("destination", "database", task.dest_db),
                ("destination", "container", task.dest_container),
            )
        }

    def paced_page_size(self, page_size: int) -> int:
        """Pages of about two seconds of a rate-limited instance's work, so that it stops within seconds when asked."""
        if not self.max_items_per_second:
            return page_size
        share = self.max_items_per_second / max(1, self.instances)
        return max(5, min(page_size, int(share * 2)))

    def task_label(self, index: int) -> str:
        """How a message names the task (nothing for a job of one pair)."""
        if len(self.tasks) == 1 and not self.listed:
            return ""
        task = self.tasks[index]
        return f"task {index} ({task.source_path} → {task.dest_path}): "


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
    page_size = job.paced_page_size(page_size)
    store = StateStore(access)
    try:
        reporter = _reporter(report, store, job.job_id, previous)
        if (refused := open_job(store, new_job_doc(job), job.names(), reporter)) is not None:
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
        tasks=task_progress(job, totals.groups or {}),
    )


def _place(where: dict[str, Any]) -> str:
    account = f"{where['account']}:" if where.get("account") else ""
    return f"{account}{where.get('database')}/{where.get('container')}"


def task_progress(job: dict[str, Any], groups: dict[int, GroupCount]) -> list[TaskProgress] | None:
    """Each task's counts and phase, from the job's record and its units (grouped by task)."""
    tasks = job.get("tasks")
    if not isinstance(tasks, list):
        return None  # a record written before jobs had tasks
    state, failed_task = job.get("state"), job.get("failedTask")
    shown = []
    for index, task in enumerate(tasks):
        group = groups.get(index, GroupCount())
        total = task.get("totalCount")
        if (group.units and group.done == group.units) or state == JobState.SUCCEEDED:
            phase = TaskPhase.SUCCEEDED
        elif state == JobState.FAILED:
            phase = TaskPhase.FAILED if failed_task in (None, index) else TaskPhase.CANCELLED
        elif state in (JobState.CANCELLED, JobState.PAUSED):
            phase = TaskPhase.CANCELLED if state == JobState.CANCELLED else TaskPhase.PAUSED
        elif group.processed or group.done:
            phase = TaskPhase.RUNNING
        else:
            phase = TaskPhase.PENDING
        shown.append(
            TaskProgress(
                index=index,
                source=_place(task.get("source") or {}),
                destination=_place(task.get("destination") or {}),
                phase=phase,
                total_count=total,
                processed_count=group.processed,
                percent=None if total is None else 100 if not total else min(100, group.processed * 100 // total),
            )
        )
    return shown


def new_job_doc(job: JobSpec) -> dict[str, Any]:
    account = {"account": job.source_account} if job.source_account else {}
    tasks = [
        {
            "source": {"database": t.source_db, "container": t.source_container, **account},
            "destination": {"database": t.dest_db, "container": t.dest_container},
            "totalCount": None,
        }
        for t in job.tasks
    ]
    return {
        "id": job.job_id,
        "jobId": job.job_id,
        "name": job.name,
        # The first pair, as `az cosmosdb dts copy list` shows a job; all of them under tasks.
        "source": tasks[0]["source"],
        "destination": tasks[0]["destination"],
        "tasks": tasks,
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


def new_unit(job_id: str, index: int, task: int, **fields: Any) -> dict[str, Any]:
    """A work unit of task `task`, not yet leased, nothing copied."""
    return {
        "id": f"{job_id}-{index}",
        "jobId": job_id,
        "index": index,
        "task": task,
        "owner": None,
        "leaseExpiresAt": 0.0,
        "continuation": None,
        "processedCount": 0,
        "done": False,
        **fields,
    }


def units_ready(store: JobStore, job_id: str, totals: list[int]) -> dict[str, Any]:
    """Every unit and the verification exist: record each task's total and the job's, and that it runs. The last
    step of a job's start, so that a start interrupted before it is made again by the next instance."""
    store.create_unit(verification_unit(job_id))

    def change(doc: dict[str, Any]) -> bool:
        if doc.get("unitsReady"):
            return False
        doc.update(unitsReady=True, totalCount=sum(totals))
        for task, total in zip(doc.get("tasks") or [], totals, strict=False):
            task["totalCount"] = total
        if doc.get("state") == JobState.PENDING:
            doc.update(state=JobState.RUNNING.value, startTime=now_iso())
        return True

    return store.update_job(job_id, change)


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


@dataclass
class _TaskIO:
    """What an instance uses of one task: its containers, key paths and (once it writes) its writer."""

    source: ContainerProxy
    source_paths: list[str]
    destination: ContainerProxy
    dest_paths: list[str]
    unique_keys: list[list[str]]
    writer: ItemWriter | None = None


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
        super().__init__(store, job.job_id, instance_id, reporter, should_stop, lease_seconds)
        self.access = access
        self.job = job
        self.cutover = cutover
        self.source = source or access  # the account the source containers are read from
        self._quiet_visits = 0  # streaming visits in a row that found nothing new
        self._tasks: list[_TaskIO] = []
        self._writing: list[int] = []  # tasks with an open writer, least recently used first
        self._concurrency = 8
        self._bucket: TokenBucket | None = None
        self._units = 0

    def failed_task(self, index: int, reason: str, message: str) -> InstanceOutcome:
        """The job fails because of one task: the message names it, the record says which."""
        return self.failed(Failure(reason=reason, message=self.job.task_label(index) + message), task=index)

    def run(self, concurrency: int, page_size: int) -> InstanceOutcome:
        ended = self.refresh(force=True)
        if self.doc.get("state") == JobState.PAUSED:
            self.resume()
            ended = self.refresh(force=True)
        if ended is not None:
            self.reporter.send(self.doc, force=True)
            return ended
        for index, task in enumerate(self.job.tasks):
            source = container_properties(self.source, task.source_db, task.source_container)
            if source is None:
                return self.failed_task(index, "SourceNotFound", f"source container {task.source_path} does not exist")
            destination = container_properties(self.access, task.dest_db, task.dest_container)
            if destination is None:
                return self.failed_task(
                    index,
                    "DestinationNotFound",
                    f"destination container {task.dest_path} does not exist (Owner resource does not exist): "
                    "create the destination container with the settings you want (partition key, unique keys, "
                    "throughput) before the copy job",
                )
            self._tasks.append(
                _TaskIO(
                    source=self.source.container(task.source_db, task.source_container),
                    source_paths=partition_key_paths(source),
                    destination=self.access.container(task.dest_db, task.dest_container),
                    dest_paths=partition_key_paths(destination),
                    unique_keys=unique_key_paths(destination),
                )
            )
        if not self.doc.get("unitsReady"):
            if (refused := self._initialise()) is not None:
                return refused
            self.reporter.send(self.doc, force=True)  # the total, as soon as it is known
        rate = self.job.max_items_per_second
        self._bucket = TokenBucket(rate / max(1, self.job.instances)) if rate else None
        self._concurrency = concurrency
        try:
            return self._work(page_size)
        finally:
            for index in self._writing:
                self._close_writer(index)

    def _writer(self, index: int) -> ItemWriter:
        """The task's writer, opened on first use; a few stay open, so that a job of many tasks holds the threads of
        a few writers, not of one per task."""
        task = self._tasks[index]
        if index in self._writing:
            self._writing.remove(index)
        elif len(self._writing) >= WRITERS_OPEN:
            self._close_writer(self._writing.pop(0))
        self._writing.append(index)
        if task.writer is None:
            newer = task.source_paths if self.job.mode == ONLINE else None
            task.writer = ItemWriter(task.destination, task.dest_paths, self._concurrency, self._bucket, newer)
        return task.writer

    def _close_writer(self, index: int) -> None:
        task = self._tasks[index]
        if task.writer is not None:
            task.writer.__exit__(None, None, None)
            task.writer = None

    def _initialise(self) -> InstanceOutcome | None:
        """Count each task's source and create one work unit per feed range of it (idempotent across instances).

        An online copy first takes each range's position in the all-versions-and-deletes feed: the
        changes after it are applied once the range is copied, so none made during the copy is lost.
        """
        totals: list[int] = []
        index = 0
        for task_index, task in enumerate(self._tasks):
            ranges = feed_ranges(task.source)
            streams: list[str | None] = [None] * len(ranges)
            if self.job.mode == ONLINE:
                try:
                    streams = [change_feed_now(task.source, r, ALL_VERSIONS_AND_DELETES) for r in ranges]
                except CosmosHttpResponseError as error:
                    if status_code(error) != 400:
                        raise
                    return self.failed_task(
                        task_index,
                        "ChangeFeedModeUnsupported",
                        "an online copy reads the source's all-versions-and-deletes change feed, which "
                        f"the account does not offer ({describe(error)}): enable that change feed mode on the "
                        "account (it needs continuous backup), or copy offline (spec.mode: Offline)",
                    )
            totals.append(count_items(task.source))
            for unit_range, stream in zip(ranges, streams, strict=True):
                unit = new_unit(
                    self.job.job_id, index, task_index, feedRange=unit_range, stream=stream, streaming=False
                )
                self.store.create_unit(unit)
                index += 1
        self.doc = units_ready(self.store, self.job.job_id, totals)
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

    def _work(self, page_size: int) -> InstanceOutcome:
        while True:
            if self.should_stop():
                return InstanceOutcome("stopped")  # between units: the holder of a unit reported its stop
            # Between units the job is read again; streaming units come round often, so every few seconds then.
            ended = self.refresh(force=self._quiet_visits == 0)
            if ended is not None:
                self.reporter.send(self.doc, force=True)
                return ended
            self._note_cutover()
            lease = self.next_lease()
            if isinstance(lease, InstanceOutcome):
                return lease
            try:
                if lease.doc.get("type") == VERIFY_UNIT:
                    outcome = self._verify(lease)
                elif lease.doc.get("streaming"):
                    outcome = self._stream_unit(lease, int(lease.doc.get("task") or 0), page_size)
                else:
                    outcome = self._copy_unit(lease, int(lease.doc.get("task") or 0), page_size)
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

    def _copy_unit(self, lease: UnitLease, index: int, page_size: int) -> InstanceOutcome | None:
        """Copy the unit from its checkpoint; None when it is done, else the instance's outcome.

        Reads run one page ahead and up to PAGES_IN_FLIGHT pages are written at once, so writers
        never wait for a read, a page's slowest items or a checkpoint. Pages are checkpointed in
        order and only once all their items are in the destination: a replay after a crash
        rewrites at most the pages that were in flight, which the writer recognises as replays.
        """
        task = self._tasks[index]
        source, writer = task.source, self._writer(index)

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
                return self._conflicted(index, conflicts)
            processed += count
            if continuation is None and self.job.mode == ONLINE:
                # Copied: the unit now streams the changes made since the copy began.
                lease.checkpoint(None, processed, streaming=True, visitedAt=0.0)
            else:
                lease.checkpoint(continuation, processed, done=continuation is None)
            done = continuation is None and self.job.mode != ONLINE
            self.reporter.checkpointed(str(lease.doc["id"]), processed, done)
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
                ended = self.refresh()
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
        """Compare each destination with its source once every unit is done (after the cutover, when online)."""
        mode = VerifyMode(self.doc.get("verify") or self.job.verify)
        parts = []
        for index, task in enumerate(self._tasks):
            if mode == VerifyMode.FULL:
                label = f"task {index}: " if len(self._tasks) > 1 else ""
                parts.append(compared(all_items(task.source), all_items(task.destination), task.source_paths, label))
            else:
                parts.append(counted(count_items(task.source), count_items(task.destination)))
        return self.verified(lease, combined(parts))

    def _stream_unit(self, lease: UnitLease, index: int, page_size: int) -> InstanceOutcome | None:
        """Apply the unit's source changes until none is left; None when this visit is over.

        A page's changes are applied after the previous page's: per item only its last change in the
        page counts, so the destination follows the source's order. The unit is given back after the
        visit (other units take their turn); after the cutover, a unit with nothing left is done.
        """
        task = self._tasks[index]
        source, writer = task.source, self._writer(index)
        token = lease.doc.get("stream")
        applied = int(lease.doc.get("appliedChanges") or 0)
        while True:
            if self.should_stop():
                lease.release()
                self.reporter.send(self.doc, force=True)
                return InstanceOutcome("stopped")
            ended = self.refresh()
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
            changes = _latest_per_item([_source_change(d, task.source_paths) for d in docs])
            conflicts = writer.apply_changes(changes, task.source_paths)
            if conflicts:
                lease.release()
                return self._conflicted(index, conflicts)
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

    def _conflicted(self, index: int, conflicts: list[Conflict]) -> InstanceOutcome:
        failure = _conflict_failure(conflicts, self._tasks[index].unique_keys)
        return self.failed_task(index, failure.reason, failure.message)


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
