"""The container copy engine for MongoDB API accounts: collections copied offline, as the service's
`MongoRUToMongoRU` copy jobs copy them.

The job, its work units, their leases and checkpoints live in the account's own `__datatransferstate` database
(transfer/mongo_state.py), as for the API for NoSQL; instances share a job through the same leases
(transfer/unit_leases.py) and report through the same Reporter.

A task's source collection is split by position in `_id` order: unit k holds the documents from position
k·n/U to (k+1)·n/U of the n it counted, U being the account's instance count. A unit reads its range page by
page (sorted by `_id`, skipping what it has checkpointed) and checkpoints the count it has written. Positions,
not `_id` bounds: MongoDB compares `_id` values only within one BSON type, so a range query would miss
documents of a collection whose ids mix types, while the `_id` order is total. Positions hold while nobody
writes to the source, which an offline copy requires.

Pages are inserted unordered; a duplicate `_id` (error 11000) is a replay when the destination holds the same
document (a page written again after a restart), and an ItemConflict otherwise, as is a document refused by a
unique index of the destination. The destination must exist with its indexes and shard key, created by the user
beforehand, as the service requires.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bson import json_util
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError

from ferry.api.common import Failure
from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.api.transfer import VerifyMode
from ferry.kinds.containercopyjob.engine import JobSpec, copy_progress, new_job_doc, new_unit, units_ready
from ferry.storage.mongo import MongoAccess, collection_exists, describe, is_transient
from ferry.transfer.item_writer import TokenBucket
from ferry.transfer.job_document import (
    InstanceOutcome,
    JobInstance,
    TransientJobError,
    fail_job,
    open_job,
    reopen_job,
)
from ferry.transfer.mongo_state import MongoStateStore
from ferry.transfer.progress import Reporter, ReportFn
from ferry.transfer.state import JobState
from ferry.transfer.unit_leases import LeaseLost, UnitLease
from ferry.transfer.verify import VERIFY_UNIT, combined, compared, counted

DUPLICATE_KEY = 11000
MONGO_PAGE_SIZE = 500  # documents per insert_many and per checkpoint: a wire-protocol batch, not one request each
PAGES_IN_FLIGHT = 2
MAX_IDS_IN_MESSAGE = 10


@dataclass
class _Task:
    source: Collection[dict[str, Any]]
    destination: Collection[dict[str, Any]]


def run_mongo_instance(
    access: MongoAccess,
    job: JobSpec,
    instance_id: str,
    report: ReportFn[ContainerCopyProgress],
    should_stop: Callable[[], bool],
    lease_seconds: float = 15.0,
    *,
    concurrency: int = PAGES_IN_FLIGHT,
    page_size: int = MONGO_PAGE_SIZE,
    previous: ContainerCopyProgress | None = None,
) -> InstanceOutcome:
    """Work on the job until it is done, fails, or `should_stop`; `concurrency` pages are written at once."""
    page_size = job.paced_page_size(page_size)
    store = MongoStateStore(access)
    rate = (previous.items_per_second, previous.estimated_seconds_remaining) if previous else (None, None)
    reporter = Reporter(report, copy_progress, store, job.job_id, rate)
    try:
        if (refused := open_job(store, new_job_doc(job), job.names(), reporter)) is not None:
            return refused
        if job.attempt > 1:
            reporter.send(reopen_job(store, job.job_id, job.attempt), force=True)
        instance = _Instance(access, store, job, instance_id, reporter, should_stop, lease_seconds, concurrency)
        return instance.run(page_size)
    except PyMongoError as error:
        if is_transient(error):
            raise TransientJobError(describe(error)) from None
        failure = Failure(reason="MongoError", message=describe(error))
        doc = fail_job(store, job.job_id, failure)
        reporter.send(doc, force=True)
        return InstanceOutcome("failed", failure)


class _Instance(JobInstance[ContainerCopyProgress]):
    def __init__(
        self,
        access: MongoAccess,
        store: MongoStateStore,
        job: JobSpec,
        instance_id: str,
        reporter: Reporter[ContainerCopyProgress],
        should_stop: Callable[[], bool],
        lease_seconds: float,
        concurrency: int,
    ) -> None:
        super().__init__(store, job.job_id, instance_id, reporter, should_stop, lease_seconds)
        self.access = access
        self.job = job
        self._tasks: list[_Task] = []
        rate = job.max_items_per_second
        self._bucket = TokenBucket(rate / max(1, job.instances)) if rate else None
        self._concurrency = concurrency

    def failed_task(self, index: int, reason: str, message: str) -> InstanceOutcome:
        return self.failed(Failure(reason=reason, message=self.job.task_label(index) + message), task=index)

    def run(self, page_size: int) -> InstanceOutcome:
        ended = self.refresh(force=True)
        if self.doc.get("state") == JobState.PAUSED:
            self.resume()
            ended = self.refresh(force=True)
        if ended is not None:
            self.reporter.send(self.doc, force=True)
            return ended
        for index, task in enumerate(self.job.tasks):
            if not collection_exists(self.access, task.source_db, task.source_container):
                return self.failed_task(index, "SourceNotFound", f"source collection {task.source_path} does not exist")
            if not collection_exists(self.access, task.dest_db, task.dest_container):
                return self.failed_task(
                    index,
                    "DestinationNotFound",
                    f"destination collection {task.dest_path} does not exist: create it beforehand, with its shard "
                    "key and the indexes it needs (unique ones included), as the service requires for MongoDB "
                    "copy jobs",
                )
            self._tasks.append(
                _Task(
                    self.access.collection(task.source_db, task.source_container),
                    self.access.collection(task.dest_db, task.dest_container),
                )
            )
        if not self.doc.get("unitsReady"):
            self._initialise()
            self.reporter.send(self.doc, force=True)
        return self._work(page_size)

    def _initialise(self) -> None:
        """Count each source and cut it into one unit per instance by position (idempotent across instances)."""
        totals: list[int] = []
        index = 0
        parts = max(1, self.job.instances)
        for task_index, task in enumerate(self._tasks):
            total = task.source.count_documents({})
            totals.append(total)
            bounds = [total * k // parts for k in range(parts + 1)]
            slices = [(a, b) for a, b in itertools.pairwise(bounds) if b > a] or [(0, 0)]
            for start, end in slices:
                self.store.create_unit(new_unit(self.job.job_id, index, task_index, start=start, end=end))
                index += 1
        self.doc = units_ready(self.store, self.job.job_id, totals)

    def _work(self, page_size: int) -> InstanceOutcome:
        while True:
            if self.should_stop():
                return InstanceOutcome("stopped")
            ended = self.refresh(force=True)
            if ended is not None:
                self.reporter.send(self.doc, force=True)
                return ended
            lease = self.next_lease()
            if isinstance(lease, InstanceOutcome):
                return lease
            try:
                if lease.doc.get("type") == VERIFY_UNIT:
                    outcome = self._verify(lease)
                else:
                    outcome = self._copy_unit(lease, page_size)
            except LeaseLost:
                continue
            except BaseException as error:
                lease.release()
                if isinstance(error, PyMongoError) and is_transient(error):
                    raise TransientJobError(describe(error)) from None
                raise
            finally:
                lease.close()
            if outcome is not None:
                return outcome

    def _copy_unit(self, lease: UnitLease, page_size: int) -> InstanceOutcome | None:
        """Copy the unit's slice from its checkpoint; None when it is done, else the instance's outcome.

        The next page is read while up to `concurrency` pages are written; pages are checkpointed in order, once
        all their documents are in the destination, so a restart writes again at most the pages in flight.
        """
        index = int(lease.doc.get("task") or 0)
        task = self._tasks[index]
        start, end = int(lease.doc["start"]), int(lease.doc["end"])
        written = lease.processed
        pages = _pages(task.source, start + written, end - start - written, page_size)
        in_flight: deque[tuple[Future[list[str]], int]] = deque()

        def settle_oldest() -> InstanceOutcome | None:
            nonlocal written
            done, count = in_flight.popleft()
            conflicts = done.result()
            if conflicts:
                for later, _ in in_flight:
                    later.result()
                in_flight.clear()
                lease.release()
                return self.failed_task(index, "ItemConflict", _conflict_message(conflicts))
            written += count
            lease.checkpoint(None, written)
            self.reporter.checkpointed(str(lease.doc["id"]), written)
            self.reporter.send(self.doc)
            return None

        def drain() -> InstanceOutcome | None:
            while in_flight:
                if (failed := settle_oldest()) is not None:
                    return failed
            return None

        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mongo-read") as reader,
            ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="mongo-write") as writers,
        ):
            pending: Future[list[dict[str, Any]]] = reader.submit(next, pages, [])
            while True:
                ended = InstanceOutcome("stopped") if self.should_stop() else self.refresh()
                if ended is not None:
                    failed = drain()
                    lease.release()
                    self.reporter.send(self.doc, force=True)
                    return failed or ended
                page = pending.result()
                if not page:
                    break  # the slice is read (or the source has fewer documents than counted: the verification says)
                lease.check()  # no page is written by an instance that may have lost the unit
                pending = reader.submit(next, pages, [])
                in_flight.append((writers.submit(self._write, task.destination, page), len(page)))
                while len(in_flight) >= self._concurrency:
                    if (failed := settle_oldest()) is not None:
                        return failed
            if (failed := drain()) is not None:
                return failed
        lease.checkpoint(None, written, done=True)
        self.reporter.checkpointed(str(lease.doc["id"]), written, True)
        self.reporter.send(self.doc)
        return None

    def _write(self, destination: Collection[dict[str, Any]], page: list[dict[str, Any]]) -> list[str]:
        """Insert the page; the ids that conflict with other documents of the destination."""
        if self._bucket is not None:
            for _ in page:
                self._bucket.take()
        try:
            destination.insert_many(page, ordered=False)
            return []
        except BulkWriteError as error:
            errors = error.details.get("writeErrors") or []
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
            by_id = {_key(d["_id"]): d for d in page}
            duplicates = [page[int(e["index"])] for e in errors]
            found = {_key(d["_id"]): d for d in destination.find({"_id": {"$in": [d["_id"] for d in duplicates]}})}
            # A replay finds its own document; anything else (another document, or none: a unique index) conflicts.
            return [key for key in (_key(d["_id"]) for d in duplicates) if found.get(key) != by_id[key]]

    def _verify(self, lease: UnitLease) -> InstanceOutcome | None:
        mode = VerifyMode(self.doc.get("verify") or self.job.verify)
        parts = []
        for index, task in enumerate(self._tasks):
            if mode == VerifyMode.FULL:
                label = f"task {index}: " if len(self._tasks) > 1 else ""
                parts.append(compared(_as_items(task.source), _as_items(task.destination), [], label))
            else:
                with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mongo-count") as pool:
                    # Both sides at once: a count reads the whole collection on some servers.
                    source, destination = pool.map(lambda c: c.count_documents({}), (task.source, task.destination))
                parts.append(counted(source, destination))
        return self.verified(lease, combined(parts))


def _pages(source: Collection[dict[str, Any]], skip: int, limit: int, page_size: int) -> Iterator[list[dict[str, Any]]]:
    """The documents at positions skip .. skip+limit of the `_id` order, a page at a time from one cursor."""
    if limit <= 0:
        return
    cursor = source.find({}).sort("_id", ASCENDING).skip(skip).limit(limit).batch_size(page_size)
    page: list[dict[str, Any]] = []
    with cursor:
        for doc in cursor:
            page.append(doc)
            if len(page) >= page_size:
                yield page
                page = []
    if page:
        yield page


def _key(value: Any) -> str:
    """An `_id` as text that tells BSON types apart (1 and "1" are two ids)."""
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


def _as_items(collection: Collection[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Documents in the shape verify.compared() reads: `id` is the canonical `_id`, the content its canonical
    JSON (BSON types kept)."""
    for doc in collection.find({}).batch_size(1000):
        text = json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS, sort_keys=True)
        yield {"id": _key(doc["_id"]), "content": hashlib.sha256(text.encode()).hexdigest()}


def _conflict_message(ids: list[str]) -> str:
    listed = ", ".join(sorted(ids)[:MAX_IDS_IN_MESSAGE])
    more = len(ids) - min(len(ids), MAX_IDS_IN_MESSAGE)
    shown = f"{listed} (and {more} more)" if more > 0 else listed
    return (
        f"documents with _id {shown} conflict in the destination: another document with the same _id, or one a "
        "unique index of the destination refused, is already there"
    )
