"""DatabaseAccount: its monitor pod, its Ready condition, its job queue and its copy instances.

The monitor pod reports the account's regions and whether it accepts the key (the AccountObservation
part of the status); this decision owns the rest: the Ready condition, the write region it last acted
on (a change is an Event and a metric, once), which job the instances work on, and the instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.api.common import parse_duration
from ferry.api.databaseaccount import (
    AccountObservation,
    ConnectionState,
    DatabaseAccountOperatorStatus,
    DatabaseAccountSpec,
)
from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT
from ferry.controllers.accountqueue import Queue, copy_jobs
from ferry.controllers.base import KindController
from ferry.kube.objects import pod_name, secret_env, worker_pod
from ferry.metrics import REGION_CHANGES_METRIC
from ferry.runtime.lifecycle import ServicePod, service_workers
from ferry.runtime.objects import ObjectMeta, condition, key_of, meta_of, set_condition
from ferry.runtime.plan import Count, Event, Plan, PodCreation
from ferry.runtime.pods import PodView
from ferry.runtime.world import WorkerSettings, World

MONITOR_ROLE = "monitor"
INSTANCE_ROLE = "instance"


@dataclass(frozen=True)
class Observed:
    meta: ObjectMeta
    spec: DatabaseAccountSpec
    state: DatabaseAccountOperatorStatus
    observation: AccountObservation
    monitor_pods: tuple[PodView, ...]
    instance_pods: tuple[PodView, ...]
    queue: Queue
    instance_slots: int  # slots granted for instances that do not exist yet
    now: datetime
    workers: WorkerSettings


class DatabaseAccountController(KindController[Observed]):
    kind = DATABASE_ACCOUNT
    status_part = DatabaseAccountOperatorStatus

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        meta = meta_of(body)
        status = body.get("status") or {}
        spec = DatabaseAccountSpec.model_validate(body.get("spec") or {})
        observation = AccountObservation.part_of(status)
        jobs = world.referencing(CONTAINER_COPY_JOB, meta.namespace, meta.name)
        instance_pods = tuple(world.pods(meta.uid, INSTANCE_ROLE))
        jobs_queue = copy_jobs(jobs, observation.write_region)
        missing = spec.copy_instances.count - sum(1 for p in instance_pods if p.active)
        wanted = missing if jobs_queue.running and missing > 0 else 0
        return Observed(
            meta=meta,
            spec=spec,
            state=DatabaseAccountOperatorStatus.part_of(status),
            observation=observation,
            monitor_pods=tuple(world.pods(meta.uid, MONITOR_ROLE)),
            instance_pods=instance_pods,
            queue=jobs_queue,
            instance_slots=world.slots(key_of(DATABASE_ACCOUNT, body), meta.order(), wanted) if wanted else 0,
            now=world.now,
            workers=world.workers,
        )

    def decide(self, observed: Observed) -> Plan:
        return decide(observed)

    def related(self, body: Mapping[str, Any], world: World) -> list[Mapping[str, Any]]:
        """Every job of the account: their phases and places depend on the account's regions and queue."""
        meta = meta_of(body)
        return list(world.referencing(CONTAINER_COPY_JOB, meta.namespace, meta.name))


def account_env(spec: DatabaseAccountSpec) -> list[dict[str, Any]]:
    """The endpoint as a value, the key only as a Secret reference resolved by the kubelet."""
    assert spec.credentials.secret_ref is not None  # required by the CRD's CEL rule
    ref = spec.credentials.secret_ref
    return [
        {"name": "FERRY_COSMOS_ENDPOINT", "value": spec.endpoint},
        secret_env("FERRY_COSMOS_KEY", ref.name, ref.key),
        {"name": "FERRY_COSMOS_VERIFY_TLS", "value": "false" if spec.insecure_skip_tls_verify else "true"},
    ]


def monitor_manifest(o: Observed) -> dict[str, Any]:
    args = ["account", "--namespace", o.meta.namespace, "--name", o.meta.name]
    args += ["--poll-interval", o.spec.region_poll_interval]
    return worker_pod(
        kind=DATABASE_ACCOUNT,
        owner_name=o.meta.name,
        owner_uid=o.meta.uid,
        namespace=o.meta.namespace,
        role=MONITOR_ROLE,
        name=pod_name(o.meta.name, MONITOR_ROLE, 0),
        image=o.workers.image,
        service_account=o.workers.service_account,
        args=args,
        env=account_env(o.spec),
        requests={"cpu": "50m", "memory": "96Mi"},
        limits={"memory": "256Mi"},
        restart_policy="Always",
        takes_slot=False,
    )


def instance_manifest(o: Observed, index: int) -> dict[str, Any]:
    resources = o.spec.copy_instances.resources
    amounts = {"cpu": resources.cpu, "memory": resources.memory}
    return worker_pod(
        kind=DATABASE_ACCOUNT,
        owner_name=o.meta.name,
        owner_uid=o.meta.uid,
        namespace=o.meta.namespace,
        role=INSTANCE_ROLE,
        name=pod_name(o.meta.name, "copy", index),
        image=o.workers.image,
        service_account=o.workers.service_account,
        args=["copy", "--namespace", o.meta.namespace, "--account", o.meta.name],
        env=account_env(o.spec),
        requests=amounts,
        limits=amounts,
        restart_policy="Always",  # the kubelet restarts a crashed instance; it resumes from the checkpoints
    )


READY_REASONS = {
    ConnectionState.CONNECTED: "Connected",
    ConnectionState.UNAUTHORIZED: "Unauthorized",
    ConnectionState.LOCAL_AUTH_DISABLED: "LocalAuthDisabled",
    ConnectionState.UNREACHABLE: "Unreachable",
}


def decide(o: Observed) -> Plan:
    state = o.state.model_copy(deep=True)
    plan = Plan(status=state)
    state.observed_generation = o.meta.generation
    if o.meta.deleting:
        return plan  # its pods are owned by it and garbage collected with it
    _monitor(o, state, plan)
    _regions(o, state, plan)
    state.active_copy_job = o.queue.running[0] if o.queue.running else None
    state.queued_copy_jobs = list(o.queue.waiting) or None
    _instances(o, state, plan)
    return plan


def _set_ready(
    o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan, ok: bool | None, reason: str, message: str
) -> None:
    before = condition(state.conditions, "Ready")
    state.conditions = set_condition(state.conditions, "Ready", ok, reason, message, o.meta.generation, o.now)
    if before is None or (before.reason, before.message) != (reason, message):
        plan.events.append(Event(reason, message, warning=ok is False))


def _monitor(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan) -> None:
    manifest = monitor_manifest(o)
    wanted = ServicePod(manifest["metadata"]["name"], manifest["metadata"]["labels"]["ferry.dev/template"], False)
    result = service_workers([wanted], o.monitor_pods)
    plan.delete.extend(result.delete)
    plan.create.extend(PodCreation(manifest, takes_slot=False) for _ in result.start)
    connection = o.observation.connection
    if result.problems:
        _, why = result.problems[0]
        reason = "SecretNotFound" if "not found" in why or "couldn't find key" in why else "MonitorFailing"
        _set_ready(o, state, plan, False, reason, f"the account monitor cannot run: {why}")
    elif connection is not None:
        ok = connection.state == ConnectionState.CONNECTED
        _set_ready(o, state, plan, ok, READY_REASONS[connection.state], connection.message)
    else:
        _set_ready(o, state, plan, None, "Connecting", "waiting for the account monitor's first report")


def _regions(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan) -> None:
    region = o.observation.write_region
    if region is None or region == state.observed_write_region:
        return
    if state.observed_write_region is not None:
        message = (
            f"the write region changed from {state.observed_write_region} to {region}: incomplete copy jobs "
            "of this account fail (re-create them to run in the new write region)"
        )
        plan.events.append(Event("WriteRegionChanged", message, warning=True))
        plan.counts.append(Count(REGION_CHANGES_METRIC))
    state.observed_write_region = region


def _instances(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan) -> None:
    active = [p for p in o.instance_pods if not p.deleting]
    if o.queue.running:
        state.idle_since = None
        count = o.spec.copy_instances.count
        existing = {p.name for p in active}
        budget = o.instance_slots
        wanted: list[tuple[ServicePod, dict[str, Any]]] = []
        for index in range(count):
            manifest = instance_manifest(o, index)
            name = manifest["metadata"]["name"]
            if name not in existing:
                if budget <= 0:
                    plan.wants_slot = True
                    continue
                budget -= 1
            wanted.append((ServicePod(name, manifest["metadata"]["labels"]["ferry.dev/template"], True), manifest))
        result = service_workers([w for w, _ in wanted], o.instance_pods)
        manifests = {w.name: m for w, m in wanted}
        plan.delete.extend(result.delete)
        for pod in result.start:
            plan.create.append(PodCreation(manifests[pod.name]))
            plan.events.append(Event("InstanceStarted", f"started copy instance {pod.name}"))
    elif active:
        idle_since = state.idle_since or o.now
        state.idle_since = idle_since
        left = (idle_since + parse_duration(o.spec.idle_timeout) - o.now).total_seconds()
        if left > 0:
            plan.after(left)
        else:
            plan.delete.extend(service_workers([], active).delete)
            plan.events.append(Event("InstancesRemoved", f"no work for {o.spec.idle_timeout}; copy instances removed"))
            state.idle_since = None
    else:
        state.idle_since = None
    deleted = {d.name for d in plan.delete}
    names = {p.name for p in o.instance_pods if not p.deleting and p.name not in deleted}
    names |= {c.name for c in plan.create if c.takes_slot}
    state.instances = sorted(names) or None
