"""DatabaseAccount: its monitor and capture pods, its conditions, its queues and its instance pools.

The monitor pod reports the account's regions and whether it accepts the key (the AccountObservation
part of the status), the capture pod the backup's window and health (BackupObservation); this decision
owns the rest: the Ready and BackupHealthy conditions, the write region it last acted on (a change is an
Event and a metric, once), which copy job and which restores the instances work on, and the instances:
copy instances while a copy job runs, restore instances while restores run, each pool removed after
spec.idleTimeout without work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import Metric

from ferry.api.common import DURATION_PATTERN, parse_duration
from ferry.api.databaseaccount import (
    ACCOUNT_ENV_PREFIX,
    RETENTION,
    RETENTION_OVERRIDE,
    SOURCE_ACCOUNT_ENV_PREFIX,
    SOURCE_ACCOUNT_NAME_ENV,
    AccountObservation,
    BackupMode,
    BackupObservation,
    ConnectionState,
    DatabaseAccountOperatorStatus,
    DatabaseAccountSpec,
)
from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT, IN_ACCOUNT_RESTORE
from ferry.kinds.databaseaccount.metrics import (
    BACKUP_VERSIONS_METRIC,
    REGION_CHANGES_METRIC,
    BackupFigures,
    account_gauges,
    instances_of,
)
from ferry.kube.manifests import (
    LABEL_ROLE,
    LABEL_TEMPLATE,
    identity_env,
    pod_name,
    secret_env,
    storage_env,
    worker_pod,
)
from ferry.runtime.controller import Controller
from ferry.runtime.engine import account_of, source_account_of
from ferry.runtime.lifecycle import PodProblem, ServicePod, service_workers
from ferry.runtime.objects import (
    Activity,
    ObjectMeta,
    condition,
    key_of,
    meta_of,
    set_condition,
    set_health,
    without_condition,
)
from ferry.runtime.plan import Count, Event, Plan, PodCreation
from ferry.runtime.pods import PodView
from ferry.runtime.world import WorkerSettings, World
from ferry.timefmt import when
from ferry.transfer.account_queue import BackupView, Queue, copy_jobs, restore_unfinished, restores
from ferry.transfer.account_ref import not_ready_reason

# A role is the pod's ferry.dev/role label, its pod-name segment and its command (`ferry worker databaseaccount ROLE`).
MONITOR_ROLE = "monitor"
COPY_ROLE = "copy"  # the copy instances, working on the account's ContainerCopyJobs
BACKUP_ROLE = "backup"
RESTORE_ROLE = "restore"  # the restore instances, working on the account's InAccountRestores
BACKUP_ENV_PREFIX = "FERRY_BACKUP"  # FERRY_BACKUP_CONNECTION_STRING, or _BLOB_ENDPOINT, _CLIENT_ID and _TENANT_ID
# A capture later than this many intervals (plus a margin for a slow one) means capturing has stalled.
STALL_INTERVALS = 3
STALL_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class CopySource:
    """The source account of the running copy job, when that is another account."""

    name: str
    spec: DatabaseAccountSpec
    readable: bool  # its write region is known and its key not refused: the copy can start


@dataclass(frozen=True)
class Observed:
    meta: ObjectMeta
    spec: DatabaseAccountSpec
    state: DatabaseAccountOperatorStatus
    observation: AccountObservation
    backup: BackupObservation
    annotations: Mapping[str, str]
    monitor_pods: tuple[PodView, ...]
    backup_pods: tuple[PodView, ...]
    instance_pods: tuple[PodView, ...]
    restorer_pods: tuple[PodView, ...]
    queue: Queue
    restores: Queue
    instance_slots: int  # slots granted for instances (copy first, then restore) that do not exist yet
    now: datetime
    workers: WorkerSettings
    copy_source: CopySource | None = None
    copy_source_missing: bool = False  # the running job reads from an account that does not exist


class DatabaseAccountController(Controller[Observed]):
    kind = DATABASE_ACCOUNT
    status_part = DatabaseAccountOperatorStatus

    def gauges(self, bodies: Iterable[Mapping[str, Any]]) -> Iterable[Metric]:
        """ferry_copy_instances and the backup gauges (the controller's ExportsGauges capability)."""
        listed = list(bodies)
        figures = [f for body in listed if (f := self.backup_figures(body)) is not None]
        return account_gauges(sum(instances_of(b) for b in listed), figures)

    def backup_figures(self, body: Mapping[str, Any]) -> BackupFigures | None:
        report = (body.get("status") or {}).get("backup")
        if report is None:
            return None
        meta = meta_of(body)
        return BackupFigures(
            namespace=meta.namespace,
            account=meta.name,
            capture_seconds=report.get("lastCaptureSeconds"),
            lag_seconds=report.get("captureLagSeconds"),
            gaps=len(report.get("gaps") or []),
            failing=report.get("error") is not None,
            interval_seconds=_capture_interval_seconds(body),
        )

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        meta = meta_of(body)
        status = body.get("status") or {}
        spec = DatabaseAccountSpec.model_validate(body.get("spec") or {})
        observation = AccountObservation.part_of(status)
        backup = BackupObservation.part_of(status)
        jobs = world.referencing(CONTAINER_COPY_JOB, meta.namespace, meta.name)
        instance_pods = tuple(world.pods(meta.uid, COPY_ROLE))
        restorer_pods = tuple(world.pods(meta.uid, RESTORE_ROLE))
        jobs_queue = copy_jobs(jobs, observation.write_region)
        restore_queue = restores(
            world.referencing(IN_ACCOUNT_RESTORE, meta.namespace, meta.name),
            BackupView(
                write_region=observation.write_region,
                enabled=spec.backup.mode == BackupMode.CONTINUOUS,
                latest_restorable=backup.latest_restorable_time,
            ),
        )
        copy_source, source_missing = _copy_source(world, meta.namespace, jobs_queue)
        copying = _copying(jobs_queue, copy_source, source_missing)
        wanted = 0
        for pods, busy in ((instance_pods, copying), (restorer_pods, bool(restore_queue.running))):
            missing = spec.copy_instances.count - sum(1 for p in pods if p.active)
            wanted += missing if busy and missing > 0 else 0
        return Observed(
            meta=meta,
            spec=spec,
            state=DatabaseAccountOperatorStatus.part_of(status),
            observation=observation,
            backup=backup,
            annotations=dict((body.get("metadata") or {}).get("annotations") or {}),
            monitor_pods=tuple(world.pods(meta.uid, MONITOR_ROLE)),
            backup_pods=tuple(world.pods(meta.uid, BACKUP_ROLE)),
            instance_pods=instance_pods,
            restorer_pods=restorer_pods,
            queue=jobs_queue,
            restores=restore_queue,
            instance_slots=world.slots(key_of(DATABASE_ACCOUNT, body), meta.order(), wanted) if wanted else 0,
            now=world.now,
            workers=world.workers,
            copy_source=copy_source,
            copy_source_missing=source_missing,
        )

    def decide(self, observed: Observed) -> Plan:
        return decide(observed)

    def related(self, body: Mapping[str, Any], world: World) -> list[Mapping[str, Any]]:
        """Every job and restore of the account: their phases and places depend on its regions, backup and queues."""
        meta = meta_of(body)
        jobs = world.referencing(CONTAINER_COPY_JOB, meta.namespace, meta.name)
        # Finished restores no longer depend on the account (whose status moves with every capture).
        unfinished = [
            r for r in world.referencing(IN_ACCOUNT_RESTORE, meta.namespace, meta.name) if restore_unfinished(r)
        ]
        # Jobs reading from it, and the accounts they run on (whose instances carry its endpoint and key).
        readers = world.reading_from(CONTAINER_COPY_JOB, meta.namespace, meta.name)
        destinations = {str(account_of(j.get("spec") or {})) for j in readers}
        hosts = [a for name in destinations if (a := world.object(DATABASE_ACCOUNT, meta.namespace, name)) is not None]
        return [*jobs, *unfinished, *readers, *hosts]


def _copy_source(world: World, namespace: str, jobs: Queue) -> tuple[CopySource | None, bool]:
    """The running job's source account when it reads from another; and whether that account is missing."""
    job = world.object(CONTAINER_COPY_JOB, namespace, jobs.running[0]) if jobs.running else None
    name = source_account_of((job or {}).get("spec") or {})
    if not name:
        return None, False
    body = world.object(DATABASE_ACCOUNT, namespace, str(name))
    if body is None:
        return None, True
    status = body.get("status") or {}
    readable = (
        AccountObservation.part_of(status).write_region is not None and not_ready_reason(status) not in NEEDS_THE_USER
    )
    spec = DatabaseAccountSpec.model_validate(body.get("spec") or {})
    return CopySource(name=str(name), spec=spec, readable=readable), False


def _copying(jobs: Queue, source: CopySource | None, source_missing: bool) -> bool:
    """Whether the copy instances have work: a job runs, and a cross-account job's source can be read."""
    return bool(jobs.running) and not source_missing and (source is None or source.readable)


def account_env(
    spec: DatabaseAccountSpec, prefix: str = ACCOUNT_ENV_PREFIX, annotations: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """The endpoint as a value; the key only as a Secret reference resolved by the kubelet, or the workload
    identity's client and tenant IDs (no key at all; by default the worker service account's `annotations`)."""
    common = [
        {"name": f"{prefix}_ENDPOINT", "value": spec.endpoint},
        {"name": f"{prefix}_VERIFY_TLS", "value": "false" if spec.insecure_skip_tls_verify else "true"},
        {"name": f"{prefix}_API", "value": spec.api.value},
    ]
    identity = spec.credentials.workload_identity
    if identity is not None:
        ids = identity_env(identity, prefix, annotations)
        if prefix == ACCOUNT_ENV_PREFIX:  # the pod's own identity, where the webhook would put it
            ids += [{"name": f"AZURE{e['name'][len(prefix) :]}", "value": e["value"]} for e in ids if e["value"]]
        return common + ids
    ref = spec.credentials.secret_ref
    assert ref is not None  # the CRD's CEL rule: exactly one of secretRef and workloadIdentity
    return [
        *common,
        secret_env(f"{prefix}_KEY", ref.name, ref.key),
        {"name": f"{prefix}_KEY_SECRET", "value": ref.name},  # where the key comes from, for errors that name it
        {"name": f"{prefix}_KEY_SECRET_KEY", "value": ref.key},
        *([{"name": f"{prefix}_USERNAME", "value": spec.credentials.username}] if spec.credentials.username else []),
    ]


def _account_pod(
    o: Observed,
    role: str,
    name: str,
    args: list[str],
    env: list[dict[str, Any]],
    requests: dict[str, str],
    limits: dict[str, str],
    takes_slot: bool = True,
) -> dict[str, Any]:
    """A pod of the account's (restarted by the kubelet when it crashes: each role resumes from its own state)."""
    return worker_pod(
        kind=DATABASE_ACCOUNT,
        owner_name=o.meta.name,
        owner_uid=o.meta.uid,
        namespace=o.meta.namespace,
        role=role,
        name=name,
        image=o.workers.image,
        service_account=o.workers.service_account,
        args=args,
        env=env,
        requests=requests,
        limits=limits,
        restart_policy="Always",
        takes_slot=takes_slot,
        instance=o.workers.instance,
        identity=o.workers.identity_mount(),
        storage_ca_file=o.workers.storage_ca_file,
    )


def monitor_manifest(o: Observed) -> dict[str, Any]:
    args = [*_command(o, MONITOR_ROLE), "--poll-interval", o.spec.region_poll_interval]
    name = pod_name(o.meta.name, MONITOR_ROLE, 0)
    sized = o.workers.resources.monitor
    env = account_env(o.spec, annotations=o.workers.service_account_annotations)
    return _account_pod(o, MONITOR_ROLE, name, args, env, sized.requests, sized.limits, takes_slot=False)


def copy_instance_manifest(o: Observed, index: int) -> dict[str, Any]:
    """A copy instance; while a cross-account job runs, also with its source account's endpoint and key (so the
    pods are replaced when such a job starts and after it)."""
    env = account_env(o.spec, annotations=o.workers.service_account_annotations)
    if o.copy_source is not None:
        env.append({"name": SOURCE_ACCOUNT_NAME_ENV, "value": o.copy_source.name})
        env += account_env(o.copy_source.spec, SOURCE_ACCOUNT_ENV_PREFIX, o.workers.service_account_annotations)
    return _instance_pod(o, COPY_ROLE, index, [], env)


def restore_instance_manifest(o: Observed, index: int) -> dict[str, Any]:
    location = backup_location(o)
    assert location is not None  # restores run only on accounts with continuous backup
    args = ["--backup-container", location[0], "--backup-prefix", location[1]]
    env = account_env(o.spec, annotations=o.workers.service_account_annotations) + backup_env(o)
    return _instance_pod(o, RESTORE_ROLE, index, args, env)


def _command(o: Observed, role: str) -> list[str]:
    return [DATABASE_ACCOUNT.singular, role, "--namespace", o.meta.namespace, "--name", o.meta.name]


def _instance_pod(o: Observed, role: str, index: int, options: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy or restore instance: sized by copyInstances, resuming from its checkpoints after a crash."""
    resources = o.spec.copy_instances.resources
    amounts = {"cpu": resources.cpu, "memory": resources.memory}
    name = pod_name(o.meta.name, role, index)
    return _account_pod(o, role, name, [*_command(o, role), *options], env, amounts, dict(amounts))


def backup_env(o: Observed) -> list[dict[str, Any]]:
    """The backup location: its connection string only as a Secret reference resolved by the kubelet, or its blob
    endpoint and identity."""
    assert o.spec.backup.location is not None
    return storage_env(o.spec.backup.location.account, BACKUP_ENV_PREFIX, o.workers.service_account_annotations)


def backup_location(o: Observed) -> tuple[str, str] | None:
    """(container, prefix) of the account's backup, when continuous backup is on."""
    location = o.spec.backup.location
    if o.spec.backup.mode != BackupMode.CONTINUOUS or location is None:
        return None
    prefix = location.prefix if location.prefix is not None else f"{o.meta.namespace}/{o.meta.name}"
    return location.container, prefix


def retention(o: Observed) -> str:
    """The tier's retention; the annotation's, where the operator is set to allow it (tests and demos)."""
    override = o.annotations.get(RETENTION_OVERRIDE) if o.workers.allow_backup_retention_override else None
    if override and re.fullmatch(DURATION_PATTERN, override):
        return override
    assert o.spec.backup.tier is not None
    return RETENTION[o.spec.backup.tier]


def backup_manifest(o: Observed) -> dict[str, Any]:
    """The capture pod: a killed capture resumes from the cursor committed in the backup location."""
    location = backup_location(o)
    assert location is not None
    args = _command(o, BACKUP_ROLE)
    args += ["--interval", o.spec.backup.capture_interval, "--retention", retention(o)]
    args += ["--deletion-sweep-interval", o.spec.backup.deletion_sweep_interval]
    args += ["--container", location[0], "--prefix", location[1]]
    env = account_env(o.spec, annotations=o.workers.service_account_annotations) + backup_env(o)
    name = pod_name(o.meta.name, BACKUP_ROLE, 0)
    sized = o.workers.resources.backup
    return _account_pod(o, BACKUP_ROLE, name, args, env, sized.requests, sized.limits, takes_slot=False)


READY_REASONS = {
    ConnectionState.CONNECTED: "Connected",
    ConnectionState.UNAUTHORIZED: "Unauthorized",
    ConnectionState.INVALID_CREDENTIALS: "InvalidCredentials",
    ConnectionState.LOCAL_AUTH_DISABLED: "LocalAuthDisabled",
    ConnectionState.IDENTITY_NOT_FEDERATED: "IdentityNotFederated",
    ConnectionState.FORBIDDEN: "Forbidden",
    ConnectionState.UNREACHABLE: "Unreachable",
}


def _capture_interval_seconds(account: Mapping[str, Any]) -> float | None:
    """spec.backup.captureInterval in seconds; None when unset or unreadable (a scrape must never fail on it)."""
    text = ((account.get("spec") or {}).get("backup") or {}).get("captureInterval")
    try:
        return parse_duration(str(text)).total_seconds() if text else None
    except ValueError:
        return None


# Causes of a pod not running that keep their own reason in a condition; any other is the pod's failing.
OWN_REASONS = frozenset({"SecretNotFound", "Unschedulable"})
NEEDS_THE_USER = frozenset(
    {
        "Unauthorized",
        "InvalidCredentials",
        "LocalAuthDisabled",
        "IdentityNotFederated",
        "IdentityNotConfigured",
        "Forbidden",
        "SecretNotFound",
        "MonitorFailing",
    }
)


def decide(o: Observed) -> Plan:
    state = o.state.model_copy(deep=True)
    plan = Plan(status=state)
    state.observed_generation = o.meta.generation
    if o.backup.backup is not None and o.backup.backup.versions_captured is not None:
        plan.progress = {BACKUP_VERSIONS_METRIC: o.backup.backup.versions_captured}
    if o.meta.deleting:
        return plan  # its pods are owned by it and garbage collected with it
    _monitor(o, state, plan)
    _regions(o, state, plan)
    _backup(o, state, plan)
    state.active_copy_job = o.queue.running[0] if o.queue.running else None
    state.queued_copy_jobs = list(o.queue.waiting) or None
    state.active_restores = list(o.restores.running) or None
    state.queued_restores = list(o.restores.waiting) or None
    busy = _copying(o.queue, o.copy_source, o.copy_source_missing)
    copying = _instances(o, plan, COPY_POOL, busy, o.instance_pods, state.idle_since, o.instance_slots)
    state.instances, state.idle_since = copying.pods, copying.idle_since
    restoring = _instances(
        o, plan, RESTORE_POOL, bool(o.restores.running), o.restorer_pods, state.restore_idle_since, copying.budget
    )
    state.restore_instances, state.restore_idle_since = restoring.pods, restoring.idle_since
    _instances_ready(o, state, plan, copying.problems + restoring.problems)
    return plan


def _instances_ready(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan, problems: list[PodProblem]) -> None:
    """InstancesReady: False, with the cause, while an instance the account's jobs wait for cannot run."""
    before = condition(state.conditions, "InstancesReady")
    if problems:
        problem = problems[0]
        reason = "Unschedulable" if problem.reason == "Unschedulable" else "InstanceCannotStart"
        ok, message = False, f"instance {problem.pod} cannot run: {problem.message}"
    elif state.instances or state.restore_instances:
        ok, reason, message = True, "Running", "the instances are running"
    elif before is None:
        return  # no instance has been needed yet
    else:
        ok, reason, message = True, "Idle", "no instances are needed"
    state.conditions = set_condition(state.conditions, "InstancesReady", ok, reason, message, o.meta.generation, o.now)
    if ok is False and (before is None or (before.reason, before.message) != (reason, message)):
        plan.events.append(Event(reason, message, warning=True))


def _set_ready(
    o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan, ok: bool | None, reason: str, message: str
) -> None:
    before = condition(state.conditions, "Ready")
    # Refused keys and missing Secrets need the user; an unreachable endpoint may come back on its own.
    activity = Activity.IDLE if ok else Activity.STALLED if reason in NEEDS_THE_USER else Activity.RECONCILING
    state.conditions = set_health(state.conditions, ok, activity, reason, message, o.meta.generation, o.now)
    if before is None or (before.reason, before.message) != (reason, message):
        plan.events.append(Event(reason, message, warning=ok is False))


def _monitor(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan) -> None:
    manifest = monitor_manifest(o)
    wanted = ServicePod(manifest["metadata"]["name"], manifest["metadata"]["labels"][LABEL_TEMPLATE], False)
    result = service_workers([wanted], o.monitor_pods)
    plan.delete.extend(result.delete)
    plan.create.extend(PodCreation(manifest, takes_slot=False) for _ in result.start)
    connection = o.observation.connection
    if result.problems:
        problem = result.problems[0]
        reason = problem.reason if problem.reason in OWN_REASONS else "MonitorFailing"
        _set_ready(o, state, plan, False, reason, f"the account monitor cannot run: {problem.message}")
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
        message = message.replace("incomplete copy jobs", "incomplete copy jobs and restores")
        plan.events.append(Event("WriteRegionChanged", message, warning=True))
        plan.counts.append(Count(REGION_CHANGES_METRIC))
    state.observed_write_region = region


def _set_backup_health(
    o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan, ok: bool | None, reason: str, message: str
) -> None:
    before = condition(state.conditions, "BackupHealthy")
    state.conditions = set_condition(state.conditions, "BackupHealthy", ok, reason, message, o.meta.generation, o.now)
    if before is None or (before.reason, before.message) != (reason, message):
        plan.events.append(Event(f"Backup{reason}" if ok is False else reason, message, warning=ok is False))


def _backup(o: Observed, state: DatabaseAccountOperatorStatus, plan: Plan) -> None:
    """The capture pod while continuous backup is on, and BackupHealthy from what it reports."""
    if backup_location(o) is None:
        plan.delete.extend(service_workers([], [p for p in o.backup_pods if not p.deleting]).delete)
        state.conditions = without_condition(state.conditions, "BackupHealthy")
        return
    manifest = backup_manifest(o)
    wanted = ServicePod(manifest["metadata"]["name"], manifest["metadata"]["labels"][LABEL_TEMPLATE], False)
    result = service_workers([wanted], o.backup_pods)
    plan.delete.extend(result.delete)
    plan.create.extend(PodCreation(manifest, takes_slot=False) for _ in result.start)
    report = o.backup.backup
    last = report.last_capture_time if report else None
    interval = parse_duration(o.spec.backup.capture_interval).total_seconds()
    stall_after = STALL_INTERVALS * interval + STALL_MARGIN_SECONDS
    window = ""
    if o.backup.earliest_restorable_time and o.backup.latest_restorable_time:
        window = f"restorable from {when(o.backup.earliest_restorable_time)} to {when(o.backup.latest_restorable_time)}"
    if result.problems:
        problem = result.problems[0]
        reason = problem.reason if problem.reason in OWN_REASONS else "CapturePodFailing"
        _set_backup_health(o, state, plan, False, reason, f"the capture pod cannot run: {problem.message}")
    elif report is not None and report.error is not None:
        _set_backup_health(o, state, plan, False, report.error.reason, report.error.message)
    elif last is None:
        _set_backup_health(o, state, plan, None, "Starting", "waiting for the first capture")
        plan.after(stall_after)
    elif (o.now - last).total_seconds() > stall_after:
        message = (
            f"no capture since {when(last)} (interval {o.spec.backup.capture_interval}): is the capture pod running?"
        )
        _set_backup_health(o, state, plan, False, "CaptureStalled", message)
    else:
        plan.after(stall_after - (o.now - last).total_seconds())
        gaps = report.gaps if report is not None else None
        if gaps:
            spans = "; ".join(f"{when(g.start)} to {when(g.end)}" for g in gaps)
            message = (
                f"capturing, but the window has gaps without captures ({spans}): restores to a time in them are refused"
            )
            _set_backup_health(o, state, plan, False, "GapInWindow", message)
        else:
            _set_backup_health(o, state, plan, True, "Capturing", window or f"last capture {when(last)}")


@dataclass(frozen=True)
class Pool:
    """One of the account's instance pools: copy instances or restore instances."""

    role: str  # "copy" or "restore"
    manifest: Callable[[Observed, int], dict[str, Any]]


COPY_POOL = Pool(COPY_ROLE, copy_instance_manifest)
RESTORE_POOL = Pool(RESTORE_ROLE, restore_instance_manifest)


@dataclass(frozen=True)
class PoolState:
    pods: list[str] | None
    idle_since: datetime | None
    budget: int  # slots left for the next pool
    problems: list[PodProblem]  # why its pods cannot run


def _instances(
    o: Observed,
    plan: Plan,
    pool: Pool,
    busy: bool,
    pods: tuple[PodView, ...],
    idle_since: datetime | None,
    budget: int,
) -> PoolState:
    """Start the pool's pods while it has work, remove them after the idle timeout."""
    active = [p for p in pods if not p.deleting]
    problems: list[PodProblem] = []
    if busy:
        idle_since = None
        existing = {p.name for p in active}
        wanted: list[tuple[ServicePod, dict[str, Any]]] = []
        for index in range(o.spec.copy_instances.count):
            manifest = pool.manifest(o, index)
            name = manifest["metadata"]["name"]
            if name not in existing:
                if budget <= 0:
                    plan.wants_slot = True
                    continue
                budget -= 1
            wanted.append((ServicePod(name, manifest["metadata"]["labels"][LABEL_TEMPLATE], True), manifest))
        result = service_workers([w for w, _ in wanted], pods)
        manifests = {w.name: m for w, m in wanted}
        problems = result.problems
        plan.delete.extend(result.delete)
        for pod in result.start:
            plan.create.append(PodCreation(manifests[pod.name]))
            plan.events.append(Event("InstanceStarted", f"started {pool.role} instance {pod.name}"))
    elif active:
        idle_since = idle_since or o.now
        left = (idle_since + parse_duration(o.spec.idle_timeout) - o.now).total_seconds()
        if left > 0:
            plan.after(left)
        else:
            plan.delete.extend(service_workers([], active).delete)
            plan.events.append(
                Event("InstancesRemoved", f"no work for {o.spec.idle_timeout}; {pool.role} instances removed")
            )
            idle_since = None
    else:
        idle_since = None
    deleted = {d.name for d in plan.delete}
    names = {p.name for p in pods if not p.deleting and p.name not in deleted}
    names |= {
        c.name for c in plan.create if c.takes_slot and c.manifest["metadata"]["labels"].get(LABEL_ROLE) == pool.role
    }
    return PoolState(sorted(names) or None, idle_since, budget, problems)
