"""A job's durable record in the account's `__datatransferstate` database: copy jobs and restores alike."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

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
