"""BlobCopy controller: starts and watches the worker pod that copies, mirrors its outcome, cleans up on delete.

The worker writes the copy's own fields (copyId, copyStatus, progress, bytes, blob counts) into the status; the
controller owns the phase, the conditions, the worker bookkeeping, Events and metrics.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import kopf

from ferry.api.blobcopy import BlobCopyPhase, BlobCopySpec
from ferry.api.kinds import BLOB_COPY
from ferry.controllers.wakeups import WAKEUPS
from ferry.kube import events, pods
from ferry.kube.client import ObjectRef, is_not_found
from ferry.kube.objects import LABEL_KIND, LABEL_OWNER_UID, secret_env, worker_pod
from ferry.kube.status import now, set_condition
from ferry.metrics import BLOBCOPIES, BLOBCOPY_BYTES, BLOBCOPY_DURATION, WORKERS_STARTED, PhaseTracker, ProgressCounter
from ferry.settings import SETTINGS
from ferry.workers import exitcodes

log = logging.getLogger(__name__)

RESOURCE = (BLOB_COPY.group, BLOB_COPY.version, BLOB_COPY.plural)
COPY_ROLE = "copy"
CLEANUP_ROLE = "cleanup"
TERMINAL = {BlobCopyPhase.SUCCEEDED.value, BlobCopyPhase.FAILED.value}
CLEANUP_ATTEMPTS = 3

PHASES = PhaseTracker(BLOBCOPIES, [p.value for p in BlobCopyPhase])
BYTES = ProgressCounter(BLOBCOPY_BYTES)


def worker_env(spec: BlobCopySpec) -> list[dict[str, Any]]:
    """Credentials reach the worker only as Secret references resolved by the kubelet."""
    env: list[dict[str, Any]] = []
    source = spec.source
    if source.account is not None:
        ref = source.account.secret_ref
        env.append(secret_env("FERRY_SOURCE_CONNECTION_STRING", ref.name, ref.key))
    if source.url_secret_ref is not None:
        env.append(secret_env("FERRY_SOURCE_URL", source.url_secret_ref.name, source.url_secret_ref.key))
    elif source.url is not None:
        env.append({"name": "FERRY_SOURCE_URL", "value": source.url})
    dest = spec.destination.account.secret_ref
    env.append(secret_env("FERRY_DESTINATION_CONNECTION_STRING", dest.name, dest.key))
    return env


def _manifest(obj: dict[str, Any], spec: BlobCopySpec, role: str) -> dict[str, Any]:
    meta = obj["metadata"]
    args = ["blobcopy", "--namespace", meta["namespace"], "--name", meta["name"]]
    if role == CLEANUP_ROLE:
        args.append("--cleanup")
    return worker_pod(
        kind=BLOB_COPY,
        owner_name=meta["name"],
        owner_uid=meta["uid"],
        namespace=meta["namespace"],
        role=role,
        image=SETTINGS.worker_image,
        service_account=SETTINGS.worker_service_account,
        args=args,
        env=worker_env(spec),
        requests={"cpu": "250m", "memory": "256Mi"},
        limits={"memory": f"{max(512, spec.block_size_mi_b * spec.parallelism * 3)}Mi"},
    )


class Reconciler:
    """One look at a BlobCopy: decide what its worker should be doing and record the outcome."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.meta = obj["metadata"]
        self.ref = ObjectRef(BLOB_COPY, self.meta["namespace"], self.meta["name"])
        self.spec = BlobCopySpec.model_validate(obj["spec"])
        self.status: dict[str, Any] = dict(obj.get("status") or {})
        self.patch: dict[str, Any] = {}

    @property
    def phase(self) -> str | None:
        return self.patch.get("phase", self.status.get("phase"))

    def set_phase(self, phase: BlobCopyPhase, reason: str, message: str, warning: bool = False) -> None:
        if self.phase == phase.value:
            return
        self.patch["phase"] = phase.value
        generation = self.meta.get("generation")
        conditions = self.patch.get("conditions", self.status.get("conditions"))
        conditions = set_condition(
            conditions, "Complete", phase == BlobCopyPhase.SUCCEEDED, reason, message, generation
        )
        conditions = set_condition(conditions, "Failed", phase == BlobCopyPhase.FAILED, reason, message, generation)
        self.patch["conditions"] = conditions
        events.emit(self.obj, reason, message, warning=warning)

    def fail(self, reason: str, message: str) -> None:
        self.patch["failure"] = {"reason": reason, "message": message}
        self.patch["completionTime"] = now()
        self.patch["workerPod"] = None
        self.set_phase(BlobCopyPhase.FAILED, reason, message, warning=True)

    def run(self) -> None:
        if self.meta.get("deletionTimestamp"):
            return
        if self.status.get("observedGeneration") != self.meta.get("generation"):
            self.patch["observedGeneration"] = self.meta.get("generation")
        if not self.status.get("phase"):
            self.patch["startTime"] = self.status.get("startTime") or now()
            self.set_phase(BlobCopyPhase.PENDING, "Accepted", "the copy is waiting for its worker")
        if self.phase not in TERMINAL:
            self._drive_worker()
        self._write()

    def _drive_worker(self) -> None:
        namespace, uid = self.meta["namespace"], self.meta["uid"]
        workers = pods.owned_pods(namespace, uid, COPY_ROLE)
        active = [p for p in workers if p.active]
        if self.spec.suspend:
            for pod in active:
                pods.delete_pod(namespace, pod.name)
            self.patch["workerPod"] = None
            self.set_phase(BlobCopyPhase.PAUSED, "Suspended", "spec.suspend is true; set it to false to resume")
            return
        for pod in workers:
            if pod.finished and self._settle(pod):
                return
        if active:
            self._follow(active[0])
            return
        if any(p.deleting and not p.finished for p in workers):
            return  # a stopping worker checkpoints first; its successor starts once it is gone
        expected = self.status.get("workerPod")
        vanished = expected and self.phase == BlobCopyPhase.RUNNING.value and all(p.name != expected for p in workers)
        if vanished and not self._restart_budget(f"worker pod {expected} vanished"):
            return
        self._start_worker(COPY_ROLE)

    def _settle(self, pod: pods.PodView) -> bool:
        """Act on a finished worker pod; True when the copy reached a terminal phase."""
        namespace = self.meta["namespace"]
        if pod.phase == "Succeeded" or pod.exit_code == exitcodes.SUCCEEDED:
            self.patch["completionTime"] = self.status.get("completionTime") or now()
            self.patch["workerPod"] = None
            self._observe_duration()
            self.set_phase(BlobCopyPhase.SUCCEEDED, "Copied", self._summary())
            return True
        if pod.exit_code == exitcodes.FAILED:
            failure = self.status.get("failure") or {
                "reason": "CopyFailed",
                "message": f"the worker {pod.name} reported a failure; see its log",
            }
            self.fail(failure["reason"], failure["message"])
            return True
        # Crashed, killed or stopped: the work resumes in a new worker from its checkpoint.
        pods.delete_pod(namespace, pod.name, grace_seconds=0)
        if pod.exit_code == exitcodes.STOPPED:
            return False
        return not self._restart_budget(f"worker pod {pod.name} exited with code {pod.exit_code}")

    def _restart_budget(self, why: str) -> bool:
        restarts = int(self.status.get("workerRestarts") or 0) + 1
        self.patch["workerRestarts"] = restarts
        self.patch["workerPod"] = None
        if restarts > self.spec.max_retries:
            self.fail("WorkerFailed", f"{why}; gave up after {restarts - 1} restarts (spec.maxRetries)")
            return False
        events.emit(self.obj, "WorkerRestarted", f"{why}; starting another ({restarts}/{self.spec.max_retries})")
        return True

    def _follow(self, pod: pods.PodView) -> None:
        if pod.phase == "Running":
            self.set_phase(BlobCopyPhase.RUNNING, "Copying", f"worker pod {pod.name} is copying")
        elif pod.waiting_reason == "CreateContainerConfigError":
            message = f"worker pod {pod.name} cannot start: {pod.waiting_message or pod.waiting_reason}"
            conditions = self.patch.get("conditions", self.status.get("conditions"))
            self.patch["conditions"] = set_condition(conditions, "WorkerReady", False, "ConfigError", message)
            if self.status.get("statusDescription") != message:
                self.patch["statusDescription"] = message
                events.emit(self.obj, "WorkerConfigError", message, warning=True)
        if self.status.get("workerPod") != pod.name:
            self.patch["workerPod"] = pod.name

    def _start_worker(self, role: str) -> None:
        name = pods.create_pod(self.meta["namespace"], _manifest(self.obj, self.spec, role))
        WORKERS_STARTED.labels(kind=BLOB_COPY.kind, role=role).inc()
        self.patch["workerPod"] = name
        if self.phase == BlobCopyPhase.PAUSED.value:
            self.set_phase(BlobCopyPhase.PENDING, "Resumed", "spec.suspend is false; the copy resumes")
        events.emit(self.obj, "WorkerStarted", f"started worker pod {name}")

    def _summary(self) -> str:
        status = {**self.status, **self.patch}
        blobs = status.get("blobs")
        if blobs and blobs.get("total", 0) > 1:
            return (
                f"{blobs.get('succeeded', 0)} of {blobs.get('total', 0)} blobs copied"
                f", {blobs.get('skipped', 0)} skipped"
            )
        return f"copied {status.get('progress') or '0/0'} bytes"

    def _observe_duration(self) -> None:
        start = self.status.get("startTime")
        if start:
            began = datetime.fromisoformat(start.replace("Z", "+00:00"))
            finished = datetime.fromisoformat(now().replace("Z", "+00:00"))
            BLOBCOPY_DURATION.observe(max(0.0, (finished - began).total_seconds()))

    def _write(self) -> None:
        status = {**self.status, **self.patch}
        PHASES.observe(self.meta["uid"], status.get("phase"))
        BYTES.observe(self.meta["uid"], status.get("bytesCopied"))
        if self.patch:
            self.patch["lastUpdateTime"] = now()
            self.ref.patch_status(self.patch)


@kopf.on.update(*RESOURCE, field="spec")
def on_spec_change(uid: str, **_: Any) -> None:
    WAKEUPS.wake(uid)


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)  # type: ignore[arg-type]
def keep_reconciling(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, **_: Any) -> None:
    """One loop per BlobCopy, the only place that reconciles it, so that two looks never race to start workers.

    It is woken by changes of the spec and of the worker pods; otherwise it looks again every few seconds.
    """
    ref = ObjectRef(BLOB_COPY, namespace, name)
    while not stopped:
        try:
            Reconciler(ref.get()).run()
        except Exception as exc:
            if is_not_found(exc):
                return
            log.exception("reconciling BlobCopy %s/%s failed; retrying", namespace, name)
        WAKEUPS.wait(uid, SETTINGS.resync_seconds, lambda: bool(stopped))


@kopf.on.event("v1", "pods", labels={LABEL_KIND: BLOB_COPY.kind})
def on_worker_pod_event(labels: kopf.Labels, **_: Any) -> None:
    owner = labels.get(LABEL_OWNER_UID)
    if owner:
        WAKEUPS.wake(owner)


@kopf.on.delete(*RESOURCE)
def on_delete(body: kopf.Body, **_: Any) -> None:
    """Stop the copy worker, then let a cleanup worker abort what is pending and release leases."""
    obj = dict(body)
    meta = obj["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    status = obj.get("status") or {}
    try:
        copy_pods = pods.owned_pods(namespace, uid, COPY_ROLE)
        for pod in copy_pods:
            if not pod.deleting:
                pods.delete_pod(namespace, pod.name)
        if any(not pod.finished for pod in copy_pods):
            raise kopf.TemporaryError("waiting for the copy worker to stop", delay=1)
        if status.get("phase") == BlobCopyPhase.SUCCEEDED.value and not _holds_leases(obj):
            return
        _cleanup(obj)
    finally:
        PHASES.observe(uid, None)
        BYTES.observe(uid, None)
        WAKEUPS.forget(uid)


def _holds_leases(obj: dict[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    return bool(spec.get("lockSource") or spec.get("lockDestination"))


def _cleanup(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    cleaners = pods.owned_pods(namespace, uid, CLEANUP_ROLE)
    if any(p.phase == "Succeeded" for p in cleaners):
        events.emit(obj, "CleanedUp", "pending copies aborted and leases released")
        return
    if sum(1 for p in cleaners if p.phase == "Failed") >= CLEANUP_ATTEMPTS:
        events.emit(obj, "CleanupFailed", "could not abort pending copies; check the destination", warning=True)
        return
    if not any(p.active for p in cleaners):
        spec = BlobCopySpec.model_validate(obj["spec"])
        pods.create_pod(namespace, _manifest(obj, spec, CLEANUP_ROLE))
        WORKERS_STARTED.labels(kind=BLOB_COPY.kind, role=CLEANUP_ROLE).inc()
    raise kopf.TemporaryError("waiting for the cleanup worker", delay=1)
