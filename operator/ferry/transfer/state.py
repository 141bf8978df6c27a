"""Container copy job state and history in the account's `__datatransferstate` database.

The database is created on first use without shared throughput, so that it can be created on
serverless accounts too (the service refuses shared-throughput databases there); its containers
are created without a throughput setting either (provisioned accounts give them their default).
Ferry never deletes it: it is the account's job history, as the service's own copy jobs keep it.

Containers, both partitioned by /jobId so that a job's documents share one logical partition:
- `jobs`: one document per job (id = the ContainerCopyJob's uid);
- `workunits`: one document per job and source feed range: lease owner and expiry, checkpoint.

Every change is a read followed by replace_item with the read etag (IfNotModified): concurrent
writers never lose each other's updates, and a lease has exactly one holder.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceExistsError

from ferry.api.transfer import TransferState
from ferry.retry import policy
from ferry.storage.cosmos import CosmosAccess, strip_system
from ferry.timefmt import when

if TYPE_CHECKING:
    from ferry.storage.mongo import MongoAccess

DATABASE = "__datatransferstate"
JOBS = "jobs"
WORKUNITS = "workunits"
PARTITION_KEY_PATH = "/jobId"


# A job document's states are the ones the status shows in `transfer.state`.
JobState = TransferState


# Three tries at once: a 409 of "if not exists" means another instance created the thing meanwhile.
ENSURE_RETRIES = policy(3, lambda error: isinstance(error, CosmosResourceExistsError))

TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class StateConflict(Exception):
    """Someone else changed the document since it was read (HTTP 412)."""


def now_iso() -> str:
    return when(datetime.now(UTC), timespec="milliseconds")


def is_precondition_failed(error: CosmosHttpResponseError) -> bool:
    return int(error.status_code or 0) == 412


class JobStore(Protocol):
    """An account's `__datatransferstate`: job documents and their work units, each change conditional on the
    document's `_etag` as read (StateStore for the API for NoSQL, MongoStateStore for MongoDB)."""

    def ensure(self) -> None: ...
    def forget(self) -> None: ...
    def read_job(self, job_id: str) -> dict[str, Any] | None: ...
    def create_job(self, doc: dict[str, Any]) -> dict[str, Any]: ...
    def update_job(self, job_id: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]: ...
    def all_jobs(self) -> list[dict[str, Any]]: ...
    def job_units(self, job_id: str) -> list[dict[str, Any]]: ...
    def create_unit(self, doc: dict[str, Any]) -> None: ...
    def replace_unit(self, doc: dict[str, Any], etag: str) -> dict[str, Any]: ...
    def processed_by_job(self) -> dict[str, int]: ...


def store_of(access: CosmosAccess | MongoAccess) -> JobStore:
    """The job store of an account of either API."""
    if isinstance(access, CosmosAccess):
        return StateStore(access)
    from ferry.transfer.mongo_state import MongoStateStore  # here: it imports this module

    return MongoStateStore(access)


class StateStore:
    """The `__datatransferstate` database of one account."""

    _ensured: ClassVar[set[str]] = set()  # endpoints whose database and containers exist (per process)
    _ensure_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, access: CosmosAccess) -> None:
        self.access = access

    def ensure(self) -> None:
        """Create the database and its containers unless they exist; never with throughput."""
        with self._ensure_lock:
            if self.access.endpoint in self._ensured:
                return
            # Instances of one account start together: "if not exists" reads, then creates, so two can both
            # find nothing and one of them then meets 409. Either way the database and containers exist.
            ENSURE_RETRIES(self._create)
            self._ensured.add(self.access.endpoint)

    def _create(self) -> None:
        database = self.access.client().create_database_if_not_exists(DATABASE)
        for name in (JOBS, WORKUNITS):
            database.create_container_if_not_exists(name, PartitionKey(PARTITION_KEY_PATH))

    def forget(self) -> None:
        """Check again on the next ensure() (the database may have been deleted)."""
        with self._ensure_lock:
            self._ensured.discard(self.access.endpoint)

    @property
    def jobs(self) -> ContainerProxy:
        return self.access.container(DATABASE, JOBS)

    @property
    def units(self) -> ContainerProxy:
        return self.access.container(DATABASE, WORKUNITS)

    # Jobs.

    def read_job(self, job_id: str) -> dict[str, Any] | None:
        # A query rather than a point read: absent documents are an empty result on the service
        # and on the local cosmosdb-server alike (whose point reads of absent items fail with 500).
        found = list(
            self.jobs.query_items(
                "SELECT * FROM c WHERE c.jobId = @id AND c.id = @id",
                parameters=[{"name": "@id", "value": job_id}],
                partition_key=job_id,
            )
        )
        return found[0] if found else None

    def create_job(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create the job document, or return the existing one (another instance was first)."""
        try:
            return cast(dict[str, Any], self.jobs.create_item(doc))
        except CosmosResourceExistsError:
            existing = self.read_job(str(doc["id"]))
            if existing is None:  # deleted in between: try once more
                return cast(dict[str, Any], self.jobs.create_item(doc))
            return existing

    def update_job(self, job_id: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Apply `change` (returns False for "nothing to do") until it lands on the current document."""
        while True:
            doc = self.read_job(job_id)
            if doc is None:
                raise KeyError(f"job {job_id} is not in {DATABASE}")
            if not change(doc):
                return doc
            doc["lastUpdateTime"] = now_iso()
            try:
                return cast(
                    dict[str, Any],
                    self.jobs.replace_item(
                        job_id, strip_system(doc), etag=doc["_etag"], match_condition=MatchConditions.IfNotModified
                    ),
                )
            except CosmosHttpResponseError as error:
                if not is_precondition_failed(error):
                    raise

    def all_jobs(self) -> list[dict[str, Any]]:
        items = self.jobs.query_items("SELECT * FROM c", enable_cross_partition_query=True)
        return sorted(items, key=lambda d: str(d.get("createdTime", "")))

    def processed_by_job(self) -> dict[str, int]:
        """Items processed per job: the sum of its units' checkpoints."""
        processed: dict[str, int] = {}
        query = "SELECT c.jobId, c.processedCount FROM c"
        for unit in self.units.query_items(query, enable_cross_partition_query=True):
            job_id = str(unit.get("jobId"))
            processed[job_id] = processed.get(job_id, 0) + int(unit.get("processedCount") or 0)
        return processed

    # Work units.

    def job_units(self, job_id: str) -> list[dict[str, Any]]:
        items = self.units.query_items(
            "SELECT * FROM c WHERE c.jobId = @job", parameters=[{"name": "@job", "value": job_id}], partition_key=job_id
        )
        return sorted(items, key=lambda d: int(d.get("index", 0)))

    def create_unit(self, doc: dict[str, Any]) -> None:
        with contextlib.suppress(CosmosResourceExistsError):  # another instance was first (same ids)
            self.units.create_item(doc)

    def replace_unit(self, doc: dict[str, Any], etag: str) -> dict[str, Any]:
        """Write the unit if nobody changed it since `etag`; StateConflict otherwise."""
        try:
            return cast(
                dict[str, Any],
                self.units.replace_item(
                    doc["id"], strip_system(doc), etag=etag, match_condition=MatchConditions.IfNotModified
                ),
            )
        except CosmosHttpResponseError as error:
            if is_precondition_failed(error):
                raise StateConflict(str(doc["id"])) from None
            raise


def set_job_state(
    access: CosmosAccess | MongoAccess, job_id: str, state: JobState, failure: dict[str, str] | None = None
) -> dict[str, Any]:
    """Move a job to `state` (e.g. Cancelled when its resource is deleted); terminal states stay."""

    store = store_of(access)
    store.ensure()

    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES or doc.get("state") == state:
            return False
        if state == JobState.PAUSED and any(_leased(u) for u in store.job_units(job_id)):
            return False  # an instance still works on it: that one records the pause when it stops
        doc["state"] = state.value
        if failure is not None:
            doc["failure"] = failure
        if state == JobState.RUNNING:
            doc["startTime"] = doc.get("startTime") or now_iso()
        if state in TERMINAL_STATES:
            doc["completionTime"] = now_iso()
        return True

    return store.update_job(job_id, change)


def _leased(unit: dict[str, Any]) -> bool:
    return bool(unit.get("owner")) and float(unit.get("leaseExpiresAt") or 0) > epoch()


def list_jobs(access: CosmosAccess | MongoAccess) -> list[dict[str, Any]]:
    """Every job the account has run, oldest first, with progress summed over its work units."""
    store = store_of(access)
    store.ensure()
    processed = store.processed_by_job()
    jobs = [strip_system(job) for job in store.all_jobs()]
    for job in jobs:
        if str(job["id"]) in processed:  # the units' checkpoints are the progress, whatever the state
            job["processedCount"] = processed[str(job["id"])]
    return jobs


def get_job(access: CosmosAccess | MongoAccess, name_or_id: str) -> dict[str, Any] | None:
    """One job by uid, by `namespace/name`, or by name alone (the newest of that name)."""
    matches = [
        job
        for job in list_jobs(access)
        if name_or_id in (job.get("id"), job.get("name"), str(job.get("name", "")).rpartition("/")[2])
    ]
    if not matches:
        return None
    job = matches[-1]
    units = store_of(access).job_units(str(job["id"]))
    job["workUnits"] = [
        {
            "index": u.get("index"),
            **({"task": u["task"]} if "task" in u else {}),
            "owner": u.get("owner"),
            "done": bool(u.get("done")),
            "processedCount": int(u.get("processedCount", 0)),
            "leaseExpires": _iso(u.get("leaseExpiresAt")),
        }
        for u in units
    ]
    return job


def _iso(epoch: Any) -> str | None:
    if not epoch:
        return None
    return when(datetime.fromtimestamp(float(epoch), UTC), timespec="seconds")


def epoch() -> float:
    """Wall-clock seconds: lease expiries are compared across instances on different machines."""
    return time.time()
