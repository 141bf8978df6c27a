"""What the decisions of copy jobs and restores share: following the instances' durable record of the job, the
account they run on (missing, not ready, its write region changed) and their place in the account's line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from ferry.api.common import Failure
from ferry.api.transfer import TransferRecord, TransferState, Verification
from ferry.runtime.objects import set_condition
from ferry.runtime.phases import QueuedJobStatus, QueuedPhaseDecision

P = TypeVar("P", bound=StrEnum)


class AccountJobStatus(QueuedJobStatus[P], Protocol[P]):
    start_time: datetime | None


Q = TypeVar("Q", bound=AccountJobStatus)  # type: ignore[type-arg]


@dataclass(frozen=True)
class JobPhases(Generic[P]):
    """A kind's phases and words, for the parts of its decision every account job shares."""

    pending: P
    queued: P
    running: P
    succeeded: P
    failed: P
    finished: frozenset[P]
    settled: tuple[P, ...]
    job: str  # "job", "restore": what the messages call one
    pool: str  # "copy", "restore": the account's instances that run it
    working: str  # the reason while it runs: "Copying", "Restoring"


class AccountJobDecision(QueuedPhaseDecision[Q, P]):
    def __init__(self, kind: str, state: Q, phases: JobPhases[P], generation: int, now: datetime) -> None:
        super().__init__(
            kind, state, phases.succeeded, phases.failed, phases.finished, generation, now, settled=phases.settled
        )
        self.phases = phases

    def followed_transfer(
        self, transfer: TransferRecord | None, done: tuple[str, Callable[[], str]], fallback: Failure
    ) -> bool:
        """Mirror the instances' durable record of the job: its start, and its end (True once it has ended)."""
        if transfer is None:
            return False
        state = self.state
        if transfer.start_time is not None:
            state.start_time = state.start_time or transfer.start_time
        if transfer.state == TransferState.SUCCEEDED:
            state.completion_time = transfer.completion_time or self.now
            reason, message = done
            self.phase(self.phases.succeeded, reason, message())
            return True
        if transfer.state == TransferState.FAILED:
            state.completion_time = transfer.completion_time or self.now
            self.fail(transfer.failure or fallback)
            return True
        return False

    def verified(self, verification: Verification | None) -> None:
        """The Verified condition, from what the instances' verification found (absent until it ran)."""
        if verification is None:
            return
        matches = verification.matches
        self.state.conditions = set_condition(
            self.state.conditions,
            "Verified",
            matches,
            "Verified" if matches else "Differs",
            verification.summary(),
            self.generation,
            self.now,
        )

    def account_missing(self, name: str, field: str = "spec.accountRef", reason: str = "AccountNotFound") -> None:
        message = f'DatabaseAccount "{name}" does not exist in this namespace; create it or fix {field}'
        self.phase(self.phases.pending, reason, message, warning=True)

    def waiting_for_region(self, ready_message: str | None, whose: str = "the account's") -> None:
        why = ready_message or "the account monitor has not reported yet"
        self.phase(self.phases.pending, "WaitingForAccount", f"waiting for {whose} write region: {why}")

    def region_changed(self, account: str, recorded: str, now: str, then: str) -> None:
        """An account's write region moved while the job was incomplete: it fails, and `then` says what to do."""
        message = (
            f'the write region of account "{account}" changed from {recorded} to {now} while the '
            f"{self.phases.job} was incomplete; {then}"
        )
        self.fail(Failure(reason="WriteRegionChanged", message=message))

    def in_line(self, position: int, transfer: TransferRecord | None, instances_running: bool, doing: str) -> None:
        """Queued behind earlier jobs, running on the instances, or waiting for them to start or take it up."""
        phases, pool = self.phases, self.phases.pool
        if position > 0:
            self.phase(phases.queued, "Queued", f"waiting behind {position} earlier {phases.job}(s) of the account")
        elif transfer is not None and transfer.state == TransferState.RUNNING and instances_running:
            self.phase(phases.running, phases.working, f"the account's {pool} instances are {doing}")
        elif not instances_running:
            self.phase(phases.pending, "StartingInstances", f"waiting for the account's {pool} instances to start")
        else:
            self.phase(phases.pending, "Starting", f"the {pool} instances are taking the {phases.job} up")
