"""The ContainerCopyJob decision, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from builders import NOW, job_body, later, meta

from ferry.api.containercopyjob import ContainerCopyJobOperatorStatus, ContainerCopyJobSpec, ContainerCopyProgress
from ferry.cli.rerun import rerun_token
from ferry.kinds.containercopyjob.controller import AccountView, Observed, decide
from ferry.runtime.objects import condition
from ferry.transfer.account_queue import Queue, copy_jobs

ACCOUNT = AccountView(name="acct", write_region="West US", ready_message=None, instances_running=True)


@dataclass
class Case:
    name: str
    state: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    suspend: bool = False
    account: AccountView | None = ACCOUNT
    ahead: int = 0  # runnable jobs created before this one
    source: AccountView | None = None  # spec.source.accountRef's account (named "src" when `reads_from`)
    reads_from: bool = False
    # expectations
    phase: str | None = None
    position: int | None = None
    failure: str | None = None
    events: list[str] = field(default_factory=list)
    requeue: float | None = None


def observe(case: Case) -> Observed:
    me = job_body(
        "me",
        revision="100",
        suspend=case.suspend,
        status={**case.state, **case.progress},
        source_account="src" if case.reads_from else None,
    )
    earlier = [job_body(f"e{i}", revision=str(i)) for i in range(case.ahead)]
    region = case.account.write_region if case.account else None
    return Observed(
        meta=meta("me"),
        spec=ContainerCopyJobSpec.model_validate(me["spec"]),
        state=ContainerCopyJobOperatorStatus.model_validate(case.state),
        progress=ContainerCopyProgress.model_validate(case.progress),
        account=case.account,
        queue=copy_jobs([*earlier, me], region),
        now=NOW,
        source_account=case.source,
    )


RUNNING = {"phase": "Running", "writeRegion": "West US", "queuePosition": 0}
WORKING = {"transfer": {"state": "Running", "startTime": NOW.isoformat()}, "processedCount": 40, "totalCount": 100}

CASES = [
    Case(
        "a job whose account does not exist waits and says so",
        account=None,
        phase="Pending",
        events=["AccountNotFound"],
    ),
    Case(
        "a job waits for its account's write region, with the account's own reason",
        account=AccountView("acct", None, "the account rejected the key (401)", False),
        phase="Pending",
        events=["WaitingForAccount"],
    ),
    Case(
        "the first job of the queue waits for the instances to start",
        account=AccountView("acct", "West US", None, False),
        phase="Pending",
        position=0,
        events=["StartingInstances"],
    ),
    Case("a later job is Queued with its place", ahead=2, phase="Queued", position=2, events=["Queued"]),
    Case(
        "the instances' report that they copy makes the job Running",
        state={"phase": "Pending", "writeRegion": "West US"},
        progress=WORKING,
        phase="Running",
        position=0,
        events=["Copying"],
    ),
    Case(
        "the instances' record of success completes the job",
        state=RUNNING,
        progress={**WORKING, "transfer": {"state": "Succeeded", "completionTime": NOW.isoformat()}},
        phase="Succeeded",
        events=["Copied"],
    ),
    Case(
        "the instances' record of a failure fails the job with its reason",
        state=RUNNING,
        progress={"transfer": {"state": "Failed", "failure": {"reason": "ItemConflict", "message": "items a, b"}}},
        phase="Failed",
        failure="ItemConflict",
        events=["ItemConflict"],
    ),
    Case(
        "a changed write region fails an incomplete job",
        state=RUNNING,
        progress=WORKING,
        account=AccountView("acct", "East US", None, True),
        phase="Failed",
        failure="WriteRegionChanged",
        events=["WriteRegionChanged"],
    ),
    Case(
        "a suspended job shows Pausing while the instances still hold it",
        state=RUNNING,
        progress=WORKING,
        suspend=True,
        phase="Pausing",
        events=["Suspending"],
        requeue=20.0,
    ),
    Case(
        "the instances' record of the pause makes it Paused",
        state={
            **RUNNING,
            "phase": "Pausing",
            "conditions": [
                {
                    "type": "Suspended",
                    "status": "True",
                    "reason": "Suspended",
                    "lastTransitionTime": later(-3).isoformat(),
                }
            ],
        },
        progress={**WORKING, "transfer": {"state": "Paused"}},
        suspend=True,
        phase="Paused",
        events=["Suspended"],
    ),
    Case(
        "once every lease must have expired, a job still Pausing is Paused anyway",
        state={
            **RUNNING,
            "phase": "Pausing",
            "conditions": [
                {
                    "type": "Suspended",
                    "status": "True",
                    "reason": "Suspended",
                    "lastTransitionTime": later(-21).isoformat(),
                }
            ],
        },
        progress=WORKING,
        suspend=True,
        phase="Paused",
        events=["Suspended"],
    ),
    Case("a finished job is quiet", state={"phase": "Succeeded"}, progress=WORKING, phase="Succeeded"),
    Case(
        "a cross-account job whose source account does not exist waits and names the field",
        reads_from=True,
        phase="Pending",
        events=["SourceAccountNotFound"],
    ),
    Case(
        "a cross-account job waits for its source account's write region",
        reads_from=True,
        source=AccountView("src", None, "the account monitor has not reported yet", False),
        phase="Pending",
        events=["WaitingForAccount"],
    ),
    Case(
        "a source account whose key is refused fails the job with the source's reason",
        reads_from=True,
        source=AccountView("src", "East US", "the account rejected the key (401)", False, "Unauthorized"),
        phase="Failed",
        failure="Unauthorized",
        events=["Unauthorized"],
    ),
    Case(
        "an unreachable source account does not fail the job: it may come back",
        reads_from=True,
        source=AccountView("src", "East US", "https://src:8081/ is unreachable", False, "Unreachable"),
        state={**RUNNING, "sourceWriteRegion": "East US"},
        progress=WORKING,
        phase="Running",
        position=0,
        events=["Copying"],
    ),
    Case(
        "a cross-account job runs in its own account's queue once its source is readable",
        reads_from=True,
        source=AccountView("src", "East US", None, False),
        ahead=1,
        phase="Queued",
        position=1,
        events=["Queued"],
    ),
    Case(
        "a change of the source account's write region fails an incomplete job, naming that account",
        reads_from=True,
        source=AccountView("src", "West Europe", None, False),
        state={**RUNNING, "sourceWriteRegion": "East US"},
        progress=WORKING,
        phase="Failed",
        failure="WriteRegionChanged",
        events=["WriteRegionChanged"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decision(case: Case) -> None:
    plan = decide(observe(case))
    state = plan.status
    assert isinstance(state, ContainerCopyJobOperatorStatus)
    assert (state.phase.value if state.phase else None) == case.phase
    assert state.queue_position == case.position
    assert (state.failure.reason if state.failure else None) == case.failure
    assert [e.reason for e in plan.events] == case.events
    assert plan.requeue_after == case.requeue
    assert not plan.create and not plan.delete  # the account's instances do the work


def test_the_write_region_and_revision_are_recorded_when_first_queued() -> None:
    plan = decide(observe(CASES[3]))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert plan.status.write_region == "West US"
    assert plan.status.creation_revision == "100"


def test_the_start_time_is_the_instances_start() -> None:
    plan = decide(observe(CASES[4]))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert plan.status.start_time == NOW


def test_failures_name_the_account_they_come_from() -> None:
    by_case = {c.name: c for c in CASES}
    moved = decide(
        observe(by_case["a change of the source account's write region fails an incomplete job, naming that account"])
    )
    refused = decide(observe(by_case["a source account whose key is refused fails the job with the source's reason"]))
    own = decide(observe(by_case["a changed write region fails an incomplete job"]))
    messages = [
        p.status.failure.message
        for p in (moved, refused, own)
        if isinstance(p.status, ContainerCopyJobOperatorStatus) and p.status.failure
    ]
    assert len(messages) == 3
    assert 'account "src" changed from East US to West Europe' in messages[0]
    assert 'source account "src" cannot be read: the account rejected the key (401)' in messages[1]
    assert 'account "acct" changed from West US to East US' in messages[2]


def test_the_source_write_region_is_recorded_when_first_queued() -> None:
    case = next(c for c in CASES if c.name.startswith("a cross-account job runs in its own account's queue"))
    plan = decide(observe(case))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert (plan.status.write_region, plan.status.source_write_region) == ("West US", "East US")


def test_a_waiting_message_repeats_nothing() -> None:
    """Deciding again on its own status writes nothing and sends no second Event."""
    first = decide(observe(CASES[3]))
    assert isinstance(first.status, ContainerCopyJobOperatorStatus)
    again = decide(Observed(**{**observe(CASES[3]).__dict__, "state": first.status}))
    assert again.status is not None and again.status.wire() == first.status.wire()
    assert not again.events
    ready = condition(first.status.conditions, "Complete")
    assert ready is not None and "waiting behind 2" in ready.message


def online(progress: dict[str, Any], state: dict[str, Any] | None = None) -> Observed:
    base = observe(Case("online", state=state or RUNNING, progress=progress))
    return Observed(**{**base.__dict__, "spec": base.spec.model_copy(update={"mode": "Online"})})


def test_an_online_job_is_caught_up_when_nothing_is_pending() -> None:
    behind = decide(online({**WORKING, "pendingChanges": 12, "secondsBehind": 3})).status
    assert isinstance(behind, ContainerCopyJobOperatorStatus)
    lag = condition(behind.conditions, "CaughtUp")
    assert lag is not None and lag.status == "False" and lag.reason == "Behind"
    assert "12 source changes" in lag.message and "3s behind" in lag.message

    caught_up = decide(online({**WORKING, "pendingChanges": 0, "secondsBehind": 0})).status
    assert isinstance(caught_up, ContainerCopyJobOperatorStatus)
    done = condition(caught_up.conditions, "CaughtUp")
    assert done is not None and done.status == "True" and done.reason == "CaughtUp"
    # An offline job, or one still copying, has no such condition.
    assert condition(decide(online(WORKING)).status.conditions, "CaughtUp") is None  # type: ignore[union-attr]


def test_an_online_job_that_cut_over_says_clients_can_move() -> None:
    finished = {**WORKING, "pendingChanges": 0, "transfer": {"state": "Succeeded", "startTime": NOW.isoformat()}}
    plan = decide(online(finished))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert plan.status.phase == "Succeeded"
    complete = condition(plan.status.conditions, "Complete")
    assert complete is not None and complete.reason == "CutOver"
    assert "safe to repoint clients" in complete.message


def test_the_verification_is_a_condition_and_a_difference_fails_the_job() -> None:
    good = {"mode": "Full", "sourceCount": 100, "destinationCount": 100}
    succeeded = {**WORKING, "verification": good, "transfer": {"state": "Succeeded", "startTime": NOW.isoformat()}}
    plan = decide(observe(Case("verified", state=RUNNING, progress=succeeded)))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    verified = condition(plan.status.conditions, "Verified")
    assert verified is not None and verified.status == "True" and verified.reason == "Verified"
    assert "holds the 100 expected items" in verified.message

    bad = {**good, "destinationCount": 101, "differing": 1, "extra": 1, "firstDifferences": ["a", "b"]}
    failure = {"reason": "VerificationFailed", "message": "the destination differs"}
    failed = {**WORKING, "verification": bad, "transfer": {"state": "Failed", "failure": failure}}
    plan = decide(observe(Case("differs", state=RUNNING, progress=failed)))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert plan.status.phase == "Failed" and plan.status.failure is not None
    assert plan.status.failure.reason == "VerificationFailed"
    differs = condition(plan.status.conditions, "Verified")
    assert differs is not None and differs.status == "False" and differs.reason == "Differs"
    assert "0 missing, 1 extra, 1 with other content (first: a, b)" in differs.message
    # Until the verification ran, there is no such condition.
    assert condition(decide(observe(CASES[4])).status.conditions, "Verified") is None  # type: ignore[union-attr]


FAILED_ON = {
    "phase": "Failed",
    "writeRegion": "West US",
    "startTime": later(-60).isoformat(),
    "completionTime": later(-5).isoformat(),
}


def rerun(
    reason: str | None, token: str = "2", before: dict[str, Any] | None = None, ran: int | None = None, **status: Any
) -> Observed:
    """A job asked to run again (ferry.dev/rerun = token); `ran`: the attempt the instances' record is of."""
    failure = {"failure": {"reason": reason, "message": f"{reason} happened"}} if reason else {}
    state = {**(before or FAILED_ON), **failure, **status}
    ended = {"processedCount": 40, "totalCount": 100, "transfer": {"state": "Failed", "attempt": ran}}
    base = observe(Case("rerun", state=state, progress=WORKING if before else ended))
    return Observed(**{**base.__dict__, "rerun": token})


def test_a_rerun_after_a_transient_failure_resumes_from_the_checkpoints_and_keeps_the_attempt() -> None:
    plan = decide(rerun("WorkerCrashed"))
    state = plan.status
    assert isinstance(state, ContainerCopyJobOperatorStatus)
    assert state.phase == "Pending" and state.failure is None and state.completion_time is None
    assert (state.attempt, state.record_id, state.last_rerun) == (2, None, "2")  # the same record: resumed
    assert state.attempts is not None and len(state.attempts) == 1
    first = state.attempts[0]
    assert (first.attempt, first.phase, first.reason, first.processed_count) == (1, "Failed", "WorkerCrashed", 40)
    assert first.completion_time == later(-5)
    assert [e.reason for e in plan.events] == ["Rerun"]
    said = condition(state.conditions, "Rerun")
    assert said is not None and said.status == "True" and "resumes from the checkpoints" in said.message


def test_a_rerun_after_a_region_change_starts_over_in_a_new_record() -> None:
    state = decide(rerun("WriteRegionChanged")).status
    assert isinstance(state, ContainerCopyJobOperatorStatus)
    assert (state.attempt, state.record_id) == (2, "uid-me-2")
    assert state.write_region == ACCOUNT.write_region  # recorded again, from the account as it is now
    said = condition(state.conditions, "Rerun")
    assert said is not None and "starts over after WriteRegionChanged" in said.message


def test_a_rerun_waits_for_the_instances_to_report_the_new_run() -> None:
    """The instances' record still says Failed (attempt 1) right after a re-run: the job stays Pending."""
    first = decide(rerun("CosmosError")).status
    assert isinstance(first, ContainerCopyJobOperatorStatus)
    again = decide(Observed(**{**rerun("CosmosError").__dict__, "state": first}))
    assert isinstance(again.status, ContainerCopyJobOperatorStatus)
    assert again.status.phase == "Pending" and again.status.attempt == 2
    assert len(again.status.attempts or []) == 1  # the same token is acted on once


def test_a_rerun_is_refused_for_a_succeeded_or_running_job() -> None:
    for phase, words in (({"phase": "Succeeded"}, "the job succeeded"), (RUNNING, "has not ended (phase Running)")):
        plan = decide(rerun(None, before=phase))
        state = plan.status
        assert isinstance(state, ContainerCopyJobOperatorStatus)
        assert state.phase == phase["phase"] and state.attempt is None and state.last_rerun == "2"
        said = condition(state.conditions, "Rerun")
        assert said is not None and said.status == "False" and said.reason == "RerunRefused" and words in said.message
        assert "RerunRefused" in [e.reason for e in plan.events]


def test_the_attempt_history_is_bounded() -> None:
    earlier = [{"attempt": n, "phase": "Failed", "reason": "CosmosError"} for n in range(1, 11)]
    state = decide(rerun("CosmosError", token="12", ran=11, attempt=11, attempts=earlier)).status
    assert isinstance(state, ContainerCopyJobOperatorStatus) and state.attempts is not None
    assert [a.attempt for a in state.attempts] == list(range(2, 12))  # the oldest dropped, the one just ended kept
    assert state.attempt == 12


def test_a_rerun_job_takes_its_place_in_the_queue_before_the_instances_report_it() -> None:
    rerun_job = job_body("again", status={"phase": "Pending", "attempt": 2, "transfer": {"state": "Failed"}})
    ended = job_body(
        "ended", status={"phase": "Pending", "transfer": {"state": "Failed"}}
    )  # a failure not mirrored yet
    assert copy_jobs([rerun_job, ended], "West US") == Queue(running=("again",), waiting=())


def test_the_rerun_command_never_asks_with_a_value_already_acted_on() -> None:
    assert rerun_token(2, {}, None, 1_700_000_000) == "2"
    # "2" set by hand while the job ran was refused and recorded: asking again with it would change nothing.
    assert rerun_token(2, {"lastRerun": "2"}, "2", 1_700_000_000) == "2-1700000000"
    assert rerun_token(3, {"lastRerun": "2", "attempt": 2}, "2", 1_700_000_000) == "3"


def as_tasks(observed: Observed, source_account: str | None = None) -> Observed:
    """The same job with its pairs under spec.tasks (two of them, reading from `source_account`)."""
    where = {"accountRef": {"name": source_account}} if source_account else {}
    tasks = [
        {
            "source": {"database": "db", "container": f"s{i}", **where},
            "destination": {"database": "db", "container": f"d{i}"},
        }
        for i in range(2)
    ]
    spec = ContainerCopyJobSpec.model_validate({"accountRef": {"name": "acct"}, "tasks": tasks})
    return Observed(**{**observed.__dict__, "spec": spec})


def test_a_job_of_tasks_reading_another_account_waits_for_it_naming_the_tasks_field() -> None:
    plan = decide(as_tasks(observe(Case("tasks")), source_account="src"))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert plan.status.phase == "Pending" and [e.reason for e in plan.events] == ["SourceAccountNotFound"]
    assert "spec.tasks[*].source.accountRef" in plan.events[0].message


def test_a_job_of_tasks_takes_one_place_in_its_accounts_queue() -> None:
    plan = decide(as_tasks(observe(Case("tasks", ahead=1))))
    assert isinstance(plan.status, ContainerCopyJobOperatorStatus)
    assert (plan.status.phase, plan.status.queue_position) == ("Queued", 1)


def test_a_mongodb_account_refuses_what_its_copies_do_not_do_with_a_reason() -> None:
    mongo = AccountView(
        name="acct", write_region="mongo:27017", ready_message=None, instances_running=True, api="MongoDB"
    )
    base = observe(Case("mongo", account=mongo))
    online = Observed(**{**base.__dict__, "spec": base.spec.model_copy(update={"mode": "Online"})})
    failed = decide(online).status
    assert isinstance(failed, ContainerCopyJobOperatorStatus) and failed.failure is not None
    assert (failed.phase, failed.failure.reason) == ("Failed", "NotSupportedForApi")
    assert "spec.mode: Offline" in failed.failure.message
    cross = decide(observe(Case("mongo", account=mongo, reads_from=True))).status
    assert isinstance(cross, ContainerCopyJobOperatorStatus) and cross.failure is not None
    assert "remove source.accountRef" in cross.failure.message
    offline = decide(base).status
    assert isinstance(offline, ContainerCopyJobOperatorStatus)
    assert offline.failure is None and offline.queue_position == 0
