"""The worker-pod lifecycle every kind shares, as pure functions of the recorded and observed state.

Two shapes of workers exist:
- a *task* worker does one object's work to an end (a BlobCopy's copy or cleanup, a restore): one pod at a
  time, its outcome read from the pod's exit code and termination message, replaced after a transient
  failure within a restart budget and with exponential backoff, stopped with SIGTERM (pod deletion) when
  the object is suspended, so that it exits at a checkpoint;
- *service* workers run for as long as an object wants them (an account's monitor and copy instances):
  a fixed set of named pods, replaced when their template changes or when they end.

Nothing here talks to the API: the functions return what to create, delete and record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from ferry.api.common import WorkerStatus
from ferry.api.outcome import EXIT_CODES, OutcomeResult, WorkerOutcome, parse_outcome
from ferry.retry import backoff
from ferry.runtime.pods import PodView

BACKOFF_BASE = 10.0  # seconds before the first replacement, doubling up to BACKOFF_CAP
BACKOFF_CAP = 300.0
_RESULT_OF_EXIT_CODE = {code: result for result, code in EXIT_CODES.items()}
LOG_TAIL = 400  # characters of a worker's log quoted when it died without saying why


@dataclass(frozen=True)
class PodDeletion:
    name: str
    grace_seconds: int | None = None  # None: the pod's own grace period (SIGTERM first)


def outcome_of(pod: PodView) -> WorkerOutcome:
    """What a finished worker pod says about its work: its printed outcome, else its exit code."""
    said = parse_outcome(pod.termination_message)
    if said is not None:
        return said
    code = pod.exit_code
    said_by_code = _RESULT_OF_EXIT_CODE.get(code) if code is not None else None
    if said_by_code in (OutcomeResult.SUCCEEDED, OutcomeResult.STOPPED):
        return WorkerOutcome(result=said_by_code)
    why = f"worker pod {pod.name} exited with code {code}"
    if pod.termination_reason and pod.termination_reason not in ("Error", "Completed"):
        why += f" ({pod.termination_reason})"
    tail = (pod.termination_message or "").strip()[-LOG_TAIL:]
    message = f"{why}; its log ends: {tail}" if tail else why
    # The workers' "permanent failure" code is final; anything else (crash, kill, OOM) may pass.
    result = OutcomeResult.FAILED if said_by_code == OutcomeResult.FAILED else OutcomeResult.RETRY
    return WorkerOutcome(result=result, reason="WorkerFailed", message=message)


class TaskState(StrEnum):
    IDLE = "Idle"  # no worker, none wanted
    WAITING = "Waiting"  # wanted, but in backoff or without a free slot
    STARTING = "Starting"  # the pod exists and has not started its process yet
    RUNNING = "Running"
    STOPPING = "Stopping"  # told to stop; the worker is checkpointing


@dataclass(frozen=True)
class TaskInput:
    worker: WorkerStatus
    pods: Sequence[PodView]  # this role's pods
    wanted: bool  # the work should run now
    max_retries: int
    now: datetime
    slot_granted: bool
    pod_name: Callable[[int], str]  # the pod name of attempt n


@dataclass
class TaskResult:
    worker: WorkerStatus
    state: TaskState
    ended: WorkerOutcome | None = None  # the work ended: Succeeded, or Failed for good
    retrying: WorkerOutcome | None = None  # a transient failure, replaced after worker.retry_time
    stopped: bool = False  # a worker stopped at its checkpoint on this pass
    config_error: str | None = None  # the pod cannot start (a missing Secret or key)
    unschedulable: str | None = None  # no node takes the pod (yet): the scheduler's message
    start: str | None = None  # the pod to create
    wants_slot: bool = False
    delete: list[PodDeletion] = field(default_factory=list)
    requeue_after: float | None = None


def task_worker(given: TaskInput) -> TaskResult:
    worker = given.worker.model_copy(deep=True)
    result = TaskResult(worker=worker, state=TaskState.IDLE)
    current = next((p for p in given.pods if p.name == worker.pod), None)

    for pod in given.pods:
        if pod.finished:
            if pod is current:
                _settle(given, result, pod)
                current = None
            if not pod.deleting:
                result.delete.append(PodDeletion(pod.name, grace_seconds=0))  # its containers are gone
        elif pod is not current and not pod.deleting:
            result.delete.append(PodDeletion(pod.name))  # a stray from an earlier pass
    if worker.pod is not None and current is None and result.ended is None and not result.stopped:
        _failed(
            given,
            result,
            WorkerOutcome(
                result=OutcomeResult.RETRY, reason="WorkerVanished", message=f"worker pod {worker.pod} vanished"
            ),
        )

    if result.ended is not None:
        return result
    if current is not None:
        if not given.wanted:
            if not current.deleting:
                result.delete.append(PodDeletion(current.name))
            result.state = TaskState.STOPPING
            return result
        result.state = TaskState.RUNNING if current.phase == "Running" else TaskState.STARTING
        result.config_error = current.config_error
        result.unschedulable = current.unschedulable
        return result
    if not given.wanted:
        return result
    if any(p.deleting and not p.finished for p in given.pods):
        result.state = TaskState.WAITING  # an earlier worker is still checkpointing; its end wakes us
        return result
    if worker.retry_time is not None and given.now < worker.retry_time:
        result.state = TaskState.WAITING
        result.requeue_after = (worker.retry_time - given.now).total_seconds()
        return result
    if not given.slot_granted:
        result.state = TaskState.WAITING
        result.wants_slot = True
        return result
    worker.attempts += 1
    worker.pod = given.pod_name(worker.attempts)
    worker.retry_time = None
    result.start = worker.pod
    result.state = TaskState.STARTING
    return result


def _settle(given: TaskInput, result: TaskResult, pod: PodView) -> None:
    outcome = outcome_of(pod)
    result.worker.pod = None
    if outcome.result == OutcomeResult.STOPPED:
        result.stopped = True
    elif outcome.result in (OutcomeResult.SUCCEEDED, OutcomeResult.FAILED):
        result.ended = outcome
    else:
        _failed(given, result, outcome)


def _failed(given: TaskInput, result: TaskResult, outcome: WorkerOutcome) -> None:
    worker = result.worker
    worker.pod = None
    worker.restarts += 1
    if worker.restarts > given.max_retries:
        result.ended = WorkerOutcome(
            result=OutcomeResult.FAILED,
            reason=outcome.reason or "WorkerFailed",
            message=f"{outcome.message}; gave up after {worker.restarts - 1} restarts (spec.maxRetries)",
        )
        return
    worker.retry_time = given.now + timedelta(seconds=backoff(worker.restarts, BACKOFF_BASE, BACKOFF_CAP))
    result.retrying = outcome


@dataclass(frozen=True)
class ServicePod:
    """One pod a service wants: its name, the template hash it must carry, and how to build it."""

    name: str
    template: str
    takes_slot: bool


@dataclass(frozen=True)
class PodProblem:
    """Why one of a service's pods does not run."""

    pod: str
    reason: str  # SecretNotFound, ConfigError, Unschedulable or CrashLoopBackOff
    message: str


@dataclass
class ServiceResult:
    start: list[ServicePod] = field(default_factory=list)
    delete: list[PodDeletion] = field(default_factory=list)
    problems: list[PodProblem] = field(default_factory=list)


def service_workers(wanted: Sequence[ServicePod], pods: Sequence[PodView]) -> ServiceResult:
    """Converge the pods of one service role on the wanted set (pods are named, so never doubled)."""
    result = ServiceResult()
    by_name = {p.name: p for p in pods}
    names = {w.name for w in wanted}
    for pod in pods:
        if pod.name not in names and not pod.deleting:
            result.delete.append(PodDeletion(pod.name, grace_seconds=0 if pod.finished else None))
    for want in wanted:
        found = by_name.get(want.name)
        if found is None:
            result.start.append(want)
            continue
        if found.deleting:
            continue  # recreated once it is gone
        if found.finished or found.template != want.template:
            result.delete.append(PodDeletion(found.name, grace_seconds=0 if found.finished else None))
            continue
        problem = _problem(found)
        if problem:
            result.problems.append(problem)
    return result


def _problem(pod: PodView) -> PodProblem | None:
    if pod.config_error:
        missing = "not found" in pod.config_error or "couldn't find key" in pod.config_error
        return PodProblem(pod.name, "SecretNotFound" if missing else "ConfigError", pod.config_error)
    if pod.unschedulable:
        return PodProblem(pod.name, "Unschedulable", f"no node can run it: {pod.unschedulable}")
    crash = _crash_loop(pod)
    return PodProblem(pod.name, "CrashLoopBackOff", crash) if crash else None


def _crash_loop(pod: PodView) -> str | None:
    if pod.waiting_reason != "CrashLoopBackOff":
        return None
    said = parse_outcome(pod.last_termination_message)
    if said is not None:
        return f"{said.reason}: {said.message}" if said.reason else said.message
    tail = (pod.last_termination_message or "").strip()[-LOG_TAIL:]
    return f"pod {pod.name} keeps exiting with code {pod.last_exit_code}" + (f"; its log ends: {tail}" if tail else "")
