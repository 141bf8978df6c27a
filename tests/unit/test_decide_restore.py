"""The InAccountRestore decision and the account's restore queue, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from builders import NOW, later, meta, restore_body

from ferry.api.inaccountrestore import InAccountRestoreOperatorStatus, InAccountRestoreSpec, RestoreProgress
from ferry.kinds.inaccountrestore.controller import AccountView, Observed, decide
from ferry.transfer.account_queue import BackupView, blocking_restore, restores

ACCOUNT = AccountView(
    name="acct",
    write_region="West US",
    ready_message=None,
    backup_enabled=True,
    earliest=later(-3600),
    latest=later(-10),
    instances_running=True,
)
BACKUP = BackupView("West US", True, later(-10))


@dataclass
class Case:
    name: str
    state: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    account: AccountView | None = ACCOUNT
    at: datetime | None = None
    ahead: int = 0  # unfinished restores of other containers created before this one
    same_resource_ahead: bool = False
    # expectations
    phase: str | None = None
    position: int | None = None
    failure: str | None = None
    reason: str | None = None  # the Complete condition's reason


def observe(case: Case) -> Observed:
    me = restore_body("me", "100", at=case.at, status={**case.state, **case.progress})
    earlier = [restore_body(f"e{i}", str(i), container=f"other{i}") for i in range(case.ahead)]
    if case.same_resource_ahead:
        earlier.append(restore_body("same", "50"))
    backup = BackupView(
        case.account.write_region if case.account else None,
        case.account.backup_enabled if case.account else False,
        case.account.latest if case.account else None,
    )
    everything = [*earlier, me]
    return Observed(
        meta=meta("me"),
        spec=InAccountRestoreSpec.model_validate(me["spec"]),
        state=InAccountRestoreOperatorStatus.model_validate(case.state),
        progress=RestoreProgress.model_validate(case.progress),
        account=case.account,
        queue=restores(everything, backup),
        blocked_by=blocking_restore(me, everything),
        now=NOW,
    )


def account(**changes: Any) -> AccountView:
    return AccountView(**{**ACCOUNT.__dict__, **changes})


RUNNING = {"phase": "Restoring", "writeRegion": "West US", "queuePosition": 0}
WORKING = {"transfer": {"state": "Running", "startTime": NOW.isoformat()}, "restoredItemCount": 40}

CASES = [
    Case("a restore whose account does not exist waits and says so", account=None, phase="Pending",
         reason="AccountNotFound"),
    Case("an account without continuous backup fails the restore", account=account(backup_enabled=False),
         phase="Failed", failure="BackupNotEnabled"),
    Case("a second restore of the same resource is refused while the first is unfinished", same_resource_ahead=True,
         phase="Failed", failure="RestoreInProgress"),
    Case("a restore waits for the account's write region", account=account(write_region=None, ready_message="401"),
         phase="Pending", reason="WaitingForAccount"),
    Case("a restore time in the future is refused", at=later(60), phase="Failed", failure="FutureTimestamp"),
    Case("a restore time before the window is refused at once", at=later(-7200), phase="Failed",
         failure="OutsideRetentionWindow"),
    Case("a time the backup has not captured yet waits outside the queue", at=later(-5), phase="Pending",
         reason="WaitingForCapture"),
    Case("three restores run at once: the third is running", ahead=2, phase="Pending", position=0,
         reason="Starting"),
    Case("the fourth restore is queued behind the first of the three", ahead=3, phase="Queued", position=1,
         reason="Queued"),
    Case("a running restore waits for the instances to start", account=account(instances_running=False),
         phase="Pending", position=0, reason="StartingInstances"),
    Case("the instances' report makes it Restoring", state={"phase": "Pending", "writeRegion": "West US"},
         progress=WORKING, phase="Restoring", position=0, reason="Restoring"),
    Case("the instances' record of success completes it",
         state=RUNNING,
         progress={**WORKING, "transfer": {"state": "Succeeded"}, "restoreTimestamp": later(-100).isoformat(),
                   "instanceId": "abc"},
         phase="Succeeded", reason="Restored"),
    Case("the instances' record of a rule's refusal fails it with that rule", state=RUNNING,
         progress={"transfer": {"state": "Failed", "failure": {"reason": "ResourceExists", "message": "live"}}},
         phase="Failed", failure="ResourceExists", reason="ResourceExists"),
    Case("a changed write region fails an incomplete restore", state=RUNNING, progress=WORKING,
         account=account(write_region="East US"), phase="Failed", failure="WriteRegionChanged"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decision(case: Case) -> None:
    plan = decide(observe(case))
    state = plan.status
    assert isinstance(state, InAccountRestoreOperatorStatus)
    assert (state.phase.value if state.phase else None) == case.phase
    assert state.queue_position == case.position
    assert (state.failure.reason if state.failure else None) == case.failure
    complete = {c.type: c for c in state.conditions}.get("Complete")
    if case.reason is not None:
        assert complete is not None and complete.reason == case.reason
    assert not plan.create and not plan.delete  # the account's restore instances do the work


def test_the_chosen_time_and_instance_are_in_the_success_message() -> None:
    plan = decide(observe(CASES[11]))
    assert isinstance(plan.status, InAccountRestoreOperatorStatus)
    complete = {c.type: c for c in plan.status.conditions}["Complete"]
    assert "2026-11-21T11:58:20Z" in complete.message and "instance id abc" in complete.message


def test_deciding_again_writes_the_same_status_and_no_event() -> None:
    first = decide(observe(CASES[8]))
    assert isinstance(first.status, InAccountRestoreOperatorStatus)
    again = decide(Observed(**{**observe(CASES[8]).__dict__, "state": first.status}))
    assert again.status is not None and again.status.wire() == first.status.wire()
    assert not again.events


def test_restores_of_a_database_and_its_container_block_each_other_and_others_do_not() -> None:
    whole = restore_body("whole", "1", container=None)
    part = restore_body("part", "2")
    other = restore_body("other", "3", database="other")
    beside = restore_body("beside", "4", target={"database": "db", "container": "copy"})
    assert blocking_restore(part, [whole, part, other, beside]) == "whole"
    assert blocking_restore(other, [whole, part, other, beside]) is None
    assert blocking_restore(beside, [whole, part, other, beside]) == "whole"  # the target lies in the database
    done = restore_body("whole", "1", container=None, status={"phase": "Succeeded"})
    assert blocking_restore(part, [done, part]) is None


def test_the_queue_runs_three_in_creation_order_and_skips_finished_ones() -> None:
    bodies = [restore_body(f"r{i}", str(10 - i), container=f"c{i}") for i in range(5)]
    bodies.append(restore_body("done", "0", container="cx", status={"phase": "Failed"}))
    q = restores(bodies, BACKUP)
    assert q.running == ("r4", "r3", "r2") and q.waiting == ("r1", "r0")


def test_nothing_runs_without_a_capture_or_a_write_region() -> None:
    bodies = [restore_body("r", "1")]
    assert restores(bodies, BackupView("West US", True, None)).running == ()
    assert restores(bodies, BackupView(None, True, later(-10))).running == ()
    assert restores(bodies, BackupView("West US", False, later(-10))).running == ()
