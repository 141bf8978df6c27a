"""A copy instance pod of a DatabaseAccount: works on the account's active ContainerCopyJob.

The operator names the active job in the account's status (activeCopyJob); the instance follows it
through a watch on the account, so an idle instance makes no requests at all, and a job that is
suspended, deleted or failed elsewhere is left at the next page boundary. The account's instances share
a job through leases on its work units in `__datatransferstate`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.api.containercopyjob import ContainerCopyJobSpec, ContainerCopyProgress
from ferry.api.databaseaccount import SOURCE_ACCOUNT_ENV_PREFIX, SOURCE_ACCOUNT_NAME_ENV, AccountApi
from ferry.api.kinds import CONTAINER_COPY_JOB
from ferry.api.outcome import WorkerOutcome
from ferry.kinds.containercopyjob.engine import CopyTask, JobSpec, run_instance
from ferry.kinds.containercopyjob.mongo_engine import run_mongo_instance
from ferry.kube.client import ObjectRef, is_not_found
from ferry.storage.cosmos import CosmosAccess
from ferry.storage.mongo import MongoAccess
from ferry.transfer.account_follow import ACCOUNT_DELETED, ASKED_TO_STOP, AccountState, AccountWatch, instance_id
from ferry.transfer.job_document import TransientJobError, report_job_error
from ferry.transfer.progress import transfer_record
from ferry.transfer.state import JobState, set_job_state
from ferry.workers.outcome import run_worker
from ferry.workers.podenv import account_api, cosmos_access_from_env, mongo_access_from_env
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-copy-instance"
RETRY_SECONDS = 5.0
CUTOVER_CHECK_SECONDS = 2.0


def main(namespace: str, account: str) -> int:
    return run_worker(lambda stop: _serve(namespace, account, stop))


def _serve(namespace: str, account: str, stop: threading.Event) -> WorkerOutcome:
    access = mongo_access_from_env() if account_api() == AccountApi.MONGODB else cosmos_access_from_env()
    owner = instance_id(account)
    follow = AccountWatch(namespace, account, stop)
    follow.start()
    while not stop.is_set():
        seen = follow.version
        state = follow.state
        if state.gone:
            return ACCOUNT_DELETED
        if state.active_job is None:
            follow.wait_for_change(seen)
            continue
        wait = _work_on(access, namespace, state, follow, owner, stop)
        if wait is not None:
            follow.wait_for_change(seen, wait if wait > 0 else None)
    return ASKED_TO_STOP


def _work_on(
    access: CosmosAccess | MongoAccess,
    namespace: str,
    state: AccountState,
    follow: AccountWatch,
    owner: str,
    stop: threading.Event,
) -> float | None:
    """Work on the active job until it is done or no longer active; how long to wait before looking again
    (0: until the account changes; None: look again at once)."""
    assert state.active_job is not None
    job_ref = ObjectRef(CONTAINER_COPY_JOB, namespace, state.active_job)
    try:
        job = job_ref.get()
    except ApiException as exc:
        if is_not_found(exc):
            return 0.0  # deleted: the operator names another job
        raise
    spec = ContainerCopyJobSpec.model_validate(job["spec"])
    status = job.get("status") or {}
    work = JobSpec(
        job_id=_record_id(job),
        name=f"{namespace}/{job['metadata']['name']}",
        tasks=[
            CopyTask(t.source.database, t.source.container, t.destination.database, t.destination.container)
            for t in spec.copy_tasks()
        ],
        max_items_per_second=spec.max_items_per_second,
        instances=state.instances,
        write_region=status.get("writeRegion"),
        mode=spec.mode.value,
        verify=spec.verify,
        source_account=spec.source_account(),
        attempt=int(status.get("attempt") or 1),
        listed=spec.tasks is not None,
    )
    if work.source_account and os.environ.get(SOURCE_ACCOUNT_NAME_ENV) != work.source_account:
        # Started before this job became active: the operator replaces this pod with one that has the source
        # account's endpoint and key.
        log.info("instance %s waits for its replacement to read from account %s", owner, work.source_account)
        return RETRY_SECONDS
    reporter: StatusReporter[ContainerCopyProgress] = StatusReporter(
        CONTAINER_COPY_JOB, namespace, job["metadata"]["name"], FIELD_MANAGER
    )

    def should_stop() -> bool:
        return stop.is_set() or follow.state.active_job != state.active_job or reporter.gone

    asked = {"cutover": spec.cutover, "at": time.monotonic()}

    def cutover() -> bool:
        """spec.cutover of an online job, looked up at most every CUTOVER_CHECK_SECONDS while it is false."""
        if not asked["cutover"] and time.monotonic() - asked["at"] >= CUTOVER_CHECK_SECONDS:
            asked["at"] = time.monotonic()
            with contextlib.suppress(ApiException):  # looked up again next time
                asked["cutover"] = bool((job_ref.get().get("spec") or {}).get("cutover"))
        return bool(asked["cutover"])

    log.info("instance %s working on %s", owner, work.name)
    try:
        previous = ContainerCopyProgress.part_of(job.get("status"))
        # A source key that cannot be a key fails the job (InvalidCredentials, naming its Secret), not the instance.
        if isinstance(access, MongoAccess):
            outcome = run_mongo_instance(access, work, owner, reporter.report, should_stop, previous=previous)
        else:
            source = cosmos_access_from_env(prefix=SOURCE_ACCOUNT_ENV_PREFIX) if work.source_account else None
            outcome = run_instance(
                access, work, owner, reporter.report, should_stop, previous=previous, cutover=cutover, source=source
            )
    except TransientJobError as error:
        log.warning("%s: transient failure, resuming from the checkpoints: %s", work.name, error)
        stop.wait(RETRY_SECONDS)
        return None
    except Exception as error:  # the job's, not the instance's: it fails, and the account's next job runs
        current = ContainerCopyProgress.part_of(job.get("status"))
        report_job_error(access, work.job_id, work.name, error, current, reporter.report)
        return RETRY_SECONDS
    finally:
        reporter.flush()
    log.info("instance %s: %s on %s", owner, outcome.kind, work.name)
    if outcome.kind == "stopped" and not stop.is_set():
        _record_why_stopped(access, job_ref, work.job_id, reporter)
    if outcome.kind == "idle":
        return outcome.retry_after or RETRY_SECONDS
    if outcome.kind == "stopped" and follow.state.active_job == state.active_job and not stop.is_set():
        return None  # stopped by the job's record (paused elsewhere) while still active: take it up again
    return 0.0


def _record_why_stopped(
    access: CosmosAccess | MongoAccess, job_ref: ObjectRef, job_id: str, reporter: StatusReporter[ContainerCopyProgress]
) -> None:
    """Mirror into the job history why the work stopped: deleted (cancelled), suspended or failed elsewhere."""
    try:
        job: dict[str, Any] | None = job_ref.get()
    except ApiException as exc:
        if not is_not_found(exc):
            return
        job = None
    try:
        if job is None or _record_id(job) != job_id:
            set_job_state(access, job_id, JobState.CANCELLED)
            return
        status = job.get("status") or {}
        if status.get("failure"):
            set_job_state(access, job_id, JobState.FAILED, status["failure"])
        elif (job.get("spec") or {}).get("suspend"):
            doc = set_job_state(access, job_id, JobState.PAUSED)
            if doc.get("state") == JobState.PAUSED:
                current = ContainerCopyProgress.part_of(status)
                current.transfer = transfer_record(doc)
                reporter.report(current, True)
    except KeyError:
        return  # never started: the job history has nothing to record


def _record_id(job: dict[str, Any]) -> str:
    """The job's record in __datatransferstate that its current run works on (status.recordId, set by a re-run
    that starts over; else the uid)."""
    return str((job.get("status") or {}).get("recordId") or job["metadata"]["uid"])
