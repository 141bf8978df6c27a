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


class ContainerCopyJobSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.accountRef == oldSelf.accountRef", "message": "accountRef is immutable"},
        {"rule": "self.source == oldSelf.source", "message": "source is immutable"},
        {"rule": "self.destination == oldSelf.destination", "message": "destination is immutable"},
        {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
        {"rule": "self.verify == oldSelf.verify", "message": "verify is immutable"},
        {
            "rule": "(has(self.source.accountRef) && self.source.accountRef.name != self.accountRef.name) "
            "|| self.source.database != self.destination.database "
            "|| self.source.container != self.destination.container",
            "message": "source and destination must differ",
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
    source: SourcePath
    destination: ContainerPath
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
