"""The BlobCopy decision, case by case: what it observes in, what it intends out (no API, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from builders import NOW, WORKERS, finished, later, meta, outcome, pod

from ferry.api.blobcopy import BlobCopyOperatorStatus, BlobCopyPhase, BlobCopyProgress, BlobCopySpec, CopyStatus
from ferry.api.common import WorkerStatus
from ferry.api.outcome import OutcomeResult
from ferry.kinds.blobcopy.controller import CLEANUP_ROLE, COPY_ROLE, Observed, decide
from ferry.runtime.objects import condition
from ferry.runtime.pods import PodView

SPEC = {
    "source": {"account": {"secretRef": {"name": "src", "key": "cs"}}, "container": "abc", "blob": "a.bin"},
    "destination": {"account": {"secretRef": {"name": "dst", "key": "cs"}}, "container": "def"},
}
RETRY = outcome(OutcomeResult.RETRY, "ServiceBusy", "503 ServerBusy")


@dataclass
class Case:
    name: str
    state: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    pods: list[PodView] = field(default_factory=list)
    cleanup_pods: list[PodView] = field(default_factory=list)
    slot: bool = True
    slots: int | None = None  # worker slots free, where more than one matters
    helper_pods: list[PodView] = field(default_factory=list)
    finalizer: bool = True
    deleting: bool = False
    # expectations
    phase: str | None = None
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    finalizer_op: str | None = None
    events: list[str] = field(default_factory=list)
    requeue: float | None = None
    wants_slot: bool = False
    failure: str | None = None


def observe(case: Case) -> Observed:
    return Observed(
        meta=meta("x", finalizer=case.finalizer, deleting=case.deleting),
        spec=BlobCopySpec.model_validate({**SPEC, **case.spec}),
        state=BlobCopyOperatorStatus.model_validate(case.state),
        progress=BlobCopyProgress.model_validate(case.progress),
        copy_pods=tuple(case.pods),
        cleanup_pods=tuple(case.cleanup_pods),
        slots=case.slots if case.slots is not None else int(case.slot),
        helper_pods=tuple(case.helper_pods),
        now=NOW,
        workers=WORKERS,
    )


RUNNING = {"phase": "Running", "startTime": NOW.isoformat(), "worker": {"attempts": 1, "pod": "x-copy-1"}}

CASES = [
    Case(
        "a new copy with a free slot starts its worker, holding the finalizer first",
        finalizer=False,
        phase="Pending",
        created=["x-copy-1"],
        finalizer_op="add",
        events=["Accepted"],
    ),
    Case(
        "a new copy without a free slot waits in line and says so",
        finalizer=False,
        slot=False,
        phase="Pending",
        events=["Accepted"],
        wants_slot=True,
    ),
    Case(
        "a running worker makes the copy Running",
        state={**RUNNING, "phase": "Pending"},
        pods=[pod("x-copy-1", COPY_ROLE)],
        phase="Running",
        events=["Copying"],
    ),
    Case(
        "a worker that cannot start says why (a missing Secret) in a condition and an Event",
        state={**RUNNING, "phase": "Pending"},
        pods=[
            pod(
                "x-copy-1",
                COPY_ROLE,
                "Pending",
                waiting_reason="CreateContainerConfigError",
                waiting_message='secret "src" not found',
            )
        ],
        phase="Pending",
        events=["ConfigError"],
    ),
    Case(
        "a worker that succeeded completes the copy, is removed, and the finalizer goes",
        state=RUNNING,
        progress={"copyStatus": "success", "progress": "10/10", "bytesCopied": 10},
        pods=[finished("x-copy-1", COPY_ROLE, 0)],
        phase="Succeeded",
        deleted=["x-copy-1"],
        finalizer_op="remove",
        events=["Copied"],
    ),
    Case(
        "a skipped blob completes as Skipped",
        state=RUNNING,
        progress={"copyStatus": "skipped", "statusDescription": "skipped: destination exists and overwrite is Never"},
        pods=[finished("x-copy-1", COPY_ROLE, 0)],
        phase="Succeeded",
        deleted=["x-copy-1"],
        finalizer_op="remove",
        events=["Skipped"],
    ),
    Case(
        "a permanent failure carries the worker's reason and message and is not retried",
        state=RUNNING,
        progress={"copyStatus": "failed"},
        pods=[finished("x-copy-1", COPY_ROLE, 2, outcome(OutcomeResult.FAILED, "SourceNotFound", "no such blob"))],
        phase="Failed",  # the failed worker pod stays for `kubectl logs`
        finalizer_op="remove",
        events=["SourceNotFound"],
        failure="SourceNotFound",
    ),
    Case(
        "a transient failure is replaced after a backoff, with its cause in the status",
        state=RUNNING,
        progress={"copyStatus": "pending"},
        pods=[finished("x-copy-1", COPY_ROLE, 1, RETRY)],
        phase="Running",
        deleted=["x-copy-1"],
        events=["Retrying"],
        requeue=10.0,
    ),
    Case(
        "a worker killed without a word (OOM, SIGKILL) is replaced too, its log tail quoted",
        state=RUNNING,
        pods=[finished("x-copy-1", COPY_ROLE, 137, log="copying block 7")],
        phase="Running",
        deleted=["x-copy-1"],
        events=["Retrying"],
        requeue=10.0,
    ),
    Case(
        "the restart budget spent, the copy fails with the last cause",
        state={**RUNNING, "worker": {"attempts": 6, "pod": "x-copy-6", "restarts": 5}},
        progress={"copyStatus": "failed"},
        pods=[finished("x-copy-6", COPY_ROLE, 1, RETRY)],
        phase="Failed",
        finalizer_op="remove",
        events=["ServiceBusy"],
        failure="ServiceBusy",
    ),
    Case(
        "in backoff, nothing starts and the copy is looked at again when it ends",
        state={**RUNNING, "worker": {"attempts": 1, "restarts": 1, "retryTime": later(7).isoformat()}},
        phase="Running",
        requeue=7.0,
    ),
    Case(
        "after the backoff, the next worker gets the next name",
        state={**RUNNING, "worker": {"attempts": 1, "restarts": 1, "retryTime": later(-1).isoformat()}},
        phase="Running",
        created=["x-copy-2"],
    ),
    Case(
        "a vanished worker counts as a failure",
        state=RUNNING,
        phase="Running",
        events=["Retrying"],
        requeue=10.0,
    ),
    Case(
        "suspending stops the worker and shows Pausing until it is gone",
        state=RUNNING,
        spec={"suspend": True},
        pods=[pod("x-copy-1", COPY_ROLE)],
        phase="Pausing",
        deleted=["x-copy-1"],
        events=["Suspending"],
    ),
    Case(
        "a worker that stopped at its checkpoint leaves the copy Paused",
        state={**RUNNING, "phase": "Pausing"},
        spec={"suspend": True},
        pods=[finished("x-copy-1", COPY_ROLE, 3)],
        phase="Paused",
        deleted=["x-copy-1"],
        events=["Suspended"],
    ),
    Case(
        "resuming starts a new worker without counting a restart",
        state={**RUNNING, "phase": "Paused", "worker": {"attempts": 1}},
        phase="Pending",
        created=["x-copy-2"],
        events=["Resumed"],
    ),
    Case(
        "a finished copy is quiet",
        state={"phase": "Succeeded", "completionTime": NOW.isoformat(), "worker": {"attempts": 1}},
        finalizer=False,
        phase="Succeeded",
    ),
    Case(
        "a copy that failed with a copy still pending is cleaned up before the finalizer goes",
        state={**RUNNING, "worker": {"attempts": 6, "pod": "x-copy-6", "restarts": 5}},
        progress={"copyStatus": "pending"},
        pods=[finished("x-copy-6", COPY_ROLE, 137)],
        phase="Failed",
        created=["x-cleanup-1"],
        events=["WorkerFailed"],
        failure="WorkerFailed",
    ),
    Case(
        "deleting a copy that never started anything needs no cleanup pod",
        state={"phase": "Pending"},
        deleting=True,
        phase="Pending",
        finalizer_op="remove",
    ),
    Case(
        "deleting a finished copy needs no cleanup pod",
        state={"phase": "Succeeded", "worker": {"attempts": 1}},
        progress={"copyStatus": "success"},
        deleting=True,
        phase="Succeeded",
        finalizer_op="remove",
    ),
    Case(
        "deleting a running copy first stops its worker",
        state=RUNNING,
        progress={"copyStatus": "pending"},
        pods=[pod("x-copy-1", COPY_ROLE)],
        deleting=True,
        phase="Running",
        deleted=["x-copy-1"],
    ),
    Case(
        "once stopped, a pending copy is aborted by a cleanup pod",
        state=RUNNING,
        progress={"copyStatus": "pending"},
        pods=[finished("x-copy-1", COPY_ROLE, 3)],
        deleting=True,
        phase="Running",
        deleted=["x-copy-1"],
        created=["x-cleanup-1"],
    ),
    Case(
        "a finished cleanup lets the object go",
        state={**RUNNING, "worker": {"attempts": 1}, "cleanup": {"attempts": 1, "pod": "x-cleanup-1"}},
        progress={"copyStatus": "aborted"},
        cleanup_pods=[finished("x-cleanup-1", CLEANUP_ROLE, 0)],
        deleting=True,
        phase="Running",
        deleted=["x-cleanup-1"],
        finalizer_op="remove",
        events=["CleanedUp"],
    ),
    Case(
        "a cleanup that cannot start (its Secret is gone) gives up with a Warning, and deletion finishes",
        state={**RUNNING, "worker": {"attempts": 1}, "cleanup": {"attempts": 1, "pod": "x-cleanup-1"}},
        progress={"copyStatus": "pending"},
        cleanup_pods=[
            pod(
                "x-cleanup-1",
                CLEANUP_ROLE,
                "Pending",
                waiting_reason="CreateContainerConfigError",
                waiting_message='secret "dst" not found',
            )
        ],
        deleting=True,
        phase="Running",
        deleted=["x-cleanup-1"],
        finalizer_op="remove",
        events=["CleanupFailed"],
    ),
    Case(
        "a worker no node can take says so with the scheduler's words, and keeps its place",
        state={**RUNNING, "phase": "Pending"},
        pods=[pod("x-copy-1", COPY_ROLE, "Pending", unschedulable="0/1 nodes are available: 1 Insufficient cpu.")],
        phase="Pending",
        events=["Unschedulable"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decision(case: Case) -> None:
    plan = decide(observe(case))
    state = plan.status
    assert isinstance(state, BlobCopyOperatorStatus)
    assert (state.phase.value if state.phase else None) == case.phase
    assert [c.name for c in plan.create] == case.created
    assert sorted({d.name for d in plan.delete}) == sorted(case.deleted)
    assert plan.finalizer == case.finalizer_op
    assert [e.reason for e in plan.events] == case.events
    assert plan.requeue_after == case.requeue
    assert plan.wants_slot == case.wants_slot
    assert (state.failure.reason if state.failure else None) == case.failure


def test_a_finished_copy_writes_nothing_again() -> None:
    """Quiet: deciding again on the status it produced changes nothing, so nothing is written."""
    first = decide(observe(CASES[4]))
    assert isinstance(first.status, BlobCopyOperatorStatus)
    again = decide(
        Observed(
            **{
                **observe(CASES[4]).__dict__,
                "state": first.status,
                "copy_pods": (),
                "meta": meta("x", finalizer=False),
            }
        )
    )
    assert again.status is not None and again.status.wire() == first.status.wire()
    assert not (again.create or again.delete or again.events or again.finalizer or again.requeue_after)


def test_the_retry_message_names_the_cause_and_the_budget() -> None:
    plan = decide(observe(CASES[7]))
    assert isinstance(plan.status, BlobCopyOperatorStatus)
    ready = condition(plan.status.conditions, "WorkerReady")
    assert ready is not None and ready.reason == "Retrying"
    assert "503 ServerBusy" in ready.message and "restart 1 of 5" in ready.message
    assert plan.status.worker == WorkerStatus(attempts=1, restarts=1, retry_time=later(10))


def test_the_failure_after_the_budget_says_so() -> None:
    plan = decide(observe(CASES[9]))
    assert isinstance(plan.status, BlobCopyOperatorStatus) and plan.status.failure is not None
    assert plan.status.failure.message == "503 ServerBusy; gave up after 5 restarts (spec.maxRetries)"
    assert plan.status.phase == BlobCopyPhase.FAILED


def test_a_killed_worker_is_explained_with_its_exit_code_and_log() -> None:
    plan = decide(observe(CASES[8]))
    assert isinstance(plan.status, BlobCopyOperatorStatus)
    ready = condition(plan.status.conditions, "WorkerReady")
    assert ready is not None
    assert "exited with code 137" in ready.message and "copying block 7" in ready.message


def test_skipped_copies_say_so_in_the_complete_condition() -> None:
    plan = decide(observe(CASES[5]))
    assert isinstance(plan.status, BlobCopyOperatorStatus)
    complete = condition(plan.status.conditions, "Complete")
    assert complete is not None and complete.reason == "Skipped" and "overwrite is Never" in complete.message
    assert CopyStatus.SKIPPED == "skipped"


# A prefix copy spread over several worker pods: the coordinator (index 0) and helpers (index 1 up).

PREFIX = {"source": {**SPEC["source"], "blob": None, "prefix": "p/"}}
SPREAD = {**PREFIX, "workers": 3}
COORDINATING = {**RUNNING, "worker": {"attempts": 1, "pod": "x-copy-1"}}
HELPING = {
    **COORDINATING,
    "helpers": [{"index": 1, "attempts": 1, "pod": "x-copy-1-1"}, {"index": 2, "attempts": 1, "pod": "x-copy-2-1"}],
}


def helper(name: str, index: int, phase: str = "Running") -> PodView:
    return pod(name, COPY_ROLE, phase, index=index)


def coordinator(phase: str = "Running") -> PodView:
    return pod("x-copy-1", COPY_ROLE, phase, index=0)


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}


def test_a_spread_copy_starts_its_coordinator_and_helpers_each_with_its_index() -> None:
    plan = decide(observe(Case("", spec=SPREAD, finalizer=False, slots=3)))
    assert [c.name for c in plan.create] == ["x-copy-1", "x-copy-1-1", "x-copy-2-1"]
    assert [c.manifest["metadata"]["labels"]["ferry.dev/worker-index"] for c in plan.create] == ["0", "1", "2"]
    assert [env_of(c.manifest)["FERRY_WORKER_INDEX"] for c in plan.create] == ["0", "1", "2"]
    assert all(c.takes_slot for c in plan.create) and not plan.wants_slot
    assert isinstance(plan.status, BlobCopyOperatorStatus) and plan.status.helpers is not None
    assert [(h.index, h.pod) for h in plan.status.helpers] == [(1, "x-copy-1-1"), (2, "x-copy-2-1")]


def test_one_worker_builds_the_pod_as_before_without_an_index() -> None:
    plan = decide(observe(Case("", spec=PREFIX, finalizer=False, slots=1)))
    (created,) = plan.create
    assert "ferry.dev/worker-index" not in created.manifest["metadata"]["labels"]
    assert "FERRY_WORKER_INDEX" not in env_of(created.manifest)


def test_a_single_blob_copy_runs_one_worker_whatever_spec_workers_says() -> None:
    plan = decide(observe(Case("", spec={"workers": 3}, finalizer=False, slots=3)))
    assert [c.name for c in plan.create] == ["x-copy-1"]


def test_helpers_take_the_slots_left_and_the_others_wait_in_line() -> None:
    plan = decide(observe(Case("", spec=SPREAD, finalizer=False, slots=2)))
    assert [c.name for c in plan.create] == ["x-copy-1", "x-copy-1-1"]
    assert plan.wants_slot
    later_plan = decide(
        observe(
            Case(
                "",
                spec=SPREAD,
                state={**COORDINATING, "helpers": [{"index": 1, "attempts": 1, "pod": "x-copy-1-1"}]},
                pods=[coordinator()],
                helper_pods=[helper("x-copy-1-1", 1)],
                slots=1,
            )
        )
    )
    assert [c.name for c in later_plan.create] == ["x-copy-2-1"] and not later_plan.wants_slot


def test_no_helper_starts_before_the_coordinator_has_a_slot() -> None:
    plan = decide(observe(Case("", spec=SPREAD, finalizer=False, slots=0)))
    assert plan.create == [] and plan.wants_slot


def test_a_killed_helper_is_replaced_after_a_backoff_and_the_copy_runs_on() -> None:
    pods = [coordinator()]
    helpers = [helper("x-copy-2-1", 2)]  # x-copy-1-1 was deleted with --force
    plan = decide(observe(Case("", spec=SPREAD, state=HELPING, pods=pods, helper_pods=helpers, slots=1)))
    state = plan.status
    assert isinstance(state, BlobCopyOperatorStatus) and state.helpers is not None
    assert state.phase == BlobCopyPhase.RUNNING and plan.create == []
    assert state.helpers[0].restarts == 1 and state.helpers[0].retry_time == later(10)
    (retrying,) = [e for e in plan.events if e.reason == "WorkerRetrying"]
    assert retrying.warning and "x-copy-1-1 vanished" in retrying.message
    assert plan.requeue_after == 10
    observed = observe(Case("", spec=SPREAD, pods=pods, helper_pods=helpers, slots=1))
    after = decide(replace(observed, state=state, now=later(11)))
    assert [c.name for c in after.create] == ["x-copy-1-2"]


def test_a_helper_that_found_no_work_left_is_not_started_again() -> None:
    helpers = [replace(finished("x-copy-1-1", COPY_ROLE, 0), index=1), helper("x-copy-2-1", 2)]
    plan = decide(observe(Case("", spec=SPREAD, state=HELPING, pods=[coordinator()], helper_pods=helpers, slots=3)))
    assert isinstance(plan.status, BlobCopyOperatorStatus) and plan.status.helpers is not None
    assert plan.create == [] and [d.name for d in plan.delete] == ["x-copy-1-1"]
    assert plan.status.helpers[0].done and plan.status.helpers[0].pod is None
    again = observe(Case("", spec=SPREAD, pods=[coordinator()], helper_pods=helpers[1:], slots=3))
    assert decide(replace(again, state=plan.status)).create == []


def test_the_coordinators_success_ends_the_copy_and_removes_the_helpers() -> None:
    plan = decide(
        observe(
            Case(
                "",
                spec=SPREAD,
                state=HELPING,
                progress={"copyStatus": "success", "blobs": {"total": 9, "succeeded": 9}},
                pods=[finished("x-copy-1", COPY_ROLE, 0)],
                helper_pods=[helper("x-copy-1-1", 1), helper("x-copy-2-1", 2)],
            )
        )
    )
    assert isinstance(plan.status, BlobCopyOperatorStatus) and plan.status.phase == BlobCopyPhase.SUCCEEDED
    assert sorted(d.name for d in plan.delete) == ["x-copy-1", "x-copy-1-1", "x-copy-2-1"]
    assert plan.create == []


def test_suspending_stops_every_worker_and_pauses_once_all_are_gone() -> None:
    running = [helper("x-copy-1-1", 1), helper("x-copy-2-1", 2)]
    spec = {**SPREAD, "suspend": True}
    plan = decide(observe(Case("", spec=spec, state=HELPING, pods=[coordinator()], helper_pods=running)))
    assert sorted(d.name for d in plan.delete) == ["x-copy-1", "x-copy-1-1", "x-copy-2-1"]
    assert isinstance(plan.status, BlobCopyOperatorStatus) and plan.status.phase == BlobCopyPhase.PAUSING
    stopping = [replace(p, deleting=True) for p in running]
    only_helpers = decide(
        observe(Case("", spec=spec, state={**HELPING, "worker": {"attempts": 1}}, helper_pods=stopping))
    )
    assert isinstance(only_helpers.status, BlobCopyOperatorStatus)
    assert only_helpers.status.phase == BlobCopyPhase.PAUSING and only_helpers.create == []


def test_deletion_waits_for_every_worker_to_stop() -> None:
    stopping = [replace(helper("x-copy-1-1", 1), deleting=True)]
    plan = decide(
        observe(
            Case(
                "",
                spec=SPREAD,
                state={**HELPING, "worker": {"attempts": 1}},
                progress={"copyStatus": "pending"},
                helper_pods=stopping,
                deleting=True,
            )
        )
    )
    assert plan.finalizer is None and plan.create == []
