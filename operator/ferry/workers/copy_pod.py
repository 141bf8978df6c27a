"""A copy instance pod of a DatabaseAccount: works on the account's active ContainerCopyJob, shared with the
account's other instances through leases in `__datatransferstate`, until the operator removes it when idle."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT
from ferry.kube.client import ObjectRef, is_not_found
from ferry.storage.cosmos import CosmosAccess, redact
from ferry.storage.transferstate import JobState, set_job_state
from ferry.workers import exitcodes
from ferry.workers.copyjob import JobSpec, run_instance
from ferry.workers.podenv import cosmos_access_from_env, status_reporter, stop_on_sigterm

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 2.0
JOB_CHECK_SECONDS = 2.0
WORKABLE = {"Pending", "Running"}


def _workable(job: dict[str, Any], uid: str) -> bool:
    status = job.get("status") or {}
    return (
        job["metadata"]["uid"] == uid
        and not job["metadata"].get("deletionTimestamp")
        and not (job.get("spec") or {}).get("suspend")
        and status.get("phase", "Pending") in WORKABLE
        and not status.get("failure")
        and not status.get("completionTime")
    )


class JobWatch:
    """Answers "should this instance stop working on the job?" from a fresh look every few seconds."""

    def __init__(self, ref: ObjectRef, uid: str, stop: threading.Event) -> None:
        self.ref, self.uid, self.stop = ref, uid, stop
        self._checked = time.monotonic()
        self._verdict = False

    def __call__(self) -> bool:
        if self.stop.is_set():
            return True
        if time.monotonic() - self._checked >= JOB_CHECK_SECONDS:
            self._checked = time.monotonic()
            try:
                self._verdict = not _workable(self.ref.get(), self.uid)
            except ApiException as exc:
                self._verdict = is_not_found(exc)
        return self._verdict


def _set_state(access: CosmosAccess, job_id: str, state: JobState, failure: dict[str, str] | None = None) -> None:
    with contextlib.suppress(KeyError):  # never started: the job history has nothing to record
        set_job_state(access, job_id, state, failure)


def _record_why_stopped(access: CosmosAccess, job_ref: ObjectRef, job_id: str) -> None:
    """Mirror into the job history why the work stopped: deleted (cancelled), suspended or failed elsewhere."""
    try:
        job: dict[str, Any] | None = job_ref.get()
    except ApiException as exc:
        if not is_not_found(exc):
            return
        job = None
    if job is None or job["metadata"]["uid"] != job_id:
        _set_state(access, job_id, JobState.CANCELLED)
        return
    status = job.get("status") or {}
    if status.get("failure"):
        _set_state(access, job_id, JobState.FAILED, status["failure"])
    elif (job.get("spec") or {}).get("suspend"):
        _set_state(access, job_id, JobState.PAUSED)


def _active_job(account: ObjectRef) -> tuple[dict[str, Any], dict[str, Any]] | None:
    obj = account.get()
    active = (obj.get("status") or {}).get("activeCopyJob")
    if not active:
        return None
    try:
        job = ObjectRef(CONTAINER_COPY_JOB, account.namespace, active).get()
    except ApiException as exc:
        if is_not_found(exc):
            return None
        raise
    return obj, job


def main(namespace: str, account_name: str) -> int:
    access = cosmos_access_from_env()
    account = ObjectRef(DATABASE_ACCOUNT, namespace, account_name)
    instance_id = os.environ.get("HOSTNAME") or f"{account_name}-{os.getpid()}"
    stop = stop_on_sigterm()
    while not stop.is_set():
        try:
            found = _active_job(account)
        except ApiException as exc:
            if is_not_found(exc):
                return exitcodes.SUCCEEDED
            log.warning("could not read the account's active job: %s", exc.reason)
            stop.wait(IDLE_POLL_SECONDS)
            continue
        if found is None or not _workable(found[1], found[1]["metadata"]["uid"]):
            stop.wait(IDLE_POLL_SECONDS)
            continue
        account_obj, job = found
        spec = job["spec"]
        job_ref = ObjectRef(CONTAINER_COPY_JOB, namespace, job["metadata"]["name"])
        work = JobSpec(
            job_id=job["metadata"]["uid"],
            name=f"{namespace}/{job['metadata']['name']}",
            source_db=spec["source"]["database"],
            source_container=spec["source"]["container"],
            dest_db=spec["destination"]["database"],
            dest_container=spec["destination"]["container"],
            max_items_per_second=spec.get("maxItemsPerSecond"),
            instances=int(account_obj["spec"].get("copyInstances", {}).get("count", 2)),
            write_region=(job.get("status") or {}).get("writeRegion"),
        )
        log.info("instance %s working on %s", instance_id, work.name)
        _set_state(access, work.job_id, JobState.RUNNING)  # resumed after a pause, if it was paused
        try:
            watch = JobWatch(job_ref, work.job_id, stop)
            outcome = run_instance(access, work, instance_id, status_reporter(job_ref), watch)
        except Exception as exc:  # a crash: this instance's lease expires and another resumes the work
            log.error("instance %s crashed on %s: %s", instance_id, work.name, redact(f"{type(exc).__name__}: {exc}"))
            return exitcodes.CRASHED
        log.info("instance %s: %s on %s", instance_id, outcome.kind, work.name)
        if outcome.kind == "stopped" and not stop.is_set():
            _record_why_stopped(access, job_ref, work.job_id)
        if outcome.kind == "failed" and outcome.failure is not None:
            log.error("%s failed: %s: %s", work.name, outcome.failure.reason, outcome.failure.message)
        if outcome.kind in ("idle", "stopped"):
            stop.wait(IDLE_POLL_SECONDS)
    return exitcodes.STOPPED
