"""The DatabaseAccount decision and the account's job queue, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from builders import NOW, WORKERS, job_body, later, meta, pod

from ferry.api.databaseaccount import (
    AccountObservation,
    BackupMode,
    BackupObservation,
    DatabaseAccountOperatorStatus,
    DatabaseAccountSpec,
)
from ferry.kinds.databaseaccount.controller import (
    BACKUP_ROLE,
    COPY_ROLE,
    MONITOR_ROLE,
    CopySource,
    Observed,
    backup_location,
    backup_manifest,
    copy_instance_manifest,
    decide,
    monitor_manifest,
)
from ferry.kinds.databaseaccount.metrics import REGION_CHANGES_METRIC
from ferry.runtime.objects import condition
from ferry.runtime.pods import PodView
from ferry.transfer.account_queue import BackupView, copy_jobs, restores

SPEC = {
    "endpoint": "https://shop.documents.azure.com:443/",
    "credentials": {"secretRef": {"name": "key", "key": "primaryKey"}},
    "copyInstances": {"count": 2},
    "idleTimeout": "60s",
}
CONNECTED = {
    "writeRegion": "West US",
    "readRegions": ["West US"],
    "connection": {"state": "Connected", "message": "write region West US"},
}


@dataclass
class Case:
    name: str
    state: dict[str, Any] = field(default_factory=dict)
    observation: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    monitor: bool = True  # a healthy monitor pod runs
    monitor_pods: list[PodView] | None = None
    instances: list[PodView] = field(default_factory=list)
    backup: dict[str, Any] = field(default_factory=dict)  # what the capture pod reports
    backup_pods: list[PodView] | None = None  # None: a healthy capture pod runs where backup is on
    restores: list[dict[str, Any]] = field(default_factory=list)
    restorers: list[PodView] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    slots: int = 2
    # expectations
    ready: str | None = None  # the Ready condition's reason
    active: str | None = None
    queued: list[str] | None = None
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)
    requeue: float | None = None
    wants_slot: bool = False


def observe(case: Case) -> Observed:
    spec = DatabaseAccountSpec.model_validate({**SPEC, **case.spec})
    observation = AccountObservation.model_validate(case.observation)
    backup = BackupObservation.model_validate(case.backup)
    view = BackupView(
        observation.write_region, spec.backup.mode == BackupMode.CONTINUOUS, backup.latest_restorable_time
    )
    bare = Observed(
        meta=meta("acct"),
        spec=spec,
        state=DatabaseAccountOperatorStatus.model_validate(case.state),
        observation=observation,
        backup=backup,
        annotations=case.annotations,
        monitor_pods=(),
        backup_pods=(),
        instance_pods=tuple(case.instances),
        restorer_pods=tuple(case.restorers),
        queue=copy_jobs(case.jobs, observation.write_region),
        restores=restores(case.restores, view),
        instance_slots=case.slots,
        now=NOW,
        workers=WORKERS,
    )
    monitor = monitor_manifest(bare)["metadata"]
    pods = case.monitor_pods
    if pods is None:
        template = monitor["labels"]["ferry.dev/template"]
        pods = [pod(monitor["name"], MONITOR_ROLE, template=template)] if case.monitor else []
    capture = case.backup_pods
    if capture is None:
        capture = []
        if backup_location(bare) is not None:
            labels = backup_manifest(bare)["metadata"]
            capture = [pod(labels["name"], BACKUP_ROLE, template=labels["labels"]["ferry.dev/template"])]
    return Observed(**{**bare.__dict__, "monitor_pods": tuple(pods), "backup_pods": tuple(capture)})


def monitor(**fields: Any) -> PodView:
    labels = monitor_manifest(observe(Case("-", monitor=False)))["metadata"]
    return pod(labels["name"], MONITOR_ROLE, "Pending", template=labels["labels"]["ferry.dev/template"], **fields)


def instance(index: int, **fields: Any) -> PodView:
    labels = copy_instance_manifest(observe(Case("-")), index)["metadata"]
    return pod(labels["name"], COPY_ROLE, template=labels["labels"]["ferry.dev/template"], **fields)


BACKUP = {
    "backup": {
        "mode": "Continuous",
        "tier": "Continuous7Days",
        "captureInterval": "10s",
        "location": {"account": {"secretRef": {"name": "store", "key": "cs"}}, "container": "backups"},
    }
}
CAPTURED = {
    "earliestRestorableTime": later(-3600).isoformat(),
    "latestRestorableTime": later(-6).isoformat(),
    "backup": {"lastCaptureTime": later(-5).isoformat()},
}


def restore_body(name: str, revision: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": revision,
                     "creationTimestamp": "2026-11-21T12:00:00Z"},
        "spec": {"accountRef": {"name": "acct"}, "database": "db", "container": name},
        "status": status or {},
    }  # fmt: skip


def capture(**fields: Any) -> PodView:
    labels = backup_manifest(observe(Case("-", spec=BACKUP, backup_pods=[])))["metadata"]
    return pod(labels["name"], BACKUP_ROLE, "Pending", template=labels["labels"]["ferry.dev/template"], **fields)


CASES = [
    Case(
        "a new account gets its monitor and waits for its first report",
        monitor=False,
        ready="Connecting",
        created=["acct-monitor-0"],
        events=["Connecting"],
    ),
    Case(
        "a monitor that cannot start for a missing Secret makes the account not Ready, with the reason",
        state={"conditions": []},
        monitor_pods=[monitor(waiting_reason="CreateContainerConfigError", waiting_message='secret "key" not found')],
        ready="SecretNotFound",
        events=["SecretNotFound"],
    ),
    Case(
        "a monitor no node can take makes the account not Ready, with the scheduler's words",
        state={"conditions": []},
        monitor_pods=[monitor(unschedulable="0/1 nodes are available: 1 Insufficient cpu.")],
        ready="Unschedulable",
        events=["Unschedulable"],
    ),
    Case(
        "the monitor's report makes the account Ready",
        observation=CONNECTED,
        ready="Connected",
        events=["Connected"],
    ),
    Case(
        "a refused key is the Ready condition's reason",
        observation={"connection": {"state": "Unauthorized", "message": "the account rejected the key (401)"}},
        ready="Unauthorized",
        events=["Unauthorized"],
    ),
    Case(
        "the first write region seen is recorded without an alarm",
        observation=CONNECTED,
        ready="Connected",
        events=["Connected"],
    ),
    Case(
        "a changed write region is an Event and a metric, once",
        state={"observedWriteRegion": "East US"},
        observation=CONNECTED,
        ready="Connected",
        events=["Connected", "WriteRegionChanged"],
        counts=[REGION_CHANGES_METRIC],
    ),
    Case(
        "jobs run in creation order, the instances start for the first",
        observation=CONNECTED,
        jobs=[job_body("b", revision="7"), job_body("a", revision="9")],
        ready="Connected",
        active="b",
        queued=["a"],
        created=["acct-copy-0", "acct-copy-1"],
        events=["Connected", "InstanceStarted", "InstanceStarted"],
    ),
    Case(
        "with one slot free, one instance starts and the account waits for the other",
        observation=CONNECTED,
        jobs=[job_body("b")],
        slots=1,
        ready="Connected",
        active="b",
        created=["acct-copy-0"],
        events=["Connected", "InstanceStarted"],
        wants_slot=True,
    ),
    Case(
        "instances without work wait for the idle timeout",
        observation=CONNECTED,
        instances=[instance(0), instance(1)],
        ready="Connected",
        events=["Connected"],
        requeue=60.0,
    ),
    Case(
        "instances idle longer than the idle timeout are removed",
        state={"idleSince": later(-61).isoformat()},
        observation=CONNECTED,
        instances=[instance(0), instance(1)],
        ready="Connected",
        deleted=["acct-copy-0", "acct-copy-1"],
        events=["Connected", "InstancesRemoved"],
    ),
    Case(
        "suspended, finished and other-region jobs do not hold the instances",
        observation=CONNECTED,
        jobs=[
            job_body("s", suspend=True),
            job_body("f", status={"phase": "Succeeded"}),
            job_body("r", status={"writeRegion": "East US"}),
        ],
        ready="Connected",
        events=["Connected"],
    ),
    Case(
        "continuous backup starts the capture pod, which takes no slot",
        observation=CONNECTED,
        spec=BACKUP,
        backup_pods=[],
        ready="Connected",
        created=["acct-backup-0"],
        events=["Connected", "Starting"],
        requeue=90.0,  # three intervals and a margin: then the backup is stalled
    ),
    Case(
        "captures that come in keep the backup healthy",
        observation=CONNECTED,
        spec=BACKUP,
        backup=CAPTURED,
        ready="Connected",
        events=["Connected", "Capturing"],
        requeue=85.0,
    ),
    Case(
        "no capture for three intervals is a stall",
        observation=CONNECTED,
        spec=BACKUP,
        backup={**CAPTURED, "backup": {"lastCaptureTime": later(-91).isoformat()}},
        ready="Connected",
        events=["Connected", "BackupCaptureStalled"],
    ),
    Case(
        "a gap in the window is reported with where it is",
        observation=CONNECTED,
        spec=BACKUP,
        backup={
            **CAPTURED,
            "backup": {
                "lastCaptureTime": later(-5).isoformat(),
                "gaps": [{"start": later(-900).isoformat(), "end": later(-600).isoformat()}],
            },
        },
        ready="Connected",
        events=["Connected", "BackupGapInWindow"],
        requeue=85.0,
    ),
    Case(
        "a capture error is the reason",
        observation=CONNECTED,
        spec=BACKUP,
        backup={
            **CAPTURED,
            "backup": {
                "lastCaptureTime": later(-5).isoformat(),
                "error": {"reason": "LocationAccessDenied", "message": "403"},
            },
        },
        ready="Connected",
        events=["Connected", "BackupLocationAccessDenied"],
    ),
    Case(
        "a capture pod that cannot start for a missing Secret says so",
        observation=CONNECTED,
        spec=BACKUP,
        backup_pods=[capture(waiting_reason="CreateContainerConfigError", waiting_message='secret "store" not found')],
        ready="Connected",
        events=["Connected", "BackupSecretNotFound"],
    ),
    Case(
        "turning backup off removes the capture pod",
        observation=CONNECTED,
        backup_pods=[pod("acct-backup-0", BACKUP_ROLE)],
        ready="Connected",
        deleted=["acct-backup-0"],
        events=["Connected"],
    ),
    Case(
        "running restores start the restore instances, three at a time",
        observation=CONNECTED,
        spec=BACKUP,
        backup=CAPTURED,
        restores=[restore_body(f"r{i}", str(i)) for i in range(4)],
        ready="Connected",
        created=["acct-restore-0", "acct-restore-1"],
        events=["Connected", "Capturing", "InstanceStarted", "InstanceStarted"],
        requeue=85.0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decision(case: Case) -> None:
    plan = decide(observe(case))
    state = plan.status
    assert isinstance(state, DatabaseAccountOperatorStatus)
    ready = condition(state.conditions, "Ready")
    assert (ready.reason if ready else None) == case.ready
    assert state.active_copy_job == case.active
    assert state.queued_copy_jobs == case.queued
    assert [c.name for c in plan.create] == case.created
    assert sorted(d.name for d in plan.delete) == sorted(case.deleted)
    assert [e.reason for e in plan.events] == case.events
    assert [c.metric for c in plan.counts] == case.counts
    assert plan.requeue_after == case.requeue
    assert plan.wants_slot == case.wants_slot
    backup = condition(state.conditions, "BackupHealthy")
    assert (backup is not None) == ("backup" in case.spec)


def test_the_account_names_its_running_and_queued_restores() -> None:
    plan = decide(observe(CASES[-1]))
    assert isinstance(plan.status, DatabaseAccountOperatorStatus)
    assert plan.status.active_restores == ["r0", "r1", "r2"] and plan.status.queued_restores == ["r3"]
    assert all(c.takes_slot for c in plan.create)


def test_the_region_last_acted_on_is_kept_in_the_status() -> None:
    plan = decide(observe(CASES[5]))
    assert isinstance(plan.status, DatabaseAccountOperatorStatus)
    assert plan.status.observed_write_region == "West US"
    again = decide(Observed(**{**observe(CASES[5]).__dict__, "state": plan.status}))
    assert not again.counts and not again.events  # an operator restart does not count it again


def test_monitors_take_no_worker_slot_instances_do() -> None:
    plan = decide(observe(CASES[6]))
    monitor = monitor_manifest(observe(CASES[0]))
    assert monitor["metadata"]["labels"]["ferry.dev/slot"] == "false"
    assert all(c.takes_slot for c in plan.create)


def test_a_changed_poll_interval_replaces_the_monitor() -> None:
    case = Case("interval", spec={"regionPollInterval": "10s"}, observation=CONNECTED)
    stale = observe(Case("-")).monitor_pods
    plan = decide(Observed(**{**observe(case).__dict__, "monitor_pods": stale}))
    assert [d.name for d in plan.delete] == ["acct-monitor-0"] and not plan.create


def test_queue_order_is_creation_then_revision_not_name() -> None:
    jobs = [
        job_body("zeta", revision="10"),
        job_body("alpha", revision="11"),
        job_body("early", revision="99", created="2026-11-21T11:59:59Z"),
    ]
    order = copy_jobs(jobs, "West US")
    assert order.running == ("early",)
    assert order.waiting == ("zeta", "alpha")
    assert order.position("alpha") == 2


def test_the_revision_first_seen_wins_over_later_edits() -> None:
    """A job edited after it was first seen keeps its place: its first-seen revision is in its status."""
    jobs = [
        job_body("first", revision="50", status={"creationRevision": "10"}),
        job_body("second", revision="20"),
    ]
    assert copy_jobs(jobs, "West US").running == ("first",)


def test_an_instance_that_cannot_start_is_named_in_instances_ready_with_the_cause() -> None:
    refused = "the API server refused to create pod acct-copy-1: exceeded quota: q, requested: pods=1"
    case = Case(
        "-",
        observation=CONNECTED,
        jobs=[job_body("b")],
        instances=[instance(0), instance(1, phase="Pending", waiting_reason="FailedCreate", waiting_message=refused)],
    )
    plan = decide(observe(case))
    assert isinstance(plan.status, DatabaseAccountOperatorStatus)
    ready = condition(plan.status.conditions, "InstancesReady")
    assert ready is not None and ready.status == "False" and ready.reason == "InstanceCannotStart"
    assert "acct-copy-1" in ready.message and "exceeded quota" in ready.message
    assert [e.reason for e in plan.events if e.warning] == ["InstanceCannotStart"]
    assert plan.create == []  # the refused pod is tried again by the runtime, not doubled by the decision

    healthy = decide(
        observe(Case("-", observation=CONNECTED, jobs=[job_body("b")], instances=[instance(0), instance(1)]))
    )
    assert isinstance(healthy.status, DatabaseAccountOperatorStatus)
    running = condition(healthy.status.conditions, "InstancesReady")
    assert running is not None and running.status == "True"


def test_an_instance_no_node_can_take_is_unschedulable_in_instances_ready() -> None:
    case = Case(
        "-",
        observation=CONNECTED,
        jobs=[job_body("b")],
        instances=[
            instance(0),
            instance(1, phase="Pending", unschedulable="0/1 nodes are available: 1 Insufficient cpu."),
        ],
    )
    plan = decide(observe(case))
    assert isinstance(plan.status, DatabaseAccountOperatorStatus)
    ready = condition(plan.status.conditions, "InstancesReady")
    assert ready is not None and ready.status == "False" and ready.reason == "Unschedulable"
    assert "acct-copy-1" in ready.message and "Insufficient cpu" in ready.message
    assert plan.create == []  # it waits for room; it is not deleted or doubled
    assert plan.delete == []


SOURCE_SPEC = DatabaseAccountSpec.model_validate(
    {
        **SPEC,
        "endpoint": "https://orders.documents.azure.com:443/",
        "credentials": {"secretRef": {"name": "src-key", "key": "k"}},
    }
)


def cross_account(source: CopySource | None, missing: bool = False, instances: list[PodView] | None = None) -> Observed:
    base = observe(
        Case("-", observation=CONNECTED, jobs=[job_body("b", source_account="orders")], instances=instances or [])
    )
    return Observed(**{**base.__dict__, "copy_source": source, "copy_source_missing": missing})


def test_a_cross_account_job_gives_its_instances_the_source_endpoint_and_key_as_a_secret_reference() -> None:
    plan = decide(cross_account(CopySource("orders", SOURCE_SPEC, readable=True)))
    assert [c.name for c in plan.create] == ["acct-copy-0", "acct-copy-1"]
    env = {e["name"]: e for e in plan.create[0].manifest["spec"]["containers"][0]["env"]}
    assert env["FERRY_COSMOS_ENDPOINT"]["value"] == "https://shop.documents.azure.com:443/"
    assert env["FERRY_SOURCE_ACCOUNT"]["value"] == "orders"
    assert env["FERRY_SOURCE_COSMOS_ENDPOINT"]["value"] == "https://orders.documents.azure.com:443/"
    assert env["FERRY_SOURCE_COSMOS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "src-key", "key": "k", "optional": False}
    }
    assert "value" not in env["FERRY_SOURCE_COSMOS_KEY"]  # the operator never reads the key


def test_instances_of_a_same_account_job_are_replaced_when_a_cross_account_job_runs() -> None:
    plan = decide(cross_account(CopySource("orders", SOURCE_SPEC, readable=True), instances=[instance(0), instance(1)]))
    assert sorted(d.name for d in plan.delete) == ["acct-copy-0", "acct-copy-1"]


def test_no_instance_starts_while_the_source_account_is_missing_or_cannot_be_read() -> None:
    for observed in (cross_account(None, missing=True), cross_account(CopySource("orders", SOURCE_SPEC, False))):
        plan = decide(observed)
        assert plan.create == [] and not plan.wants_slot
        assert isinstance(plan.status, DatabaseAccountOperatorStatus) and plan.status.active_copy_job == "b"


IDENTITY = {"clientId": "11111111-2222-3333-4444-555555555555", "tenantId": "66666666-7777-8888-9999-000000000000"}


def test_an_account_with_a_workload_identity_gives_its_pods_the_token_and_ids_and_no_key() -> None:
    observed = observe(Case("-", spec={"credentials": {"workloadIdentity": IDENTITY}}, monitor=False))
    plan = decide(observed)
    monitor = next(c.manifest for c in plan.create if c.name == "acct-monitor-0")
    spec = monitor["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["FERRY_COSMOS_CLIENT_ID"] == env["AZURE_CLIENT_ID"] == IDENTITY["clientId"]
    assert env["FERRY_COSMOS_TENANT_ID"] == env["AZURE_TENANT_ID"] == IDENTITY["tenantId"]
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == "/var/run/secrets/azure/tokens/azure-identity-token"
    assert env["AZURE_AUTHORITY_HOST"] == WORKERS.identity_authority_host
    assert not any(name.endswith("_KEY") or name.endswith("_KEY_SECRET") for name in env)
    assert monitor["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    token = next(v for v in spec["volumes"] if v["name"] == "azure-identity-token")["projected"]["sources"][0]
    assert token["serviceAccountToken"] == {
        "audience": "api://AzureADTokenExchange",
        "expirationSeconds": 3600,
        "path": "azure-identity-token",
    }
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "azure-identity-token")
    assert mount == {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": True}


def test_an_account_with_a_key_has_no_identity_parts() -> None:
    plan = decide(observe(Case("-", monitor=False)))
    monitor = next(c.manifest for c in plan.create if c.name == "acct-monitor-0")
    assert "azure.workload.identity/use" not in monitor["metadata"]["labels"]
    assert [v["name"] for v in monitor["spec"]["volumes"]] == ["tmp"]
