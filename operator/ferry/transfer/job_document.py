"""What copy and restore instances share about a job's document in `__datatransferstate`: its outcome for one
instance, recording a failure once, and the first instance's start."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ferry.api.common import COSMOS_NAME, Failure, FerryModel
from ferry.api.outcome import OutcomeResult
from ferry.api.transfer import Verification
from ferry.storage.cosmos import CosmosAccess
from ferry.storage.mongo import MongoAccess
from ferry.transfer.progress import Reporter, transfer_record
from ferry.transfer.state import TERMINAL_STATES, JobState, JobStore, now_iso, store_of
from ferry.transfer.unit_leases import UnitLease, acquire
from ferry.transfer.verify import verification_failure
from ferry.workers.outcome import classify

M = TypeVar("M", bound=FerryModel)
log = logging.getLogger(__name__)


@dataclass
class InstanceOutcome:
    kind: Literal["idle", "completed", "failed", "stopped", "progress"]
    failure: Failure | None = None
    retry_after: float | None = None  # idle: when a unit leased by another instance could be taken over


class TransientJobError(Exception):
    """A failure worth retrying: the job is unchanged, another run resumes from the checkpoints."""


def fail_job(store: JobStore, job_id: str, failure: Failure, task: int | None = None) -> dict[str, Any]:
    """Record the failure once; the first failure recorded is the job's failure (`task`: the part of the job that
    failed it, when one did)."""

    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES:
            return False
        doc.update(state=JobState.FAILED.value, failure=failure.wire(), completionTime=now_iso(), failedTask=task)
        return True

    return store.update_job(job_id, change)


JOB_CHECK_INTERVAL = 2.0  # how often an instance re-reads the job document for a state set elsewhere

# A job on which the account's instances meet an unexpected error this often fails with that error as its cause.
MAX_JOB_ERRORS = 3


def invalid_names(names: Mapping[str, str | None]) -> Failure | None:
    """InvalidResourceName for the first field whose name Cosmos DB forbids (objects stored before the CRD's rule,
    or written around it): checked before any request, so the job fails with the field named."""
    for field, name in names.items():
        if name is not None and (why := COSMOS_NAME.problem(name)) is not None:
            return Failure(reason="InvalidResourceName", message=f"{field} {name!r}: {why}")
    return None


def open_job(
    store: JobStore, doc: dict[str, Any], names: Mapping[str, str | None], reporter: Reporter[Any]
) -> InstanceOutcome | None:
    """Make sure the job has its document; the job's failure, recorded and reported, when a name in the spec is one
    Cosmos DB refuses (checked before any request, so that the field is named)."""
    store.ensure()
    store.create_job(doc)
    invalid = invalid_names(names)
    if invalid is None:
        return None
    failed = fail_job(store, str(doc["id"]), invalid)
    reporter.send(failed, force=True)
    return outcome_of(failed) or InstanceOutcome("failed", invalid)


def reopen_job(store: JobStore, job_id: str, attempt: int) -> dict[str, Any]:
    """A re-run that resumes: the record an earlier run ended is running again, as run `attempt`, from its work
    units' checkpoints (an ended run's failure and error count are its own, kept in the object's status)."""

    def change(doc: dict[str, Any]) -> bool:
        if int(doc.get("attempt") or 1) >= attempt:
            return False
        running = JobState.RUNNING if doc.get("unitsReady") else JobState.PENDING
        doc.update(attempt=attempt, state=running.value, failure=None, failedTask=None, errors=0, completionTime=None)
        return True

    return store.update_job(job_id, change)


def job_error(
    access: CosmosAccess | MongoAccess, job_id: str, name: str, error: BaseException
) -> dict[str, Any] | None:
    """Record an unexpected error met on one job in its document, so that it fails the job and no other: at once
    when another try would fail the same way, else after MAX_JOB_ERRORS of them, with the error as the cause.
    Transient errors (throttling, timeouts, an unreachable service or API server) are retried and not counted.
    Returns the job document (one made for the failure when the job never got one), or None when the job has no
    document and may yet succeed."""
    verdict = classify(error)
    store = store_of(access)
    store.ensure()
    final = verdict.result == OutcomeResult.FAILED

    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES:
            return False
        errors = int(doc.get("errors") or 0) + 1
        doc["errors"] = errors
        if final:
            failure = Failure(reason=verdict.reason, message=verdict.message)
        elif errors >= MAX_JOB_ERRORS:
            message = f"{verdict.message} (the account's instances met this {errors} times; gave up)"
            failure = Failure(reason=verdict.reason, message=message)
        else:
            return True
        doc.update(state=JobState.FAILED.value, failure=failure.wire(), completionTime=now_iso())
        return True

    known_transient = verdict.result == OutcomeResult.RETRY and verdict.reason != "WorkerCrashed"
    if verdict.result == OutcomeResult.STOPPED or known_transient:
        return None  # the object is gone, or a transient error the next try may not meet: nothing against the job
    if store.read_job(job_id) is None:
        if not final:
            return None
        store.create_job({"id": job_id, "jobId": job_id, "name": name, "state": JobState.PENDING.value})
    return store.update_job(job_id, change)


def report_job_error(
    access: CosmosAccess | MongoAccess,
    job_id: str,
    name: str,
    error: Exception,
    current: M,
    report: Callable[[M, bool], None],
) -> None:
    """Count an error an instance met on one job against that job (which fails when the error is permanent or keeps
    coming) and, once it has failed, show the failure in the object's status (`current`, the instances' part)."""
    log.warning("%s: %s: %s", name, type(error).__name__, error)
    doc = job_error(access, job_id, name, error)
    record = transfer_record(doc) if doc is not None else None
    if record is not None and record.failure is not None:
        report(current.model_copy(update={"transfer": record}), True)


def outcome_of(doc: dict[str, Any]) -> InstanceOutcome | None:
    """The outcome for a job that is no longer to be worked on, or None."""
    state = doc.get("state")
    if state == JobState.SUCCEEDED:
        return InstanceOutcome("completed")
    if state == JobState.FAILED:
        wire = doc.get("failure") or {"reason": "Failed", "message": "the job failed"}
        return InstanceOutcome("failed", Failure.model_validate(wire))
    if state in (JobState.CANCELLED, JobState.PAUSED):
        return InstanceOutcome("stopped")
    return None


def mark_running(store: JobStore, job_id: str) -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") != JobState.PENDING:
            return False
        doc.update(state=JobState.RUNNING.value, startTime=doc.get("startTime") or now_iso())
        return True

    return store.update_job(job_id, change)


def complete_job(store: JobStore, job_id: str, processed: int) -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES:
            return False
        doc.update(state=JobState.SUCCEEDED.value, processedCount=processed, completionTime=now_iso())
        return True

    return store.update_job(job_id, change)


class JobInstance(Generic[M]):
    """One instance working on one job: the job's document as last read, and the ways its work ends."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        instance_id: str,
        reporter: Reporter[M],
        should_stop: Callable[[], bool],
        lease_seconds: float,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.instance_id = instance_id
        self.reporter = reporter
        self.should_stop = should_stop
        self.lease_seconds = lease_seconds
        self.doc: dict[str, Any] = {}
        self._checked = 0.0

    def refresh(self, force: bool = False) -> InstanceOutcome | None:
        """Re-read the job (at most every JOB_CHECK_INTERVAL): another party may have ended it."""
        now = time.monotonic()
        if force or now - self._checked >= JOB_CHECK_INTERVAL:
            self._checked = now
            return self.read_job()
        return outcome_of(self.doc)

    def resume(self) -> None:
        """The job is active again after a pause: it runs from its checkpoints."""

        def change(doc: dict[str, Any]) -> bool:
            if doc.get("state") != JobState.PAUSED:
                return False
            doc.update(state=JobState.RUNNING.value, startTime=doc.get("startTime") or now_iso())
            return True

        self.doc = self.store.update_job(self.job_id, change)

    def next_lease(self) -> UnitLease | InstanceOutcome:
        """A unit of the job, leased; else the instance's outcome: completed when every unit is done, idle while
        the others are leased elsewhere (until the first may be taken over). A pending job is marked running (it
        was just read: a running job needs no request)."""
        lease, availability = acquire(self.store, self.job_id, self.instance_id, self.lease_seconds)
        if lease is None:
            if availability.all_done:
                return self.complete()
            return InstanceOutcome("idle", retry_after=availability.retry_after)
        if self.doc.get("state") == JobState.PENDING:
            self.doc = mark_running(self.store, self.job_id)
        return lease

    def complete(self) -> InstanceOutcome:
        """Every unit is done: the job succeeded (unless another party ended it first)."""
        self.doc = complete_job(self.store, self.job_id, self.reporter.processed())
        self.reporter.send(self.doc, force=True)
        return outcome_of(self.doc) or InstanceOutcome("completed")

    def read_job(self) -> InstanceOutcome | None:
        """Read the job again: None while it is to be worked on, else this instance's outcome."""
        doc = self.store.read_job(self.job_id)
        if doc is None:
            return InstanceOutcome("stopped")  # the state database was deleted under us
        self.doc = doc
        return outcome_of(doc)

    def failed(self, failure: Failure, task: int | None = None) -> InstanceOutcome:
        """Record the failure (the first one recorded stays the job's) and report it."""
        self.doc = fail_job(self.store, self.job_id, failure, task)
        self.reporter.send(self.doc, force=True)
        return outcome_of(self.doc) or InstanceOutcome("failed", failure)

    def verified(self, lease: UnitLease, result: Verification) -> InstanceOutcome | None:
        """Record the verification held by `lease`; a mismatch fails the job (VerificationFailed)."""
        lease.check()
        found = result.wire()

        def change(doc: dict[str, Any]) -> bool:
            doc["verification"] = found
            return True

        self.doc = self.store.update_job(self.job_id, change)
        if not result.matches:
            failed = self.failed(verification_failure(result))  # before the unit is done: nobody completes it
            lease.checkpoint(None, 0, done=True)
            return failed
        lease.checkpoint(None, 0, done=True)
        self.reporter.send(self.doc, force=True)
        return None
