"""DatabaseAccount controller: the account's monitor pod, its job queue, its copy instances and region changes.

The account owns the order of its ContainerCopyJobs, so one loop per account decides every job's queue position
and phase. The monitor pod reports the account's regions and reachability; the copy instances report each job's
progress, completion or failure; this loop turns those facts into phases, Events and metrics.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from ferry.api.common import parse_duration
from ferry.api.containercopyjob import ContainerCopyPhase
from ferry.api.databaseaccount import DatabaseAccountSpec
from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT
from ferry.controllers.wakeups import WAKEUPS
from ferry.kube import client, events, pods
from ferry.kube.client import ObjectRef, is_not_found
from ferry.kube.objects import LABEL_KIND, LABEL_OWNER_UID, secret_env, worker_pod
from ferry.kube.status import now, set_condition
from ferry.metrics import (
    COPY_INSTANCES,
    COPY_JOBS,
    ITEMS_COPIED,
    REGION_CHANGES,
    THROTTLED,
    WORKERS_STARTED,
    PhaseTracker,
    ProgressCounter,
)
from ferry.settings import SETTINGS

log = logging.getLogger(__name__)

ACCOUNTS = (DATABASE_ACCOUNT.group, DATABASE_ACCOUNT.version, DATABASE_ACCOUNT.plural)
JOBS = (CONTAINER_COPY_JOB.group, CONTAINER_COPY_JOB.version, CONTAINER_COPY_JOB.plural)
MONITOR_ROLE = "monitor"
INSTANCE_ROLE = "instance"
INCOMPLETE = {
    ContainerCopyPhase.PENDING.value,
    ContainerCopyPhase.QUEUED.value,
    ContainerCopyPhase.RUNNING.value,
    ContainerCopyPhase.PAUSED.value,
}

JOB_PHASES = PhaseTracker(COPY_JOBS, [p.value for p in ContainerCopyPhase])
ITEMS = ProgressCounter(ITEMS_COPIED)
THROTTLES = ProgressCounter(THROTTLED)
_last_write_region: dict[str, str] = {}


def account_env(spec: DatabaseAccountSpec) -> list[dict[str, Any]]:
    """The endpoint as a value, the key only as a Secret reference resolved by the kubelet."""
    assert spec.credentials.secret_ref is not None  # required by the CRD's CEL rule
    ref = spec.credentials.secret_ref
    return [
        {"name": "FERRY_COSMOS_ENDPOINT", "value": spec.endpoint},
        secret_env("FERRY_COSMOS_KEY", ref.name, ref.key),
        {"name": "FERRY_COSMOS_VERIFY_TLS", "value": "false" if spec.insecure_skip_tls_verify else "true"},
    ]


def instance_name(account: str, index: int) -> str:
    """Deterministic instance names: the operator can tell which instances exist and never starts one twice."""
    base = f"{account}-copy-{index}"
    if len(base) <= 63:
        return base
    return f"{account[:40]}-{hashlib.sha256(account.encode()).hexdigest()[:8]}-copy-{index}"


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class AccountReconciler:
    def __init__(self, account: dict[str, Any]) -> None:
        self.obj = account
        self.meta = account["metadata"]
        self.namespace: str = self.meta["namespace"]
        self.name: str = self.meta["name"]
        self.uid: str = self.meta["uid"]
        self.spec = DatabaseAccountSpec.model_validate(account["spec"])
        self.status: dict[str, Any] = dict(account.get("status") or {})
        self.patch: dict[str, Any] = {}
        self.ref = ObjectRef(DATABASE_ACCOUNT, self.namespace, self.name)
        self.instances: list[pods.PodView] = []  # listed once per look, before the queue is decided

    def run(self) -> None:
        if self.meta.get("deletionTimestamp"):
            return
        if self.status.get("observedGeneration") != self.meta.get("generation"):
            self.patch["observedGeneration"] = self.meta.get("generation")
        self._ensure_monitor()
        self._note_region_change()
        self.instances = pods.owned_pods(self.namespace, self.uid, INSTANCE_ROLE)
        active = self._drive_jobs()
        self._drive_instances(active)
        if self.patch:
            self.ref.patch_status(self.patch)

    # -- the monitor pod: regions and reachability -------------------------------------------------------------

    def _ensure_monitor(self) -> None:
        monitors = pods.owned_pods(self.namespace, self.uid, MONITOR_ROLE)
        for pod in monitors:
            if pod.finished:  # it should run for the account's lifetime: replace it
                pods.delete_pod(self.namespace, pod.name, grace_seconds=0)
        if any(p.active for p in monitors):
            return
        if any(p.deleting and not p.finished for p in monitors):
            return
        manifest = self._worker(
            MONITOR_ROLE,
            ["account", "--namespace", self.namespace, "--name", self.name],
            requests={"cpu": "50m", "memory": "96Mi"},
            limits={"memory": "256Mi"},
            restart_policy="Always",
        )
        pods.create_pod(self.namespace, manifest)
        WORKERS_STARTED.labels(kind=DATABASE_ACCOUNT.kind, role=MONITOR_ROLE).inc()

    def _note_region_change(self) -> None:
        region = self.status.get("writeRegion")
        if not region:
            return
        previous = _last_write_region.get(self.uid)
        _last_write_region[self.uid] = region
        if previous is not None and previous != region:
            REGION_CHANGES.inc()
            events.emit(self.obj, "WriteRegionChanged", f"the write region changed from {previous} to {region}", True)

    # -- the queue ----------------------------------------------------------------------------------------------

    def _jobs(self) -> list[dict[str, Any]]:
        listed: Any = client.custom().list_namespaced_custom_object(
            CONTAINER_COPY_JOB.group, CONTAINER_COPY_JOB.version, self.namespace, CONTAINER_COPY_JOB.plural
        )
        mine = [
            j
            for j in listed.get("items", [])
            if (j.get("spec") or {}).get("accountRef", {}).get("name") == self.name
            and not j["metadata"].get("deletionTimestamp")
        ]
        # Creation order; the name breaks ties between jobs created in the same second.
        return sorted(mine, key=lambda j: (j["metadata"]["creationTimestamp"], j["metadata"]["name"]))

    def _drive_jobs(self) -> dict[str, Any] | None:
        write_region = self.status.get("writeRegion")
        active: dict[str, Any] | None = None
        queued: list[str] = []
        for job in self._jobs():
            decision = JobDecision(job, write_region).decide(is_first=active is None, position=len(queued) + 1)
            if decision.active:
                active = job
            elif decision.phase == ContainerCopyPhase.QUEUED.value:
                queued.append(job["metadata"]["name"])
            decision.write(running=decision.active and self._instances_running())
        active_name = active["metadata"]["name"] if active else None
        if self.status.get("activeCopyJob") != active_name:
            self.patch["activeCopyJob"] = active_name
        if (self.status.get("queuedCopyJobs") or []) != queued:
            self.patch["queuedCopyJobs"] = queued
        return active

    # -- the copy instances -------------------------------------------------------------------------------------

    def _instances_running(self) -> bool:
        return any(p.phase == "Running" and not p.deleting for p in self.instances)

    def _drive_instances(self, active: dict[str, Any] | None) -> None:
        current = self.instances
        wanted = [instance_name(self.name, i) for i in range(self.spec.copy_instances.count)]
        if active is not None:
            if self.status.get("idleSince"):
                self.patch["idleSince"] = None
            for pod in current:
                if pod.finished or (pod.name not in wanted and not pod.deleting):
                    pods.delete_pod(self.namespace, pod.name, grace_seconds=0 if pod.finished else None)
            existing = {p.name for p in current if not p.finished}
            for name in wanted:
                if name not in existing:
                    self._start_instance(name)
        elif current:
            idle_since = _stamp(self.status.get("idleSince"))
            if idle_since is None:
                self.patch["idleSince"] = now()
            elif datetime.now(UTC) - idle_since >= parse_duration(self.spec.idle_timeout):
                for pod in current:
                    if not pod.deleting:
                        pods.delete_pod(self.namespace, pod.name)
                events.emit(self.obj, "InstancesRemoved", f"no work for {self.spec.idle_timeout}; instances removed")
                self.patch["idleSince"] = None
        names = sorted(p.name for p in pods.owned_pods(self.namespace, self.uid, INSTANCE_ROLE) if not p.deleting)
        COPY_INSTANCES.labels(namespace=self.namespace, account=self.name).set(len(names))
        if (self.status.get("instances") or []) != names:
            self.patch["instances"] = names

    def _worker(self, role: str, args: list[str], **pod: Any) -> dict[str, Any]:
        """A pod of this account's: both roles reach the account the same way (endpoint, key reference)."""
        return worker_pod(
            kind=DATABASE_ACCOUNT,
            owner_name=self.name,
            owner_uid=self.uid,
            namespace=self.namespace,
            role=role,
            image=SETTINGS.worker_image,
            service_account=SETTINGS.worker_service_account,
            args=args,
            env=account_env(self.spec),
            **pod,
        )

    def _start_instance(self, name: str) -> None:
        resources = self.spec.copy_instances.resources
        amounts = {"cpu": resources.cpu, "memory": resources.memory}
        args = ["copy", "--namespace", self.namespace, "--account", self.name]
        manifest = self._worker(INSTANCE_ROLE, args, requests=amounts, limits=amounts, name=name)
        try:
            pods.create_pod(self.namespace, manifest)
        except Exception as exc:
            if client.is_conflict(exc):
                return  # still terminating from an earlier run: it is recreated on a later look
            raise
        WORKERS_STARTED.labels(kind=DATABASE_ACCOUNT.kind, role=INSTANCE_ROLE).inc()
        events.emit(self.obj, "InstanceStarted", f"started copy instance {name}")


class JobDecision:
    """What one job's phase should be, given the facts the instances reported and its place in the queue."""

    def __init__(self, job: dict[str, Any], write_region: str | None) -> None:
        self.job = job
        self.meta = job["metadata"]
        self.status: dict[str, Any] = dict(job.get("status") or {})
        self.spec: dict[str, Any] = job.get("spec") or {}
        self.write_region = write_region
        self.patch: dict[str, Any] = {}
        self.phase: str = self.status.get("phase") or ContainerCopyPhase.PENDING.value
        self.active = False  # first in its account's queue: the instances work on it
        self._event: tuple[str, str, bool] | None = None

    def _set(self, phase: ContainerCopyPhase, reason: str, message: str, warning: bool = False) -> None:
        if self.status.get("phase") == phase.value:
            self.phase = phase.value
            return
        self.phase = phase.value
        self.patch["phase"] = phase.value
        conditions = self.status.get("conditions")
        generation = self.meta.get("generation")
        conditions = set_condition(
            conditions, "Complete", phase == ContainerCopyPhase.SUCCEEDED, reason, message, generation
        )
        conditions = set_condition(
            conditions, "Failed", phase == ContainerCopyPhase.FAILED, reason, message, generation
        )
        self.patch["conditions"] = conditions
        self._event = (reason, message, warning)

    def _fail(self, reason: str, message: str) -> None:
        self.patch["failure"] = {"reason": reason, "message": message}
        self.patch["completionTime"] = now()
        self.patch["queuePosition"] = None
        self._set(ContainerCopyPhase.FAILED, reason, message, warning=True)

    def decide(self, is_first: bool, position: int) -> JobDecision:
        if self.status.get("observedGeneration") != self.meta.get("generation"):
            self.patch["observedGeneration"] = self.meta.get("generation")
        if self.phase not in INCOMPLETE:
            return self
        failure = self.status.get("failure")
        if failure:
            self._fail(failure["reason"], failure["message"])
            return self
        if self.status.get("completionTime"):
            self.patch["queuePosition"] = None
            self.patch["percent"] = 100
            self._set(ContainerCopyPhase.SUCCEEDED, "Copied", f"copied {self.status.get('processedCount', 0)} items")
            return self
        recorded = self.status.get("writeRegion")
        if recorded and self.write_region and recorded != self.write_region:
            self._fail(
                "WriteRegionChanged",
                f"the account's write region changed from {recorded} to {self.write_region} while the job was "
                "incomplete; re-create the job to run it in the new write region",
            )
            return self
        if not self.write_region:
            self._set(ContainerCopyPhase.PENDING, "WaitingForAccount", "waiting for the account's write region")
            return self
        if not recorded:
            self.patch["writeRegion"] = self.write_region
        if self.spec.get("suspend"):
            self.patch["queuePosition"] = None
            self._set(ContainerCopyPhase.PAUSED, "Suspended", "spec.suspend is true; set it to false to resume")
            return self
        if is_first:
            self.active = True
            if self.status.get("queuePosition") != 0:
                self.patch["queuePosition"] = 0
            if self.phase != ContainerCopyPhase.RUNNING.value:
                self.phase = ContainerCopyPhase.PENDING.value
            return self
        if self.status.get("queuePosition") != position:
            self.patch["queuePosition"] = position
        self._set(ContainerCopyPhase.QUEUED, "Queued", f"waiting behind {position} earlier job(s) of the account")
        return self

    def write(self, running: bool) -> None:
        if self.active and running:
            if self.status.get("phase") != ContainerCopyPhase.RUNNING.value:
                self.patch.setdefault("startTime", self.status.get("startTime") or now())
            self._set(ContainerCopyPhase.RUNNING, "Copying", "the account's copy instances are copying this job")
        elif self.active and self.status.get("phase") != ContainerCopyPhase.RUNNING.value:
            self._set(ContainerCopyPhase.PENDING, "StartingInstances", "waiting for the account's copy instances")
        uid = self.meta["uid"]
        JOB_PHASES.observe(uid, self.phase)
        terminal_before = self.status.get("phase") in (
            ContainerCopyPhase.SUCCEEDED.value,
            ContainerCopyPhase.FAILED.value,
        )
        ITEMS.observe(uid, self.status.get("processedCount"), finished_before=terminal_before)
        THROTTLES.observe(uid, self.status.get("throttledRequests"), finished_before=terminal_before)
        if not self.patch:
            return
        self.patch["lastUpdateTime"] = now()
        ObjectRef(CONTAINER_COPY_JOB, self.meta["namespace"], self.meta["name"]).patch_status(self.patch)
        if self._event is not None:
            reason, message, warning = self._event
            events.emit(self.job, reason, message, warning)


@kopf.daemon(*ACCOUNTS, cancellation_timeout=5.0)  # type: ignore[arg-type]
def keep_reconciling_account(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, **_: Any) -> None:
    """One loop per account: the only writer of its jobs' phases, so queue decisions never race."""
    ref = ObjectRef(DATABASE_ACCOUNT, namespace, name)
    while not stopped:
        try:
            AccountReconciler(ref.get()).run()
        except Exception as exc:
            if is_not_found(exc):
                return
            log.exception("reconciling DatabaseAccount %s/%s failed; retrying", namespace, name)
        WAKEUPS.wait(uid, SETTINGS.resync_seconds, lambda: bool(stopped))


@kopf.on.delete(*ACCOUNTS)
def on_account_delete(uid: str, **_: Any) -> None:
    # Monitor and instance pods are owned by the account and garbage collected with it.
    _last_write_region.pop(uid, None)
    WAKEUPS.forget(uid)


@kopf.on.event(*ACCOUNTS)
def on_account_event(uid: str, **_: Any) -> None:
    WAKEUPS.wake(uid)  # the monitor reported regions, or the spec changed


@kopf.on.event(*JOBS)  # type: ignore[arg-type]
def on_job_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    """Any change of a job (new, progress, suspend, deleted) wakes its account's loop."""
    account = (body.get("spec") or {}).get("accountRef", {}).get("name")
    if not account:
        return
    try:
        uid = ObjectRef(DATABASE_ACCOUNT, namespace, account).get()["metadata"]["uid"]
    except Exception as exc:
        if is_not_found(exc):
            _account_missing(body, account)
            return
        raise
    WAKEUPS.wake(uid)
    if body.get("type") == "DELETED" or body["metadata"].get("deletionTimestamp"):
        JOB_PHASES.observe(body["metadata"]["uid"], None)


def _account_missing(body: kopf.Body, account: str) -> None:
    status = body.get("status") or {}
    if status.get("phase") not in (None, ContainerCopyPhase.PENDING.value):
        return
    message = f'DatabaseAccount "{account}" does not exist in this namespace; create it or fix spec.accountRef'
    conditions = status.get("conditions")
    if (conditions or [{}])[0].get("message") == message:
        return
    ref = ObjectRef(CONTAINER_COPY_JOB, body["metadata"]["namespace"], body["metadata"]["name"])
    ref.patch_status(
        {
            "phase": ContainerCopyPhase.PENDING.value,
            "conditions": set_condition(conditions, "AccountFound", False, "AccountNotFound", message),
        }
    )


@kopf.on.event("v1", "pods", labels={LABEL_KIND: DATABASE_ACCOUNT.kind})
def on_account_pod_event(labels: kopf.Labels, **_: Any) -> None:
    owner = labels.get(LABEL_OWNER_UID)
    if owner:
        WAKEUPS.wake(owner)
