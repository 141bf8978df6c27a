"""The DatabaseAccount decision and the account's job queue, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from builders import NOW, WORKERS, job_body, later, meta, pod

from ferry.api.databaseaccount import AccountObservation, DatabaseAccountOperatorStatus, DatabaseAccountSpec
from ferry.controllers.accountqueue import copy_jobs
from ferry.controllers.databaseaccount import (
    INSTANCE_ROLE,
    MONITOR_ROLE,
    Observed,
    decide,
    instance_manifest,
    monitor_manifest,
)
from ferry.metrics import REGION_CHANGES_METRIC
from ferry.runtime.objects import condition
from ferry.runtime.pods import PodView

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
    bare = Observed(
        meta=meta("acct"),
        spec=spec,
        state=DatabaseAccountOperatorStatus.model_validate(case.state),
        observation=observation,
        monitor_pods=(),
        instance_pods=tuple(case.instances),
        queue=copy_jobs(case.jobs, observation.write_region),
        instance_slots=case.slots,
        now=NOW,
        workers=WORKERS,
    )
    monitor = monitor_manifest(bare)["metadata"]
    pods = case.monitor_pods
    if pods is None:
        template = monitor["labels"]["ferry.dev/template"]
        pods = [pod(monitor["name"], MONITOR_ROLE, template=template)] if case.monitor else []
    return Observed(**{**bare.__dict__, "monitor_pods": tuple(pods)})


def monitor(**fields: Any) -> PodView:
    labels = monitor_manifest(observe(Case("-", monitor=False)))["metadata"]
    return pod(labels["name"], MONITOR_ROLE, "Pending", template=labels["labels"]["ferry.dev/template"], **fields)


def instance(index: int, **fields: Any) -> PodView:
    labels = instance_manifest(observe(Case("-")), index)["metadata"]
    return pod(labels["name"], INSTANCE_ROLE, template=labels["labels"]["ferry.dev/template"], **fields)


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
