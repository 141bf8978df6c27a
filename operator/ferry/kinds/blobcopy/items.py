"""What a BlobCopy copies: its source objects, their destination names, and shared run state."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobProperties, ContainerClient

from ferry.api.blobcopy import BlobCopyMode, BlobCopySpec
from ferry.storage.addresses import link_local_addresses
from ferry.storage.blobaccount import BlobAccount, ReadSigner
from ferry.storage.blobs import RetryRecorder, describe, error_code, redact
from ferry.storage.sources import SourceObject, SourceUnavailableError, from_blob_properties, listed, open_url_source

# Metadata of Ferry's Stream-mode placeholder: the destination shows Ferry's pending copy the way
# the service shows its own (a zero-length blob with copy properties) until the final commit.
MARK_ID = "ferrycopyid"
MARK_KEY = "ferrycopykey"
MARK_STATE = "ferrycopystate"
MARK_ETAG = "ferrysourceetag"

PENDING = "pending"
ABORTED = "aborted"

PAGE_SIZE = 5000  # blobs per listing page: the service's maximum, and a multi-blob copy's unit of work


class BlobFailure(Exception):
    """A terminal failure of one blob's copy, with a machine reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(redact(message))
        self.reason = reason
        self.message = redact(message)


class AlreadyCopied(Exception):
    """The destination already holds this copy's finished copy of the source (found again after a restart)."""


class CopyStopped(Exception):
    """The stop event was set; progress is checkpointed in the destination and the status."""


class TransientWorkerError(Exception):
    """Transient failures outlasted the bounded retries: run the worker again later."""


@dataclass
class Endpoints:
    """Where a copy reads and writes: the source account (or a source URL) and the destination account; a
    connection string stands for the account it names."""

    source_account: BlobAccount | str | None
    source_url: str | None
    destination_account: BlobAccount | str
    allow_link_local: bool = False
    source: BlobAccount | None = field(init=False)
    destination: BlobAccount = field(init=False)

    def __post_init__(self) -> None:
        source, destination = self.source_account, self.destination_account
        if isinstance(source, str):
            source = BlobAccount(connection_string=source) if source else None
        self.source = source
        self.destination = BlobAccount(connection_string=destination) if isinstance(destination, str) else destination


@dataclass
class CopyItem:
    source: SourceObject
    dest_name: str
    dest: BlobClient


@dataclass
class RunContext:
    spec: BlobCopySpec
    copy_key: str
    copy_id: str
    stop: threading.Event
    recorder: RetryRecorder
    dest_container: ContainerClient
    source_signer: ReadSigner | None  # read SAS for the service, for a source in an account
    start_time: datetime
    max_lifetime: timedelta
    resuming: bool
    add_bytes: Callable[[int], None]
    note: Callable[[str], None]
    # Multi-blob Stream copies keep Ferry's id and the source ETag in the copied blob's metadata, so that a
    # restarted worker recognises (and counts once) the blobs it finished before; the service's own copy
    # properties serve that purpose for ServerSide copies.
    mark_done: bool = False
    stats: dict[str, int] = field(default_factory=lambda: {"blocksStaged": 0, "blocksReused": 0})
    stats_lock: threading.Lock = field(default_factory=threading.Lock)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise CopyStopped("stop requested")

    def check_lifetime(self) -> None:
        """A copy may stay pending at most spec.maxLifetime, as the service terminates its own after two weeks."""
        if datetime.now(UTC) - self.start_time > self.max_lifetime:
            raise BlobFailure(
                "MaxLifetimeExceeded",
                f"the copy was still pending after {self.spec.max_lifetime} (spec.maxLifetime) and was aborted",
            )

    def count(self, stat: str, n: int = 1) -> None:
        with self.stats_lock:
            self.stats[stat] = self.stats.get(stat, 0) + n

    @property
    def source_lease_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:{self.copy_id}:source"))

    @property
    def dest_lease_id(self) -> str:
        return dest_lease_id(self.copy_id)


def ferry_copy_id(copy_key: str) -> str:
    """Ferry's own id for one BlobCopy's work: stable across worker restarts, so leases and markers match."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:{copy_key}:copy"))


def dest_lease_id(copy_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:{copy_id}:destination"))


def source_lease_id(copy_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:{copy_id}:source"))


def destination_name(spec: BlobCopySpec, source_name: str) -> str:
    """destination.blob, or the source's name with the source prefix replaced by destination.prefix."""
    if spec.destination.blob:
        return spec.destination.blob
    src_prefix = spec.source.prefix or ""
    if spec.destination.prefix is not None and source_name.startswith(src_prefix):
        return spec.destination.prefix + source_name[len(src_prefix) :]
    return source_name


def url_object_name(url: str) -> str:
    """The last path segment of a URL source (the default destination name)."""
    path = unquote(urlsplit(url).path).rstrip("/")
    return path.rpartition("/")[2] or "object"


def is_single(spec: BlobCopySpec) -> bool:
    return spec.source.account is None or spec.source.blob is not None


def _source_label(spec: BlobCopySpec) -> str:
    """The source as a user named it, for messages (URLs stay out: they may carry a SAS)."""
    if spec.source.account is None:
        return "the source URL"
    where = f"container {spec.source.container}"
    if spec.source.blob is not None:
        return f"blob {spec.source.blob} in {where}"
    return f"prefix {spec.source.prefix} in {where}" if spec.source.prefix else where


def list_sources(spec: BlobCopySpec, endpoints: Endpoints, recorder: RetryRecorder) -> list[SourceObject]:
    """The source object of a single-blob copy, described once (size, ETag, type, settings, metadata)."""
    with source_errors(spec):
        if spec.source.account is None:
            if not endpoints.source_url:
                raise BlobFailure("InvalidSource", "the source URL is not configured (FERRY_SOURCE_URL)")
            refused = [] if endpoints.allow_link_local else link_local_addresses(endpoints.source_url)
            if refused:
                raise BlobFailure(
                    "SourceAddressNotAllowed",
                    f"the source URL's host resolves to the link-local address {refused[0]} (where the cloud "
                    "metadata service answers): refused unless the operator allows it (chart value "
                    "workers.allowLinkLocalSources)",
                )
            return [open_url_source(endpoints.source_url, recorder, url_object_name(endpoints.source_url))]
        container = source_container(spec, endpoints, recorder)
        assert spec.source.blob is not None, "multi-blob copies list page by page (list_page)"
        client = container.get_blob_client(spec.source.blob)
        return [from_blob_properties(client, client.get_blob_properties(), spec.source.blob)]


def source_container(spec: BlobCopySpec, endpoints: Endpoints, recorder: RetryRecorder) -> ContainerClient:
    if endpoints.source is None:
        raise BlobFailure("InvalidSource", "the source account is not configured (FERRY_SOURCE_*)")
    return endpoints.source.container_client(spec.source.container or "", recorder)


def list_page(
    spec: BlobCopySpec, container: ContainerClient, marker: str | None, size: int = PAGE_SIZE
) -> tuple[list[SourceObject], str | None]:
    """One page of the source listing (`size` blobs) from `marker`, and the marker of the next page."""
    # Stream writes the source's metadata itself; Copy Blob carries it over without Ferry reading it.
    include = ["metadata"] if spec.mode == BlobCopyMode.STREAM else None
    with source_errors(spec):
        pager = container.list_blobs(
            name_starts_with=spec.source.prefix, include=include, results_per_page=size
        ).by_page(continuation_token=marker)
        page = [listed(props) for props in next(pager)]
        following: str | None = getattr(pager, "continuation_token", None)  # set by the SDK's pager
        return page, following or None


def list_again(
    spec: BlobCopySpec, container: ContainerClient, marker: str | None, last: str | None, size: int = PAGE_SIZE
) -> list[SourceObject]:
    """A page listed before, from its marker through its last blob's name.

    Bounded by the name, not by the count: blobs added to the page's range since do not push its own last
    blobs out of it (they would be in neither this page nor the next, whose marker is fixed). Pages recorded
    without a last name are listed by count, as they were.
    """
    if last is None:
        return list_page(spec, container, marker, size)[0]
    found: list[SourceObject] = []
    while True:
        sources, following = list_page(spec, container, marker, size)
        for source in sources:
            if source.name > last:  # listings are in name order
                return found
            found.append(source)
        if following is None:
            return found
        marker = following


@contextmanager
def source_errors(spec: BlobCopySpec) -> Iterator[None]:
    """Permanent errors of reading the source as the BlobFailures users see."""
    try:
        yield
    except ResourceNotFoundError as error:
        raise BlobFailure(
            "SourceNotFound", f"the source {_source_label(spec)} does not exist: {describe(error)}"
        ) from error
    except SourceUnavailableError as error:
        reason = {404: "SourceNotFound", 401: "SourceAccessDenied", 403: "SourceAccessDenied"}.get(
            error.status, "SourceRedirected" if 300 <= error.status < 400 else "SourceUnavailable"
        )
        raise BlobFailure(reason, f"the source URL cannot be read: {error}") from error
    except HttpResponseError as error:
        if error.status_code in (401, 403):
            raise BlobFailure(
                "SourceAccessDenied", f"the source {_source_label(spec)} refused access: {describe(error)}"
            ) from error
        raise


def source_signer(endpoints: Endpoints, lifetime: timedelta, recorder: RetryRecorder) -> ReadSigner | None:
    """What signs the service's reads of a source in another account: its key, or its identity's delegation key."""
    if endpoints.source is None:
        return None
    return ReadSigner(endpoints.source, lifetime, recorder)


def dest_properties(client: BlobClient) -> BlobProperties | None:
    try:
        return client.get_blob_properties()
    except ResourceNotFoundError:
        return None


def final_metadata(ctx: RunContext, source: SourceObject) -> dict[str, str]:
    """The metadata a finished copy carries: the source's, plus Ferry's mark for multi-blob copies."""
    if not ctx.mark_done:
        return source.metadata
    return {**source.metadata, MARK_ID: ctx.copy_id, MARK_ETAG: source.etag}


def copied_by_us(ctx: RunContext, source: SourceObject, props: BlobProperties | None) -> bool:
    """Whether this destination is this copy's finished copy of this very source (ETag) version."""
    if props is None or not ctx.mark_done:
        return False
    metadata = props.metadata or {}
    return (
        metadata.get(MARK_ID) == ctx.copy_id and metadata.get(MARK_ETAG) == source.etag and MARK_STATE not in metadata
    )


def pending_copy(props: BlobProperties | None) -> tuple[str, str | None] | None:
    """(copy id, Ferry copy key or None for the service's own) of a pending copy to this blob."""
    if props is None:
        return None
    copy = props.copy
    if copy is not None and str(copy.status or "").lower() == PENDING:
        return str(copy.id), None
    metadata = props.metadata or {}
    if metadata.get(MARK_STATE) == PENDING and MARK_ID in metadata:
        return metadata[MARK_ID], metadata.get(MARK_KEY, "")
    return None


def conflict(name: str, copy_id: str) -> BlobFailure:
    return BlobFailure(
        "PendingCopyConflict",
        f"destination blob {name} already has a pending copy (copy id {copy_id}); "
        "only one pending copy per destination is allowed",
    )


def lease_conflict(what: str, error: BaseException) -> BlobFailure:
    return BlobFailure("LeaseConflict", f"{what} is leased by someone else ({error_code(error) or describe(error)})")


def outcome_fields(reason: str, message: str) -> dict[str, Any]:
    return {"failure": {"reason": reason, "message": redact(message)}}
