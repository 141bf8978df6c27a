"""InAccountRestore: bring a deleted database or container back into the same account."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from ferry.api.common import Condition, Failure, FerryModel, LocalObjectReference, conditions_field


class RestorePhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class InAccountRestoreSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self == oldSelf", "message": "an InAccountRestore is immutable; create a new one"},
    ]

    account_ref: LocalObjectReference
    database: str = Field(min_length=1, max_length=255)
    container: str | None = Field(
        default=None, min_length=1, max_length=255, description="Absent: restore the whole database."
    )
    restore_timestamp: datetime | None = Field(
        default=None, description="Absent: the last deleted incarnation, just before its deletion."
    )
    restore_with_ttl_disabled: bool = False


class InAccountRestoreStatus(FerryModel):
    phase: RestorePhase | None = None
    instance_id: str | None = None
    restored_item_count: int | None = None
    restore_timestamp: datetime | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failure: Failure | None = None
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None
