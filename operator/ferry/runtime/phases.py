"""What the decisions of job-like kinds (BlobCopy, ContainerCopyJob, InAccountRestore) share: a phase with its
Complete and Failed conditions, one Event per pass for a change of phase or reason, the failure, and the count of
failed jobs (made with the status that records the failure, once per failure)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from ferry.api.common import Condition, Failure
from ferry.metrics import JOBS_FAILED_METRIC
from ferry.runtime.objects import Activity, condition, set_condition, set_health
from ferry.runtime.plan import Count, Event, Plan

P = TypeVar("P", bound=StrEnum)


class JobStatus(Protocol[P]):
    phase: P | None
    completion_time: datetime | None
    failure: Failure | None
    conditions: list[Condition] | None


class QueuedJobStatus(JobStatus[P], Protocol[P]):
    queue_position: int | None


S = TypeVar("S", bound=JobStatus)  # type: ignore[type-arg]
Q = TypeVar("Q", bound=QueuedJobStatus)  # type: ignore[type-arg]


class PhaseDecision(Generic[S, P]):
    def __init__(
        self,
        kind: str,
        state: S,
        succeeded: P,
        failed: P,
        finished: Collection[P],
        generation: int,
        now: datetime,
        settled: Collection[P] = (),
    ) -> None:
        self.kind = kind
        self.state = state
        self.plan = Plan(status=state)  # type: ignore[arg-type]
        self.succeeded, self.failed, self.finished, self.settled = succeeded, failed, finished, settled
        self.generation, self.now = generation, now
        self.transition: Event | None = None
        complete = condition(state.conditions, "Complete")
        self.before = (state.phase, complete.reason if complete is not None else None)

    def done(self) -> Plan:
        """The Plan, with one Event for the pass's phase change (not one per intermediate step)."""
        if self.transition is not None and (self.state.phase, self.transition.reason) != self.before:
            self.plan.events.append(self.transition)
        if self.state.phase == self.failed and self.before[0] != self.failed:
            reason = self.state.failure.reason if self.state.failure is not None else "Unknown"
            self.plan.counts.append(Count(JOBS_FAILED_METRIC, 1, (("kind", self.kind), ("reason", reason))))
        return self.plan

    def phase(self, phase: P, reason: str, message: str, warning: bool = False) -> None:
        state = self.state
        if phase in self.finished:
            state.completion_time = state.completion_time or self.now
            self.finishing()
        for type_, on in (("Complete", phase == self.succeeded), ("Failed", phase == self.failed)):
            state.conditions = set_condition(state.conditions, type_, on, reason, message, self.generation, self.now)
        ready, activity = job_health(phase, self.succeeded, self.finished, self.settled)
        state.conditions = set_health(state.conditions, ready, activity, reason, message, self.generation, self.now)
        self.transition = Event(reason, message, warning)
        state.phase = phase

    def finishing(self) -> None:
        """What the kind's status lets go of when the object ends (a queue position, a worker's condition)."""

    def fail(self, failure: Failure) -> None:
        self.state.failure = failure
        self.phase(self.failed, failure.reason, failure.message, warning=True)


class QueuedPhaseDecision(PhaseDecision[Q, P]):
    """A job that waits in its account's queue: an ended job has no place in it."""

    def finishing(self) -> None:
        self.state.queue_position = None


def job_health(phase: P, succeeded: P, finished: Collection[P], settled: Collection[P]) -> tuple[bool, Activity]:
    """A job is Ready once it succeeded or while the user keeps it paused (the state its spec asks for: kstatus
    reads a False Ready as in progress), Stalled once it ended otherwise (failed, cancelled), and Reconciling
    while it waits or runs."""
    if phase == succeeded or phase in settled:
        return True, Activity.IDLE
    if phase in finished:
        return False, Activity.STALLED
    return False, Activity.RECONCILING
