"""A restore instance pod of a DatabaseAccount: works on the account's running InAccountRestores.

The operator names the running restores in the account's status (activeRestores, three at most); the
instance follows them through a watch on the account and takes turns among them one work unit at a
time, so every running restore moves. The account's instances share each restore through leases on
its units in `__datatransferstate`, as copy instances share a copy job.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.api.inaccountrestore import InAccountRestoreSpec, RestoreProgress
from ferry.api.kinds import IN_ACCOUNT_RESTORE
from ferry.api.outcome import WorkerOutcome
from ferry.backup.restoreplan import RestoreRequest
from ferry.backup.store import BackupStore
from ferry.kinds.databaseaccount.capture_worker import backup_store
from ferry.kinds.inaccountrestore.engine import RestoreJob, run_restore_instance
from ferry.kube.client import ObjectRef, is_not_found
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.account_follow import ACCOUNT_DELETED, ASKED_TO_STOP, AccountState, AccountWatch, instance_id
from ferry.transfer.job_document import TransientJobError, report_job_error
from ferry.transfer.state import JobState, set_job_state
from ferry.workers.outcome import run_worker
from ferry.workers.podenv import cosmos_access_from_env
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-restorer"
RETRY_SECONDS = 5.0


def request_of(spec: InAccountRestoreSpec) -> RestoreRequest:
    return RestoreRequest(
        database=spec.database,
        container=spec.container,
        timestamp=spec.restore_timestamp,
        target_database=spec.target.database if spec.target else None,
        target_container=spec.target.container if spec.target else None,
        ttl_disabled=spec.restore_with_ttl_disabled,
    )


def main(namespace: str, account: str, container: str, prefix: str) -> int:
    return run_worker(lambda stop: _serve(namespace, account, backup_store(container, prefix), stop))


def _serve(namespace: str, account: str, backup: BackupStore, stop: threading.Event) -> WorkerOutcome:
    access = cosmos_access_from_env()
    owner = instance_id(account)
    follow = AccountWatch(namespace, account, stop)
    follow.start()
    while not stop.is_set():
        seen = follow.version
        state = follow.state
        if state.gone:
            return ACCOUNT_DELETED
        waits: list[float] = []
        for name in state.active_restores:
            if stop.is_set():
                break
            wait = _work_on(access, backup, namespace, name, state, follow, owner, stop)
            if wait is not None:
                waits.append(wait)
        if len(waits) == len(state.active_restores):  # nothing moved: wait for a change or a lease to expire
            timed = [w for w in waits if w > 0]
            follow.wait_for_change(seen, min(timed) if timed else None)
    return ASKED_TO_STOP


def _work_on(
    access: CosmosAccess,
    backup: BackupStore,
    namespace: str,
    name: str,
    state: AccountState,
    follow: AccountWatch,
    owner: str,
    stop: threading.Event,
) -> float | None:
    """One turn on a restore: None when it moved (take another turn at once), else how long to wait before
    looking again (0: until the account changes)."""
    ref = ObjectRef(IN_ACCOUNT_RESTORE, namespace, name)
    try:
        restore = ref.get()
    except ApiException as exc:
        if is_not_found(exc):
            return 0.0  # deleted: the operator names the running restores again
        raise
    reporter: StatusReporter[RestoreProgress] = StatusReporter(IN_ACCOUNT_RESTORE, namespace, name, FIELD_MANAGER)

    def should_stop() -> bool:
        return stop.is_set() or name not in follow.state.active_restores or reporter.gone

    job_id = str(restore["metadata"]["uid"])
    try:
        spec = InAccountRestoreSpec.model_validate(restore["spec"])
        job = RestoreJob(
            job_id=job_id,
            name=f"{namespace}/{name}",
            request=request_of(spec),
            instances=state.instances,
            write_region=(restore.get("status") or {}).get("writeRegion"),
            verify=spec.verify,
        )
        outcome = run_restore_instance(
            access,
            backup,
            job,
            owner,
            reporter.report,
            should_stop,
            one_unit=True,
            previous=RestoreProgress.part_of(restore.get("status")),
        )
    except TransientJobError as error:
        log.warning("%s/%s: transient failure, resuming from the checkpoints: %s", namespace, name, error)
        stop.wait(RETRY_SECONDS)
        return RETRY_SECONDS
    except Exception as error:  # this restore's, not the instance's: the account's other restores go on
        current = RestoreProgress.part_of(restore.get("status"))
        report_job_error(access, job_id, f"{namespace}/{name}", error, current, reporter.report)
        return RETRY_SECONDS
    finally:
        reporter.flush()
    if outcome.kind == "progress":
        return None
    log.info("instance %s: %s on %s", owner, outcome.kind, job.name)
    if outcome.kind == "stopped" and not stop.is_set():
        _record_why_stopped(access, ref, job.job_id)
    if outcome.kind == "idle":
        return outcome.retry_after or RETRY_SECONDS
    return 0.0


def _record_why_stopped(access: CosmosAccess, ref: ObjectRef, job_id: str) -> None:
    """Mirror into the job history why the work stopped: the restore was deleted (cancelled) or failed elsewhere
    (the write region changed)."""
    try:
        restore: dict[str, Any] | None = ref.get()
    except ApiException as exc:
        if not is_not_found(exc):
            return
        restore = None
    try:
        if restore is None or restore["metadata"]["uid"] != job_id:
            set_job_state(access, job_id, JobState.CANCELLED)
        elif (restore.get("status") or {}).get("failure"):
            set_job_state(access, job_id, JobState.FAILED, restore["status"]["failure"])
    except KeyError:
        return  # never started: the job history has nothing to record
