"""The restore engine as a library, independent of Kubernetes: one restore instance working on one restore.

A restore is a job in the account's `__datatransferstate` like a copy job, and its instances share it the same
way, through leased work units with checkpoints:
- the `init` unit (one holder at a time) checks the rules against the backup and the live account, records
  the plan and the new incarnation's instance id in the job document, creates the database and containers
  with their settings at the restore time, marks them in the backup as this restore's, and creates the
  item units; a holder that dies part-way is followed by one that resumes from the recorded plan;
- one item unit per restored container and bucket (bucket = a hash of the item's _rid, as many buckets as
  the account has instances): the unit's items as at the restore time, in _rid order, written from the
  checkpointed offset on.
"""

from __future__ import annotations

import itertools
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceExistsError

from ferry.api.common import Failure
from ferry.api.inaccountrestore import RestoreProgress
from ferry.api.transfer import VerifyMode
from ferry.backup.format import BackupIndex
from ferry.backup.restoreplan import (
    CaptureBehind,
    ContainerRestore,
    LiveCatalog,
    RestorePlan,
    RestoreRefused,
    RestoreRequest,
    deletion_note,
)
from ferry.backup.restoreplan import plan_restore as make_plan
from ferry.backup.store import BackupStore
from ferry.backup.timeline import materialize
from ferry.storage import blobs
from ferry.storage.cosmos import (
    CosmosAccess,
    count_items,
    describe,
    is_transient,
    partition_key_paths,
    status_code,
)
from ferry.timefmt import when
from ferry.transfer.item_writer import Conflict, ItemWriter
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
from ferry.transfer.progress import Reporter, ReportFn, Totals, transfer_record, verification_of
from ferry.transfer.state import JobState, StateStore, now_iso
from ferry.transfer.unit_leases import LeaseLost, UnitLease, acquire
from ferry.transfer.verify import VERIFY_UNIT, all_items, combined, compared, counted, verification_unit

PAGE_SIZE = 100
# Pages written at once, checkpointed in order: enough that the writer's threads never wait at a page's end
# (restore/ceiling 0.83 with two, 0.95 and more with four); a killed instance rewrites at most these pages.
PAGES_IN_FLIGHT = 4
INIT = "init"
ITEMS = "items"


@dataclass(frozen=True)
class RestoreJob:
    job_id: str  # the InAccountRestore's uid
    name: str  # namespace/name
    request: RestoreRequest
    instances: int
    write_region: str | None
    verify: VerifyMode = VerifyMode.COUNT


def restore_progress(job: dict[str, Any], totals: Totals) -> RestoreProgress:
    return RestoreProgress(
        restore_timestamp=job.get("restoreTimestamp"),
        instance_id=job.get("instanceId"),
        note=job.get("note"),
        total_count=totals.total,
        restored_item_count=totals.processed,
        percent=totals.percent,
        items_per_second=totals.items_per_second,
        last_update_time=datetime.now(UTC).replace(microsecond=0),
        verification=verification_of(job),
        transfer=transfer_record(job),
    )


def run_restore_instance(
    access: CosmosAccess,
    backup: BackupStore,
    job: RestoreJob,
    instance_id: str,
    report: ReportFn[RestoreProgress],
    should_stop: Callable[[], bool],
    *,
    lease_seconds: float = 15.0,
    concurrency: int = 8,
    page_size: int = PAGE_SIZE,
    one_unit: bool = False,
    previous: RestoreProgress | None = None,
) -> InstanceOutcome:
    """Work on the restore until it is done, stopped or there is nothing left for this instance; with
    `one_unit`, return ("progress") after each finished unit, so that one instance takes turns among restores."""
    store = StateStore(access)
    rate = ((previous.items_per_second if previous else None), None)
    reporter = Reporter(report, restore_progress, store, job.job_id, rate)
    try:
        request = job.request
        names = {
            "spec.database": request.database,
            "spec.container": request.container,
            "spec.target.database": request.target_database,
            "spec.target.container": request.target_container,
        }
        if (refused := open_job(store, _new_job_doc(job), names, reporter)) is not None:
            return refused
        store.create_unit(_unit(job.job_id, INIT, -1))
        worker = _Restorer(access, backup, store, job, instance_id, reporter, should_stop, lease_seconds)
        return worker.run(concurrency, page_size, one_unit)
    except (AzureError, OSError) as error:
        if is_transient(error) or blobs.is_transient(error):
            raise TransientJobError(describe(error)) from None
        if isinstance(error, CosmosHttpResponseError) and status_code(error) == 404:
            store.forget()  # __datatransferstate was deleted meanwhile: recreated next time
            raise TransientJobError(describe(error)) from None
        if isinstance(error, CosmosHttpResponseError):
            failure = Failure(reason="RestoreError", message=describe(error))
        else:
            failure = Failure(reason="BackupUnreachable", message=f"the backup location: {blobs.describe(error)}")
        reporter.send(fail_job(store, job.job_id, failure), force=True)
        return InstanceOutcome("failed", failure)


def _new_job_doc(job: RestoreJob) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "jobId": job.job_id,
        "kind": "restore",
        "name": job.name,
        "request": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(job.request).items()},
        "state": JobState.PENDING.value,
        "writeRegion": job.write_region,
        "instances": job.instances,
        "totalCount": None,
        "processedCount": 0,
        "createdTime": now_iso(),
        "startTime": None,
        "lastUpdateTime": now_iso(),
        "completionTime": None,
        "failure": None,
        "unitsReady": False,
        "plan": None,
        "restoreTimestamp": None,
        "instanceId": None,
        "note": None,
        "verify": VerifyMode(job.verify).value,
    }


def _unit(job_id: str, kind: str, index: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"{job_id}-{kind}" if kind == INIT else f"{job_id}-{index}",
        "jobId": job_id,
        "type": kind,
        "index": index,
        "owner": None,
        "leaseExpiresAt": 0.0,
        "continuation": None,
        "processedCount": 0,
        "done": False,
        **fields,
    }


def bucket_of(item_rid: str, buckets: int) -> int:
    """A bucket that every instance computes alike (Python's hash() differs between processes)."""
    return zlib.crc32(item_rid.encode()) % buckets


def plan_to_doc(plan: RestorePlan) -> dict[str, Any]:
    doc = asdict(plan)
    doc["timestamp"] = plan.timestamp.isoformat()
    return doc


def plan_from_doc(doc: dict[str, Any]) -> RestorePlan:
    return RestorePlan(
        timestamp=datetime.fromisoformat(doc["timestamp"]),
        database=doc["database"],
        create_database=doc["create_database"],
        database_settings=doc.get("database_settings") or {},
        source_rid=doc.get("source_rid") or "",
        containers=[ContainerRestore(**c) for c in doc.get("containers") or []],
    )


def restored_items(
    backup: BackupStore, index: BackupIndex, source_rid: str, t: datetime, bucket: int, buckets: int
) -> Iterator[dict[str, Any]]:
    """A unit's items as at the restore time, in _rid order, streamed from the backup (a sorted merge of the
    base and segments): memory does not grow with the container, and every reading gives the same order."""
    for record in materialize(index, backup.records, [source_rid], t):
        if bucket_of(str(record["r"]), buckets) == bucket:
            yield record["d"]


class _Restorer(JobInstance[RestoreProgress]):
    def __init__(
        self,
        access: CosmosAccess,
        backup: BackupStore,
        store: StateStore,
        job: RestoreJob,
        instance_id: str,
        reporter: Reporter[RestoreProgress],
        should_stop: Callable[[], bool],
        lease_seconds: float,
    ) -> None:
        super().__init__(store, job.job_id, instance_id, reporter, should_stop, lease_seconds)
        self.access = access
        self.backup = backup
        self.job = job
        self._index: BackupIndex | None = None

    def _backup_index(self) -> BackupIndex:
        if self._index is None:
            index, _ = self.backup.read_index()
            if index is None:
                raise RestoreRefused("BackupNotReady", "the backup location has no backup of this account yet")
            self._index = index
        return self._index

    def run(self, concurrency: int, page_size: int, one_unit: bool) -> InstanceOutcome:
        while True:
            if self.should_stop():
                return InstanceOutcome("stopped")
            ended = self.read_job()
            if ended is not None:
                self.reporter.send(self.doc, force=True)
                return ended
            lease, availability = acquire(self.store, self.job.job_id, self.instance_id, self.lease_seconds)
            if lease is None:
                if availability.all_done:
                    self.doc = complete_job(self.store, self.job.job_id, self.reporter.processed())
                    self.reporter.send(self.doc, force=True)
                    return outcome_of(self.doc) or InstanceOutcome("completed")
                return InstanceOutcome("idle", retry_after=availability.retry_after)
            try:
                if lease.doc.get("type") == INIT:
                    outcome = self._initialise(lease)
                elif lease.doc.get("type") == VERIFY_UNIT:
                    outcome = self._verify(lease)
                else:
                    self.doc = mark_running(self.store, self.job.job_id)
                    outcome = self._restore_unit(lease, concurrency, page_size)
            except LeaseLost:
                continue  # another instance resumed this unit; look for other work
            except RestoreRefused as refused:
                lease.release()
                return self.failed(refused.failure)
            except BaseException as error:
                lease.release()
                if isinstance(error, AzureError | OSError) and is_transient(error):
                    raise TransientJobError(describe(error)) from None
                raise
            finally:
                lease.close()
            if outcome is not None:
                return outcome
            if one_unit:
                return InstanceOutcome("progress")

    # The init unit.

    def _initialise(self, lease: UnitLease) -> InstanceOutcome | None:
        plan = plan_from_doc(self.doc["plan"]) if self.doc.get("plan") else self._plan(lease)
        instance = str(self.doc["instanceId"])
        lease.check()
        created = self._create(plan)
        for rid in created:
            self.backup.mark_restore(
                rid, {"rid": rid, "instanceId": instance, "restore": self.job.name, "time": now_iso()}
            )
        buckets = max(1, self.job.instances)
        total = 0
        index = self._backup_index()
        number = 0
        for container in plan.containers:
            counts = [0] * buckets
            for record in materialize(index, self.backup.records, [container.source_rid], plan.timestamp):
                counts[bucket_of(str(record["r"]), buckets)] += 1
            for bucket in range(buckets):
                lease.check()
                self.store.create_unit(
                    _unit(
                        self.job.job_id,
                        ITEMS,
                        number,
                        database=plan.database,
                        container=container.name,
                        sourceRid=container.source_rid,
                        bucket=bucket,
                        buckets=buckets,
                        count=counts[bucket],
                    )
                )
                number += 1
            total += sum(counts)
        self.store.create_unit(verification_unit(self.job.job_id))

        def ready(doc: dict[str, Any]) -> bool:
            if doc.get("unitsReady"):
                return False
            doc.update(unitsReady=True, totalCount=total, state=JobState.RUNNING.value)
            doc["startTime"] = doc.get("startTime") or now_iso()
            return True

        self.doc = self.store.update_job(self.job.job_id, ready)
        lease.checkpoint(None, 0, done=True)
        self.reporter.send(self.doc, force=True)
        return None

    def _plan(self, lease: UnitLease) -> RestorePlan:
        """Check the rules and record the plan and the new incarnation's id (once: later holders reuse them)."""
        request = self.job.request
        try:
            plan = make_plan(self._backup_index(), request, self._live(request.into_database), datetime.now(UTC))
        except CaptureBehind as behind:
            self._index = None  # read the index again next time
            raise TransientJobError(str(behind)) from None
        lease.check()
        recorded = plan_to_doc(plan)
        index = self._backup_index()
        precision = index.deletion_precision_seconds  # not the cursor's blob, which the next capture replaces
        note = deletion_note(precision, plan.timestamp)

        def record(doc: dict[str, Any]) -> bool:
            if doc.get("plan"):
                return False
            doc.update(
                plan=recorded,
                restoreTimestamp=when(plan.timestamp),
                instanceId=uuid.uuid4().hex,
                note=note,
                state=JobState.RUNNING.value,
                startTime=doc.get("startTime") or now_iso(),
            )
            return True

        self.doc = self.store.update_job(self.job.job_id, record)
        self.reporter.send(self.doc, force=True)  # the time chosen, as soon as it is known
        return plan_from_doc(self.doc["plan"])

    def _live(self, database: str) -> LiveCatalog:
        client = self.access.client()
        databases = frozenset(str(d["id"]) for d in client.list_databases())
        containers: frozenset[tuple[str, str]] = frozenset()
        if database in databases:
            names = client.get_database_client(database).list_containers()
            containers = frozenset((database, str(c["id"])) for c in names)
        return LiveCatalog(databases=databases, containers=containers)

    def _create(self, plan: RestorePlan) -> list[str]:
        """The database and containers, as they were at the restore time; the _rids of what exists afterwards
        (created now, or by an earlier holder of the init unit)."""
        client = self.access.client()
        made: list[str] = []
        if plan.create_database:
            throughput = plan.database_settings.get("throughput")
            try:
                database = client.create_database(plan.database, offer_throughput=throughput)
            except CosmosResourceExistsError:
                database = client.get_database_client(plan.database)
            made.append(str(database.read()["_rid"]))
        database = client.get_database_client(plan.database)
        for container in plan.containers:
            settings = container.settings
            options: dict[str, Any] = {
                k: v
                for k, v in {
                    "indexing_policy": settings.get("indexingPolicy"),
                    "default_ttl": settings.get("defaultTtl"),
                    "unique_key_policy": settings.get("uniqueKeyPolicy"),
                    "conflict_resolution_policy": settings.get("conflictResolutionPolicy"),
                    "analytical_storage_ttl": settings.get("analyticalStorageTtl"),
                    "computed_properties": settings.get("computedProperties"),
                    "offer_throughput": settings.get("throughput")
                    if settings.get("throughputMode") == "Dedicated"
                    else None,
                }.items()
                if v is not None
            }
            key = settings.get("partitionKey") or {"paths": ["/id"], "kind": "Hash"}
            partition_key = PartitionKey(
                path=key["paths"] if len(key["paths"]) > 1 else key["paths"][0],
                kind=key.get("kind", "Hash"),
                version=key.get("version", 2),
            )
            try:
                proxy = database.create_container(container.name, partition_key=partition_key, **options)
            except CosmosResourceExistsError:
                proxy = database.get_container_client(container.name)
            made.append(str(proxy.read()["_rid"]))
        return made

    def _verify(self, lease: UnitLease) -> InstanceOutcome | None:
        """Compare each restored container with the backup at the restore time, once every item unit is done."""
        plan = plan_from_doc(self.doc["plan"])
        index = self._backup_index()
        mode = VerifyMode(self.doc.get("verify") or self.job.verify)
        label = len(plan.containers) > 1
        # Count: the item units' counts, taken from the backup when they were created, not a second reading of it.
        planned: dict[str, int] = {}
        for unit in self.store.job_units(self.job.job_id):
            if unit.get("type") == ITEMS:
                planned[str(unit["container"])] = planned.get(str(unit["container"]), 0) + int(unit["count"])
        parts = []
        for container in plan.containers:
            destination = self.access.container(plan.database, container.name)
            if mode == VerifyMode.FULL:
                records = materialize(index, self.backup.records, [container.source_rid], plan.timestamp)
                paths = partition_key_paths(container.settings) or ["/id"]
                prefix = f"{container.name}/" if label else ""
                parts.append(compared((r["d"] for r in records), all_items(destination), paths, prefix))
            else:
                parts.append(counted(planned.get(container.name, 0), count_items(destination)))
            lease.check()
        return self.verified(lease, combined(parts))

    # Item units.

    def _restore_unit(self, lease: UnitLease, concurrency: int, page_size: int) -> InstanceOutcome | None:
        unit = lease.doc
        plan = plan_from_doc(self.doc["plan"])
        buckets, bucket = int(unit["buckets"]), int(unit["bucket"])
        mine = restored_items(
            self.backup, self._backup_index(), str(unit["sourceRid"]), plan.timestamp, bucket, buckets
        )
        container = next(c for c in plan.containers if c.name == unit["container"])
        destination = self.access.container(plan.database, container.name)
        offset = int(lease.continuation or 0)
        for _ in itertools.islice(mine, offset):
            pass  # written before the last checkpoint
        in_flight: deque[tuple[Future[list[Conflict]], int, bool]] = deque()

        def settle_oldest() -> InstanceOutcome | None:
            written, end, last = in_flight.popleft()
            conflicts = written.result()
            if conflicts:
                for later, _, _ in in_flight:
                    later.result()
                in_flight.clear()
                lease.release()
                ids = ", ".join(sorted(c.item_id for c in conflicts)[:10])
                return self.failed(
                    Failure(
                        reason="ItemConflict",
                        message=f"items {ids} are already in the restored container {plan.database}/"
                        f"{container.name} with other content: something wrote into it while it was restored",
                    )
                )
            lease.checkpoint(None if last else str(end), end, done=last)
            self.reporter.checkpointed(str(unit["id"]), end)
            self.reporter.send(self.doc)
            return None

        paths = partition_key_paths(container.settings) or ["/id"]
        with (
            ItemWriter(destination, paths, concurrency, None) as writer,
            ThreadPoolExecutor(max_workers=PAGES_IN_FLIGHT, thread_name_prefix="restore-page") as pages,
        ):
            page = list(itertools.islice(mine, page_size))
            if not page:
                lease.checkpoint(None, offset, done=True)
                return None
            while page:
                if self.should_stop():
                    while in_flight:
                        if (failed := settle_oldest()) is not None:
                            return failed
                    lease.release()
                    self.reporter.send(self.doc, force=True)
                    return InstanceOutcome("stopped")
                lease.check()  # no page is written by an instance that may have lost the unit
                following = list(itertools.islice(mine, page_size))  # read ahead: is this page the last?
                end = offset + len(page)
                in_flight.append((pages.submit(writer.write_page, page), end, not following))
                offset, page = end, following
                while len(in_flight) >= PAGES_IN_FLIGHT:
                    if (failed := settle_oldest()) is not None:
                        return failed
            while in_flight:
                if (failed := settle_oldest()) is not None:
                    return failed
        return None
