"""BlobCopy: an asynchronous copy of blobs within or across storage accounts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from ferry.api.common import (
    BlobContainerName,
    Condition,
    DurationBounds,
    Failure,
    FerryModel,
    Printable,
    SecretKeySelector,
    WorkerStatus,
    conditions_field,
    no_credentials_in_url,
)
from ferry.api.storageaccount import StorageAccountRef


class BlobCopyMode(StrEnum):
    SERVER_SIDE = "ServerSide"  # the storage service copies; Ferry schedules and monitors
    STREAM = "Stream"  # Ferry's worker moves the bytes in blocks


class Overwrite(StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"
    IF_SOURCE_NEWER = "IfSourceNewer"


class BlobCopyPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    PAUSING = "Pausing"  # suspended; the worker is still stopping at its checkpoint
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class CopyStatus(StrEnum):
    """The storage service's x-ms-copy-status values, and `skipped` when the overwrite policy kept the destination."""

    PENDING = "pending"
    SUCCESS = "success"
    ABORTED = "aborted"
    FAILED = "failed"
    SKIPPED = "skipped"


# Set on Stream workers when the operator allows source URLs whose host is link-local (chart value
# workers.allowLinkLocalSources).
ALLOW_LINK_LOCAL_ENV = "FERRY_ALLOW_LINK_LOCAL_SOURCES"
# What the workers read a source or destination account from: <prefix>_CONNECTION_STRING, or _BLOB_ENDPOINT and the
# identity's _CLIENT_ID and _TENANT_ID.
SOURCE_ENV_PREFIX = "FERRY_SOURCE"
DESTINATION_ENV_PREFIX = "FERRY_DESTINATION"
# Set on the worker pods of a copy spread over spec.workers: 0 is the coordinator, which lists the source.
WORKER_INDEX_ENV = "FERRY_WORKER_INDEX"
MAX_WORKERS = 64  # spec.workers at most: each pod takes a worker slot


class BlobCopySource(FerryModel):
    """Where to copy from: exactly one of url, urlSecretRef or account."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "[has(self.url), has(self.urlSecretRef), has(self.account)].filter(x, x).size() == 1",
            "message": "exactly one of url, urlSecretRef or account must be set",
        },
        {
            "rule": "!has(self.account) || has(self.container)",
            "message": "container is required when the source is an account",
        },
        {
            "rule": "!(has(self.blob) && has(self.prefix))",
            "message": "blob and prefix are mutually exclusive",
        },
        {
            "rule": "has(self.account) || (!has(self.container) && !has(self.prefix))",
            "message": "container and prefix apply only to an account source",
        },
        no_credentials_in_url(
            "url",
            "url must not carry credentials (user:password@host): put the URL in a Secret and use urlSecretRef",
        ),
    ]

    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=4096,
        description="A public or otherwise unauthenticated HTTP(S) URL of one object. "
        "Put URLs that carry a SAS token in a Secret and use urlSecretRef instead.",
    )
    url_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding a URL of one object, typically a blob SAS URL."
    )
    account: StorageAccountRef | None = Field(default=None, description="A storage account of the source.")
    container: BlobContainerName | None = Field(default=None, min_length=3, max_length=63)
    blob: str | None = Field(default=None, min_length=1, max_length=1024, description="One blob.")
    prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Every blob whose name starts with this prefix. Without blob or prefix, the whole container.",
    )


class BlobCopyDestination(FerryModel):
    """Where to copy to."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!(has(self.blob) && has(self.prefix))",
            "message": "blob and prefix are mutually exclusive",
        },
    ]

    account: StorageAccountRef
    container: BlobContainerName = Field(min_length=3, max_length=63)
    blob: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Destination blob name for a single-blob copy; defaults to the source blob's name.",
    )
    prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="For multi-blob copies: the source prefix is replaced by this one in destination names.",
    )


class BlobCopySpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.source == oldSelf.source", "message": "source is immutable"},
        {"rule": "self.destination == oldSelf.destination", "message": "destination is immutable"},
        {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
        {"rule": "self.workers == oldSelf.workers", "message": "workers is immutable"},
        {
            # Same Secret (or blob endpoint), container and names: the copy would be its own source. Different
            # Secrets of one account are caught by the worker, which compares the resolved blob URLs.
            "rule": "!(has(self.source.account)"
            " && (has(self.source.account.secretRef) && has(self.destination.account.secretRef)"
            " ? self.source.account.secretRef.name == self.destination.account.secretRef.name"
            " && self.source.account.secretRef.key == self.destination.account.secretRef.key"
            " : has(self.source.account.blobEndpoint) && has(self.destination.account.blobEndpoint)"
            " && self.source.account.blobEndpoint == self.destination.account.blobEndpoint)"
            " && self.source.container == self.destination.container"
            " && (has(self.source.blob)"
            " ? (has(self.destination.blob) ? self.destination.blob : self.source.blob) == self.source.blob"
            " : (has(self.destination.prefix) ? self.destination.prefix : (has(self.source.prefix)"
            " ? self.source.prefix : '')) == (has(self.source.prefix) ? self.source.prefix : '')))",
            "message": "the destination is the source: choose another container, blob name or prefix",
            "fieldPath": ".destination",
        },
    ]

    source: BlobCopySource
    destination: BlobCopyDestination
    mode: BlobCopyMode = Field(default=BlobCopyMode.SERVER_SIDE)
    overwrite: Overwrite = Field(
        default=Overwrite.ALWAYS,
        description="Always replaces the destination; Never skips existing destination blobs; "
        "IfSourceNewer copies only when the source was modified after the destination.",
    )
    verify_content_md5: bool = Field(
        default=False,
        alias="verifyContentMD5",
        description="After the copy, check the destination's content MD5 against the source's.",
    )
    lock_source: bool = Field(
        default=False, description="Hold an infinite lease on each source blob while it is copied."
    )
    lock_destination: bool = Field(
        default=False,
        description="Hold an infinite lease on each destination blob from the start of its copy to its end.",
    )
    suspend: bool = Field(default=False, description="Pause the copy; set back to false to resume.")
    block_size_mi_b: int = Field(
        default=4, ge=1, le=4000, alias="blockSizeMiB", description="Stream mode: block size in MiB."
    )
    parallelism: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Blobs in flight at once in each worker pod (a multi-blob copy), or blocks in flight within "
        "one large blob.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Worker pods sharing a multi-blob copy: one lists the source and all copy its pages. "
        "Each takes a worker slot. A single-blob copy uses one.",
    )
    max_lifetime: Annotated[str, DurationBounds("1s", "8760h")] = Field(
        default="336h",
        description="A copy still pending after this long is aborted and fails (default 14 days).",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="How often a failed or aborted blob copy, or a failed worker, is restarted.",
    )


class BlobCounts(FerryModel):
    """Blob counts of a multi-blob copy, by state."""

    total: int = 0
    pending: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    listing: bool | None = Field(
        default=None, description="True while the source is still being listed: total grows until then."
    )
    listed: int | None = Field(default=None, description="Source blobs listed so far, while listing.")


class BlobFailureEntry(FerryModel):
    """One blob that failed to copy (the full list is in the manifest: `ferry blobcopy failures`)."""

    name: Printable
    reason: str
    message: Printable


FIRST_FAILURES = 5  # failures kept in the status; the manifest keeps them all


class BlobCopyProgress(FerryModel):
    """The part of the status the worker pods write: what the copy itself reports."""

    copy_id: str | None = None
    copy_status: CopyStatus | None = None
    progress: str | None = Field(default=None, description="Bytes copied out of the total, as X/Y.")
    bytes_copied: int | None = None
    total_bytes: int | None = None
    source_e_tag: str | None = Field(default=None, alias="sourceETag")
    status_description: str | None = None
    blobs: BlobCounts | None = None
    failures: list[BlobFailureEntry] | None = Field(
        default=None,
        max_length=FIRST_FAILURES,
        description="The first failed blobs of a multi-blob copy; `ferry blobcopy failures` lists them all.",
    )
    last_update_time: datetime | None = Field(default=None, description="When the worker last reported.")


class HelperWorker(WorkerStatus):
    """One of the other worker pods of a copy spread over spec.workers (the coordinator is status.worker)."""

    index: int = Field(ge=1, description="The worker's index: 1 up to spec.workers - 1.")
    done: bool = Field(default=False, description="It ended: it found no page left to copy, or gave up.")


class BlobCopyOperatorStatus(FerryModel):
    """The part of the status the operator writes: the copy's lifecycle."""

    phase: BlobCopyPhase | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    worker: WorkerStatus | None = None
    helpers: list[HelperWorker] | None = Field(
        default=None,
        max_length=MAX_WORKERS,
        description="The other worker pods of a copy spread over spec.workers, beside status.worker (the coordinator).",
    )
    cleanup: WorkerStatus | None = Field(default=None, description="The cleanup worker, when one was needed.")
    failure: Failure | None = None
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None


class BlobCopyStatus(BlobCopyOperatorStatus, BlobCopyProgress):
    """The whole status: each part has one writer (server-side apply, one field manager per part)."""
