"""The registry of Ferry's kinds: names, models and printer columns, from which the CRDs are generated."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.api.blobcopy import BlobCopySpec, BlobCopyStatus
from ferry.api.common import CATEGORY, GROUP, VERSION, FerryModel
from ferry.api.containercopyjob import ContainerCopyJobSpec, ContainerCopyJobStatus
from ferry.api.databaseaccount import DatabaseAccountSpec, DatabaseAccountStatus
from ferry.api.inaccountrestore import InAccountRestoreSpec, InAccountRestoreStatus


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class ProgressFields:
    """Where a kind's status says how far a running object is (the metrics and `ferry status` read it)."""

    done: str
    total: str
    unit: str  # "B" (bytes) or "items"
    running: tuple[str, ...]  # the phases in which it moves
    rate: str | None = None  # a status field with its own rate, if it has one


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[FerryModel]
    status: type[FerryModel]
    description: str
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    progress: ProgressFields | None = None

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def category(self) -> str:
        return CATEGORY


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
# Why a job failed, in the default columns: empty while it is healthy.
_REASON = PrinterColumn("Reason", ".status.failure.reason", description="Why it failed.")

DATABASE_ACCOUNT = Kind(
    kind="DatabaseAccount",
    plural="databaseaccounts",
    singular="databaseaccount",
    short_names=("dbacct",),
    spec=DatabaseAccountSpec,
    status=DatabaseAccountStatus,
    description="A Cosmos DB account: its connection, write region, copy instances and backup policy.",
    columns=(
        PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Write Region", ".status.writeRegion"),
        PrinterColumn("Active Job", ".status.activeCopyJob"),
        PrinterColumn("Backup", '.status.conditions[?(@.type=="BackupHealthy")].reason'),
        PrinterColumn(
            "Reason",
            '.status.conditions[?(@.status=="False")].reason',
            description="Why a condition is False (Ready, BackupHealthy, InstancesReady): empty while healthy.",
        ),
        PrinterColumn("Restorable To", ".status.latestRestorableTime", priority=1),
        PrinterColumn("Endpoint", ".spec.endpoint", priority=1),
        _AGE,
    ),
)

CONTAINER_COPY_JOB = Kind(
    kind="ContainerCopyJob",
    plural="containercopyjobs",
    singular="containercopyjob",
    short_names=("ccj",),
    spec=ContainerCopyJobSpec,
    status=ContainerCopyJobStatus,
    description="Copies every item of Cosmos DB containers into others: one pair or several (spec.tasks), read from "
    "the job's own account or another.",
    progress=ProgressFields("processedCount", "totalCount", "items", ("Running",), rate="itemsPerSecond"),
    columns=(
        PrinterColumn("Account", ".spec.accountRef.name"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Queue", ".status.queuePosition", "integer"),
        PrinterColumn("Processed", ".status.processedCount", "integer"),
        PrinterColumn("Total", ".status.totalCount", "integer"),
        PrinterColumn("Percent", ".status.percent", "integer"),
        _REASON,
        _AGE,
    ),
)

IN_ACCOUNT_RESTORE = Kind(
    kind="InAccountRestore",
    plural="inaccountrestores",
    singular="inaccountrestore",
    short_names=("iar",),
    spec=InAccountRestoreSpec,
    status=InAccountRestoreStatus,
    description="Restores a deleted Cosmos DB database or container into the same account.",
    progress=ProgressFields("restoredItemCount", "totalCount", "items", ("Restoring",), rate="itemsPerSecond"),
    columns=(
        PrinterColumn("Account", ".spec.accountRef.name"),
        PrinterColumn("Database", ".spec.database"),
        PrinterColumn("Container", ".spec.container"),
        PrinterColumn("Restore Time", ".status.restoreTimestamp"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Queue", ".status.queuePosition", "integer"),
        PrinterColumn("Percent", ".status.percent", "integer"),
        PrinterColumn("Items", ".status.restoredItemCount", "integer", priority=1),
        _REASON,
        _AGE,
    ),
)

BLOB_COPY = Kind(
    kind="BlobCopy",
    plural="blobcopies",
    singular="blobcopy",
    short_names=("bc",),
    spec=BlobCopySpec,
    status=BlobCopyStatus,
    description="Copies blobs within or across storage accounts, server-side or streamed by Ferry.",
    progress=ProgressFields("bytesCopied", "totalBytes", "B", ("Running",)),
    columns=(
        PrinterColumn("Mode", ".spec.mode"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Status", ".status.copyStatus"),
        PrinterColumn("Progress", ".status.progress"),
        PrinterColumn("Blobs", ".status.blobs.succeeded", "integer", priority=1),
        _REASON,
        _AGE,
    ),
)

ALL_KINDS: tuple[Kind, ...] = (DATABASE_ACCOUNT, CONTAINER_COPY_JOB, IN_ACCOUNT_RESTORE, BLOB_COPY)
