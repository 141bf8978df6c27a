"""ContainerCopyJob: a copy of every item of one container into another, in the same account or from another.

The job runs on its account (spec.accountRef, the destination's): in its queue and on its copy instances, as
the service's copy jobs run on the destination account. spec.source.accountRef names another account to read
from. Offline (the default) copies a source nobody writes to; Online keeps applying the source's changes until
spec.cutover.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from ferry.api.common import Condition, CosmosName, Failure, FerryModel, LocalObjectReference, conditions_field
from ferry.api.transfer import TransferRecord, Verification, VerifyMode


class CopyMode(StrEnum):
    OFFLINE = "Offline"
    ONLINE = "Online"  # needs the source account's all-versions-and-deletes change feed


class ContainerCopyPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    PAUSING = "Pausing"  # suspended; the copy instances are still stopping at their checkpoints
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class ContainerPath(FerryModel):
    database: CosmosName = Field(min_length=1, max_length=255)
    container: CosmosName = Field(min_length=1, max_length=255)


class SourcePath(ContainerPath):
    account_ref: LocalObjectReference | None = Field(
        default=None,
        description="The DatabaseAccount to read from, when not the job's own (spec.accountRef): the job runs "
        "on its own account's instances, which read the source with this account's key.",
    )


MAX_TASKS = 100  # tasks of one job: each is checked against every other at apply time


def _pair_differs(task: str) -> str:
    """CEL: the pair `task` (an expression) reads another account, or another container than it writes."""
    return (
        f"(has({task}.source.accountRef) && {task}.source.accountRef.name != self.accountRef.name) "
        f"|| {task}.source.database != {task}.destination.database "
        f"|| {task}.source.container != {task}.destination.container"
    )


def _unchanged(field: str) -> dict[str, str]:
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"{field} is immutable",
    }


class CopyTask(FerryModel):
    """One source → destination pair of a job with several."""

    source: SourcePath
    destination: ContainerPath


class ContainerCopyJobSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.accountRef == oldSelf.accountRef", "message": "accountRef is immutable"},
        _unchanged("source"),
        _unchanged("destination"),
        _unchanged("tasks"),
        {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
        {"rule": "self.verify == oldSelf.verify", "message": "verify is immutable"},
        {
            "rule": "has(self.tasks) ? !has(self.source) && !has(self.destination) "
            ": has(self.source) && has(self.destination)",
            "message": "give either source and destination (one pair) or tasks (several pairs), not both",
        },
        {
            "rule": f"!has(self.source) || !has(self.destination) || {_pair_differs('self')}",
            "message": "source and destination must differ",
        },
        {
            "rule": f"!has(self.tasks) || self.tasks.all(t, {_pair_differs('t')})",
            "message": "each task's source and destination must differ",
            "fieldPath": ".tasks",
        },
        {
            "rule": "!has(self.tasks) || self.tasks.all(a, self.tasks.exists_one(b, "
            "b.destination.database == a.destination.database && b.destination.container == a.destination.container))",
            "message": "two tasks write the same destination container: each task needs a destination of its own",
            "fieldPath": ".tasks",
        },
        {
            "rule": "!has(self.tasks) || self.tasks.all(t, "
            "has(t.source.accountRef) == has(self.tasks[0].source.accountRef) "
            "&& (!has(t.source.accountRef) || t.source.accountRef.name == self.tasks[0].source.accountRef.name))",
            "message": "every task reads from the same account (source.accountRef): a job's instances hold one "
            "other account's key",
            "fieldPath": ".tasks",
        },
        {
            "rule": "!has(self.cutover) || !self.cutover || (has(self.mode) && self.mode == 'Online')",
            "message": "cutover is allowed only when mode is Online: an offline copy completes by itself",
            "fieldPath": ".cutover",
        },
    ]

    account_ref: LocalObjectReference = Field(
        description="The destination's DatabaseAccount: the job waits in its queue and runs on its instances."
    )
    source: SourcePath | None = Field(default=None, description="The container to copy (with destination).")
    destination: ContainerPath | None = Field(
        default=None, description="The container to copy into; it must exist, as in the service."
    )
    tasks: list[CopyTask] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TASKS,
        description="Several source → destination pairs copied as one job, in one queue slot (instead of source "
        "and destination); each destination appears once.",
    )
    mode: CopyMode = Field(
        default=CopyMode.OFFLINE,
        description="Offline: copy a source nobody writes to. Online: after the copy, keep applying the source's "
        "creates, replaces and deletes until spec.cutover (the account needs the all-versions-and-deletes "
        "change feed).",
    )
    cutover: bool = Field(
        default=False,
        description="Online only: stop writing to the source, then set true; the job applies what is left "
        "and completes, after which clients can use the destination.",
    )
    verify: VerifyMode = Field(
        default=VerifyMode.COUNT,
        description="After the copy (after the cutover, when online), compare the destination with the source: "
        "Count compares item counts, Full every item's content; a difference fails the job (VerificationFailed).",
    )
    suspend: bool = Field(default=False, description="Pause at the next checkpoint; false resumes.")
    max_items_per_second: int | None = Field(
        default=None, ge=1, description="Upper bound on the job's write rate across all instances."
    )

    def copy_tasks(self) -> list[CopyTask]:
        """The job's pairs: spec.tasks, or the one pair of spec.source and spec.destination."""
        if self.tasks:
            return list(self.tasks)
        if self.source is None or self.destination is None:
            return []  # refused by the schema: give either source and destination, or tasks
        return [CopyTask(source=self.source, destination=self.destination)]

    def source_account(self) -> str | None:
        """The other account the job reads from (the same for every task), or None for its own."""
        tasks = self.copy_tasks()
        ref = tasks[0].source.account_ref if tasks else None
        return ref.name if ref is not None else None


class TaskPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"
    CANCELLED = "Cancelled"


class TaskProgress(FerryModel):
    """One task's counts, as the copy instances last found them."""

    index: int
    source: str = Field(description="[account:]database/container")
    destination: str = Field(description="database/container")
    phase: TaskPhase
    total_count: int | None = None
    processed_count: int = 0
    percent: int | None = None


class ContainerCopyProgress(FerryModel):
    """The part of the status the copy instances write: the job's progress and durable record."""

    total_count: int | None = None
    processed_count: int | None = None
    percent: int | None = None
    items_per_second: float | None = None
    estimated_seconds_remaining: int | None = None
    throttled_requests: int | None = Field(default=None, description="429 responses met (and retried).")
    pending_changes: int | None = Field(
        default=None, description="Online: source changes not yet applied to the destination."
    )
    seconds_behind: int | None = Field(
        default=None, description="Online: age of the oldest source change not yet applied (0: caught up)."
    )
    last_update_time: datetime | None = Field(default=None, description="When an instance last reported.")
    verification: Verification | None = Field(default=None, description="What the verification found.")
    transfer: TransferRecord | None = None
    tasks: list[TaskProgress] | None = Field(
        default=None, description="Each task's counts; the counts above are the job's totals."
    )


RERUN_ANNOTATION = "ferry.dev/rerun"  # a new value runs a Failed or Cancelled job again (`ferry jobs rerun`)
ATTEMPTS_KEPT = 10  # earlier runs kept in status.attempts, oldest dropped first


class AttemptRecord(FerryModel):
    """One earlier run of the job, as it ended."""

    attempt: int
    phase: ContainerCopyPhase
    reason: str | None = None
    message: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    processed_count: int | None = None
    total_count: int | None = None


class ContainerCopyJobOperatorStatus(FerryModel):
    """The part of the status the operator writes: the job's lifecycle and place in its account's queue."""

    phase: ContainerCopyPhase | None = None
    queue_position: int | None = Field(default=None, description="0 for the running job, 1 for the next, ...")
    creation_revision: str | None = Field(
        default=None,
        description="metadata.resourceVersion when the operator first saw the job: orders jobs created "
        "within the same second (resource versions of one resource compare as integers).",
    )
    write_region: str | None = Field(default=None, description="The account's write region when the job was queued.")
    source_write_region: str | None = Field(
        default=None, description="The source account's write region when the job was queued (a cross-account copy)."
    )
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failure: Failure | None = None
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None
    attempt: int | None = Field(default=None, description="The current run: absent or 1 for the first, +1 per re-run.")
    record_id: str | None = Field(
        default=None,
        description="The job's record in __datatransferstate that this run works on: the job's uid, or uid-N from "
        "a re-run that started over (absent: the uid).",
    )
    last_rerun: str | None = Field(default=None, description="The ferry.dev/rerun annotation value last acted on.")
    attempts: list[AttemptRecord] | None = Field(
        default=None, description=f"Earlier runs, oldest first (at most {ATTEMPTS_KEPT})."
    )


class ContainerCopyJobStatus(ContainerCopyJobOperatorStatus, ContainerCopyProgress):
    """The whole status: each part has one writer (server-side apply, one field manager per part)."""
