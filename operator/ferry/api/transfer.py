"""A job's durable record in the account's `__datatransferstate` database: copy jobs and restores alike."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ferry.api.common import Failure, FerryModel


class TransferState(StrEnum):
    """A job's state in the account's `__datatransferstate` database."""

    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class TransferRecord(FerryModel):
    """The job's durable record in `__datatransferstate`, as the account's instances last read it."""

    state: TransferState
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failure: Failure | None = None
    attempt: int | None = Field(default=None, description="The run of the job the record is of (absent: the first).")


class VerifyMode(StrEnum):
    """How a finished copy or restore is checked against what the destination should hold."""

    COUNT = "Count"  # item counts
    FULL = "Full"  # every item's content, system properties aside


class Verification(FerryModel):
    """What the verification found, written with the job's progress; the operator's Verified condition says it."""

    mode: VerifyMode
    source_count: int = Field(description="Items the destination should hold (a restore: the backup at its time).")
    destination_count: int = Field(description="Items the destination holds.")
    missing: int = Field(default=0, description="Full: items of the source that the destination lacks.")
    extra: int = Field(default=0, description="Full: items in the destination that the source does not have.")
    differing: int = Field(default=0, description="Full: items whose content differs.")
    first_differences: list[str] = Field(
        default_factory=list, description="Full: the first ids that differ (missing, extra or changed)."
    )

    @property
    def matches(self) -> bool:
        same = self.source_count == self.destination_count
        return same and not (self.missing or self.extra or self.differing)

    def summary(self) -> str:
        """In words, for the condition and the failure."""
        if self.matches:
            return f"{self.mode.value}: the destination holds the {self.destination_count} expected items"
        text = f"{self.mode.value}: expected {self.source_count} items, the destination holds {self.destination_count}"
        if self.mode == VerifyMode.FULL:
            text += f"; {self.missing} missing, {self.extra} extra, {self.differing} with other content"
            if self.first_differences:
                text += f" (first: {', '.join(self.first_differences)})"
        return text
