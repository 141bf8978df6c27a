"""What copy and restore instances share about a job's document in `__datatransferstate`: its outcome for one
instance, recording a failure once, and the first instance's start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ferry.api.common import Failure
from ferry.storage.transferstate import TERMINAL_STATES, JobState, StateStore, now_iso


@dataclass
class InstanceOutcome:
    kind: Literal["idle", "completed", "failed", "stopped", "progress"]
    failure: Failure | None = None
    retry_after: float | None = None  # idle: when a unit leased by another instance could be taken over


class TransientJobError(Exception):
    """A failure worth retrying: the job is unchanged, another run resumes from the checkpoints."""


def fail_job(store: StateStore, job_id: str, failure: Failure) -> dict[str, Any]:
    """Record the failure once; the first failure recorded is the job's failure."""

    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES:
            return False
        doc.update(state=JobState.FAILED.value, failure=failure.wire(), completionTime=now_iso())
        return True

    return store.update_job(job_id, change)


def outcome_of(doc: dict[str, Any]) -> InstanceOutcome | None:
    """The outcome for a job that is no longer to be worked on, or None."""
    state = doc.get("state")
    if state == JobState.SUCCEEDED:
        return InstanceOutcome("completed")
    if state == JobState.FAILED:
        wire = doc.get("failure") or {"reason": "Failed", "message": "the job failed"}
        return InstanceOutcome("failed", Failure.model_validate(wire))
    if state in (JobState.CANCELLED, JobState.PAUSED):
        return InstanceOutcome("stopped")
    return None


def mark_running(store: StateStore, job_id: str) -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") != JobState.PENDING:
            return False
        doc.update(state=JobState.RUNNING.value, startTime=doc.get("startTime") or now_iso())
        return True

    return store.update_job(job_id, change)


def complete_job(store: StateStore, job_id: str, processed: int) -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> bool:
        if doc.get("state") in TERMINAL_STATES:
            return False
        doc.update(state=JobState.SUCCEEDED.value, processedCount=processed, completionTime=now_iso())
        return True

    return store.update_job(job_id, change)
