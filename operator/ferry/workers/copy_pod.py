"""A copy instance pod of a DatabaseAccount: works on the account's active ContainerCopyJob.

The operator names the active job in the account's status (activeCopyJob); the instance follows it
through a watch on the account, so an idle instance makes no requests at all, and a job that is
suspended, deleted or failed elsewhere is left at the next page boundary. The account's instances share
a job through leases on its work units in `__datatransferstate`.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.kube import client
from ferry.kube.client import ObjectRef, is_not_found
from ferry.storage.cosmos import CosmosAccess
from ferry.storage.transferstate import JobState, set_job_state
from ferry.workers.copyjob import JobSpec, TransientCopyError, run_instance
from ferry.workers.copyjob_progress import transfer_record
from ferry.workers.outcome import run_worker
from ferry.workers.podenv import cosmos_access_from_env
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-copy-instance"
WATCH_SECONDS = 300
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class AccountState:
    active_job: str | None
    instances: int
    gone: bool = False


class AccountWatch:
    """The account's active job and instance count, kept current by a watch (one request per WATCH_SECONDS)."""

    def __init__(self, namespace: str, name: str, stop: threading.Event) -> None:
        self.namespace, self.name, self.stop = namespace, name, stop
        self._state = AccountState(active_job=None, instances=1)
        self._known = threading.Event()
        self._changed = threading.Condition()
        self._version = 0
        self._thread = threading.Thread(target=self._run, name="account-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def state(self) -> AccountState:
        return self._state

    @property
    def version(self) -> int:
        return self._version

    def wait_for_change(self, seen: int, timeout: float | None = None) -> None:
        """Until the account changes after version `seen`, the timeout passes or the pod is stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self.stop.is_set(), timeout)

    def _set(self, state: AccountState) -> None:
        with self._changed:
            if state != self._state:
                self._state = state
                self._version += 1
            self._known.set()
            self._changed.notify_all()

    def _run(self) -> None:
        api = client.custom()
        kind = DATABASE_ACCOUNT
        while not self.stop.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    self.namespace,
                    kind.plural,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=WATCH_SECONDS,
                )
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    if event["type"] == "DELETED":
                        self._set(AccountState(None, 1, gone=True))
                        return
                    status = obj.get("status") or {}
                    count = int(((obj.get("spec") or {}).get("copyInstances") or {}).get("count") or 1)
                    self._set(AccountState(status.get("activeCopyJob"), count))
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                # 410 Gone: the watch expired; anything else: the API server had a problem. List again.
                if exc.status != 410:
                    log.warning("watch on the account failed (%s); retrying", exc.status)
                    self.stop.wait(RETRY_SECONDS)
            except Exception as exc:  # a dropped connection: watch again after a pause
                log.warning("watch on the account failed (%s); retrying", type(exc).__name__)
                self.stop.wait(RETRY_SECONDS)


def main(namespace: str, account: str) -> int:
    return run_worker(lambda stop: _serve(namespace, account, stop))


def _serve(namespace: str, account: str, stop: threading.Event) -> WorkerOutcome:
    access = cosmos_access_from_env()
    # One owner per process: a restarted pod of the same name must not take its predecessor's leases as its own.
    instance_id = f"{os.environ.get('HOSTNAME') or account}/{uuid.uuid4().hex[:12]}"
    follow = AccountWatch(namespace, account, stop)
    follow.start()
    while not stop.is_set():
        seen = follow.version
        state = follow.state
        if state.gone:
            return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the account was deleted")
        if state.active_job is None:
            follow.wait_for_change(seen)
            continue
        wait = _work_on(access, namespace, state, follow, instance_id, stop)
        if wait is not None:
            follow.wait_for_change(seen, wait if wait > 0 else None)
    return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")


def _work_on(
    access: CosmosAccess,
    namespace: str,
    state: AccountState,
    follow: AccountWatch,
    instance_id: str,
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
    spec = job["spec"]
    work = JobSpec(
        job_id=job["metadata"]["uid"],
        name=f"{namespace}/{job['metadata']['name']}",
        source_db=spec["source"]["database"],
        source_container=spec["source"]["container"],
        dest_db=spec["destination"]["database"],
        dest_container=spec["destination"]["container"],
        max_items_per_second=spec.get("maxItemsPerSecond"),
        instances=state.instances,
        write_region=(job.get("status") or {}).get("writeRegion"),
    )
    reporter: StatusReporter[ContainerCopyProgress] = StatusReporter(
        CONTAINER_COPY_JOB, namespace, job["metadata"]["name"], FIELD_MANAGER
    )

    def should_stop() -> bool:
        return stop.is_set() or follow.state.active_job != state.active_job or reporter.gone

    log.info("instance %s working on %s", instance_id, work.name)
    try:
        previous = ContainerCopyProgress.part_of(job.get("status"))
        outcome = run_instance(access, work, instance_id, reporter.report, should_stop, previous=previous)
    except TransientCopyError as error:
        log.warning("%s: transient failure, resuming from the checkpoints: %s", work.name, error)
        stop.wait(RETRY_SECONDS)
        return None
    finally:
        reporter.flush()
    log.info("instance %s: %s on %s", instance_id, outcome.kind, work.name)
    if outcome.kind == "stopped" and not stop.is_set():
        _record_why_stopped(access, job_ref, work.job_id, reporter)
    if outcome.kind == "idle":
        return outcome.retry_after or RETRY_SECONDS
    if outcome.kind == "stopped" and follow.state.active_job == state.active_job and not stop.is_set():
        return None  # stopped by the job's record (paused elsewhere) while still active: take it up again
    return 0.0


def _record_why_stopped(
    access: CosmosAccess, job_ref: ObjectRef, job_id: str, reporter: StatusReporter[ContainerCopyProgress]
) -> None:
    """Mirror into the job history why the work stopped: deleted (cancelled), suspended or failed elsewhere."""
    try:
        job: dict[str, Any] | None = job_ref.get()
    except ApiException as exc:
        if not is_not_found(exc):
            return
        job = None
    try:
        if job is None or job["metadata"]["uid"] != job_id:
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
