"""InAccountRestore: bring a deleted database or container back into the same account, as it was at a time.

The restore reads the account's continuous backup (DatabaseAccount spec.backup). Azure's own continuous
backup through Resource Manager would be a second source, chosen by the account's backup policy; this
API does not change for it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from ferry.api.common import Condition, CosmosName, Failure, FerryModel, LocalObjectReference, conditions_field
from ferry.api.transfer import TransferRecord, Verification, VerifyMode


class RestorePhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class RestoreTarget(FerryModel):
    """Restore under another name, beside what is there now (Azure's in-account restore cannot do this)."""

    database: CosmosName = Field(min_length=1, max_length=255)
    container: CosmosName | None = Field(default=None, min_length=1, max_length=255)


class InAccountRestoreSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self == oldSelf", "message": "an InAccountRestore is immutable; create a new one"},
        {
            "rule": "!has(self.target) || has(self.container) == has(self.target.container)",
            "message": "target.container names where a container goes; a database restore gives target.database only",
        },
    ]

    account_ref: LocalObjectReference
    database: CosmosName = Field(min_length=1, max_length=255)
    container: CosmosName | None = Field(
        default=None, min_length=1, max_length=255, description="Absent: restore the whole database."
    )
    restore_timestamp: datetime | None = Field(
        default=None,
        description="Any time in the backup window. Absent: the last deleted incarnation, one second before "
        "its deletion.",
    )
    restore_with_ttl_disabled: bool = Field(
        default=False, description="Restore without the container's default time to live, so no item expires."
    )
    target: RestoreTarget | None = Field(
        default=None,
        description="Restore into this database (and container) instead of the original name: the original "
        "may then be live.",
    )
    verify: VerifyMode = Field(
        default=VerifyMode.COUNT,
        description="After the restore, compare what was restored with the backup at the restore time: Count "
        "compares item counts, Full every item's content; a difference fails the restore (VerificationFailed).",
    )


class RestoreProgress(FerryModel):
    """The part of the status the account's restore instances write."""

    restore_timestamp: datetime | None = Field(default=None, description="The time actually restored to.")
    instance_id: str | None = Field(default=None, description="The id of the incarnation the restore created.")
    note: str | None = Field(
        default=None,
        description="What to know about the restored state: where item deletions were swept, how closely they "
        "are dated.",
    )
    total_count: int | None = None
    restored_item_count: int | None = None
    percent: int | None = None
    items_per_second: float | None = None
    last_update_time: datetime | None = None
    verification: Verification | None = Field(default=None, description="What the verification found.")
    transfer: TransferRecord | None = None


class InAccountRestoreOperatorStatus(FerryModel):
    """The part of the status the operator writes."""

    phase: RestorePhase | None = None
    queue_position: int | None = Field(default=None, description="0 while restoring, 1 for the next, ...")
    creation_revision: str | None = Field(
        default=None, description="metadata.resourceVersion when the operator first saw the restore (queue order)."
    )
    write_region: str | None = Field(default=None, description="The account's write region when it was queued.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failure: Failure | None = None
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None


class InAccountRestoreStatus(InAccountRestoreOperatorStatus, RestoreProgress):
    """The whole status: each part has one writer (server-side apply, one field manager per part)."""
