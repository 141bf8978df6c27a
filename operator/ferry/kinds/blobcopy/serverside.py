"""ServerSide mode: the service's asynchronous Copy Blob, scheduled and monitored by Ferry.

The monitor follows the seed's: list the destination with copy details, restart failed or aborted
copies (up to maxRetries), and abort copies pending past maxLifetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobProperties, ContainerClient

from ferry.api.blobcopy import Overwrite
from ferry.kinds.blobcopy import locks as leases
from ferry.kinds.blobcopy.contentmd5 import verify_server_copy
from ferry.kinds.blobcopy.items import (
    PAGE_SIZE,
    PENDING,
    BlobFailure,
    CopyItem,
    RunContext,
    conflict,
    dest_properties,
    lease_conflict,
    pending_copy,
)
from ferry.kinds.blobcopy.stream import skip_reason, write_conditions
from ferry.storage.blobs import credential_free_url, describe, error_code
from ferry.storage.sources import SourceUnavailableError, TransientSourceError

SAS_MARGIN = timedelta(hours=1)
MAX_POLL = 10.0


@dataclass
class ServerCopy:
    item: CopyItem
    copy_id: str | None = None
    retries: int = 0
    state: str = PENDING  # pending, success, failed, skipped
    failure: BlobFailure | None = None
    skipped: str | None = None
    copied: int = 0
    finished: bool = False  # Copy Blob answered success: the monitor need not look


def _copy_url(ctx: RunContext, item: CopyItem, source_url: str | None) -> str:
    if item.source.http is None and item.source.client is not None and ctx.source_signer is not None:
        return ctx.source_signer.url(item.source.client)
    if source_url:
        return source_url
    return item.source.display_url


def start(
    ctx: RunContext, copy: ServerCopy, source_url: str | None, previous_id: str | None, check: bool = True
) -> None:
    """Schedule (or adopt a pending copy of ours for) one blob.

    Without `check` (a blob not tried before, overwrite Always) the destination is not looked at first:
    the Copy Blob request is the only one, and the service refuses it if a copy is pending there.
    """
    item = copy.item
    look = check or copy.retries > 0 or ctx.spec.overwrite != Overwrite.ALWAYS or ctx.spec.lock_destination
    props = dest_properties(item.dest) if look else None
    if copy.retries == 0 and props is not None and _ours(ctx, item, props, previous_id):
        copy.copy_id = str(props.copy.id)  # the monitor follows it: done, restarted, or waited for
        return
    pending = pending_copy(props)
    if pending is not None:
        raise conflict(item.dest_name, pending[0])
    if copy.retries == 0 and (reason := skip_reason(ctx, item, props)):
        copy.state, copy.skipped = "skipped", reason
        return
    if ctx.spec.lock_source and item.source.client is not None:
        leases.acquire(item.source.client, ctx.source_lease_id, f"source blob {item.source.name}")
    created = False
    if ctx.spec.lock_destination:
        created = leases.lock_destination(item.dest, item.source.blob_type, ctx.dest_lease_id)
    kwargs = write_conditions(ctx, item, created or copy.retries > 0)
    if "lease" in kwargs:  # Copy Blob names the destination's lease differently from other writes
        kwargs["destination_lease"] = kwargs.pop("lease")
    if item.source.etag:
        kwargs.update(source_etag=item.source.etag, source_match_condition=MatchConditions.IfNotModified)
    try:
        result = item.dest.start_copy_from_url(_copy_url(ctx, item, source_url), **kwargs)
    except HttpResponseError as error:
        _start_failed(ctx, copy, error)
        return
    copy.copy_id = str(result.get("copy_id"))
    if str(result.get("copy_status", "")).lower() == "success":
        copy.copied = item.source.size
        copy.finished = True  # the service copied it synchronously: nothing to monitor


def _ours(ctx: RunContext, item: CopyItem, props: BlobProperties, previous_id: str | None) -> bool:
    """Whether the service copy recorded on the destination is one this BlobCopy started (a replaced worker
    follows it instead of copying again): its id is the recorded one, or, when resuming a prefix copy, it
    copies this very source. A finished one counts only if the source has not changed since it ended."""
    state = props.copy
    if state is None or not state.id:
        return False
    mine = state.id == previous_id or (
        ctx.resuming and credential_free_url(str(state.source or "")) == item.source.display_url
    )
    if not mine:
        return False
    if str(state.status or "").lower() == PENDING:
        return True
    ended, changed = state.completion_time, item.source.last_modified
    # The service dates the copy's end to the second: one ended within the copy's first second is ours too.
    started = ctx.start_time.replace(microsecond=0)
    return ended is not None and ended >= started and (changed is None or changed <= ended)


def _start_failed(ctx: RunContext, copy: ServerCopy, error: HttpResponseError) -> None:
    code = error_code(error)
    status = error.status_code or 0
    item = copy.item
    if (status == 412 and code.startswith("Source")) or (status == 412 and _source_moved(item)):
        raise BlobFailure(
            "SourceChanged",
            f"source {item.source.display_url} changed: precondition failed (412, ETag no longer matches)",
        ) from None
    if code == "PendingCopyOperation":
        pending = pending_copy(dest_properties(item.dest))
        raise conflict(item.dest_name, pending[0] if pending else "unknown") from None
    if code.startswith("Lease") or code in ("LeaseIdMissing", "LeaseIdMismatchWithBlobOperation"):
        raise lease_conflict(f"destination blob {item.dest_name}", error) from None
    if status in (409, 412):
        copy.state = "skipped"
        copy.skipped = f"destination blob {item.dest_name} not overwritten ({code or status})"
        return
    if status in (400, 401, 403, 404):
        raise BlobFailure(
            "CopySourceUnreachable", f"the service could not read the source: {describe(error)}"
        ) from None
    raise error


def _source_moved(item: CopyItem) -> bool:
    """Whether the source's ETag differs from the pinned one.

    The service answers SourceConditionNotMet when the source's condition fails, but some servers
    (Azurite among them) answer a plain ConditionNotMet for either side's condition; asking the
    source tells the two apart.
    """
    try:
        if item.source.client is not None:
            return str(item.source.client.get_blob_properties().etag) != item.source.etag
        if item.source.http is not None:
            return item.source.http.describe(item.source.name).etag != item.source.etag
    except (HttpResponseError, SourceUnavailableError, TransientSourceError):
        return False  # unknown: treat it as the destination's condition, which skips the blob
    return False


def poll(ctx: RunContext, copies: list[ServerCopy]) -> dict[str, BlobProperties]:
    """Destination properties with copy details, by name: one listing, as the seed's monitor does."""
    active = [c for c in copies if c.state == PENDING]
    if len(active) == 1:
        props = dest_properties(active[0].item.dest)
        return {active[0].item.dest_name: props} if props is not None else {}
    prefix = common_prefix([c.item.dest_name for c in active])
    wanted = {c.item.dest_name for c in active}
    return {
        p.name: p
        for p in ctx.dest_container.list_blobs(name_starts_with=prefix or None, include=["copy"])
        if p.name in wanted
    }


def monitor(ctx: RunContext, copies: list[ServerCopy], source_url: str | None, on_progress: object) -> None:
    """Poll until every scheduled copy is terminal; restart failed/aborted ones within maxRetries."""
    delay = 0.5
    while True:
        active = [c for c in copies if c.state == PENDING and c.copy_id is not None]
        if not active:
            return
        seen = poll(ctx, active)
        now = datetime.now(UTC)
        for copy in active:
            advance(ctx, copy, seen.get(copy.item.dest_name), source_url, now)
        if callable(on_progress):
            on_progress()
        if any(c.state == PENDING for c in copies):
            if ctx.stop.wait(delay):
                ctx.check_stop()
            delay = min(delay * 2, MAX_POLL)


def settle(ctx: RunContext, copy: ServerCopy) -> None:
    """A copy the service finished when it was scheduled: verify it if asked, else it succeeded."""
    if ctx.spec.verify_content_md5:
        try:
            verify_server_copy(copy.item)
        except BlobFailure as failure:
            copy.state, copy.failure = "failed", failure
            return
    copy.state = "success"


def advance(
    ctx: RunContext, copy: ServerCopy, props: BlobProperties | None, source_url: str | None, now: datetime
) -> None:
    """Move one scheduled copy on from what the destination shows: done, restarted, aborted or still pending."""
    state = props.copy if props is not None else None
    status = str(state.status or "").lower() if state is not None else ""
    if state is None or state.id != copy.copy_id:
        copy.state = "failed"
        copy.failure = BlobFailure(
            "CopyLost", f"the copy {copy.copy_id} to {copy.item.dest_name} is no longer on the destination"
        )
    elif status == "success":
        copy.copied = copy.item.source.size
        settle(ctx, copy)
    elif status in ("failed", "aborted"):
        why = describe_status(state.status_description)
        if copy.retries < ctx.spec.max_retries:
            copy.retries += 1
            ctx.note(f"copy to {copy.item.dest_name} {status} ({why}); restart {copy.retries}")
            copy.copy_id = None
            try:
                start(ctx, copy, source_url, None)
            except BlobFailure as failure:
                copy.state, copy.failure = "failed", failure
            else:
                if copy.finished and copy.state == PENDING:
                    settle(ctx, copy)
        else:
            copy.state = "failed"
            copy.failure = BlobFailure(
                "CopyFailed", f"copy to {copy.item.dest_name} {status} after {copy.retries} restarts: {why}"
            )
    else:  # pending
        copy.copied = _progress(state.progress)
        if state.status_description:
            ctx.note(describe_status(state.status_description))
        if now - ctx.start_time > ctx.max_lifetime:
            try:
                copy.item.dest.abort_copy(str(copy.copy_id))
            except HttpResponseError as error:
                ctx.note(f"abort of {copy.copy_id} failed: {describe(error)}")
            copy.state = "failed"
            copy.failure = BlobFailure(
                "MaxLifetimeExceeded",
                f"copy {copy.copy_id} to {copy.item.dest_name} was pending longer than "
                f"{ctx.spec.max_lifetime} and was aborted",
            )


def list_copies(container: ContainerClient, names: list[str]) -> dict[str, BlobProperties]:
    """The destination blobs of `names` with their copy details, from a listing (one request per 5,000
    blobs) of the range the names span, not one property read per blob."""
    if not names:
        return {}
    wanted = set(names)
    last = max(names)
    found: dict[str, BlobProperties] = {}
    for props in container.list_blobs(
        name_starts_with=common_prefix(names) or None, include=["copy", "metadata"], results_per_page=PAGE_SIZE
    ):
        if props.name in wanted:
            found[props.name] = props
        if props.name >= last:
            break  # listings are in name order: nothing further is wanted
    return found


def common_prefix(names: list[str]) -> str:
    """The longest string every name starts with (character-wise: blob names are not paths)."""
    if not names:
        return ""
    low, high = min(names), max(names)  # the extremes bound every other name's common prefix
    size = 0
    while size < min(len(low), len(high)) and low[size] == high[size]:
        size += 1
    return low[:size]


def _progress(text: str | None) -> int:
    copied, _, _total = (text or "0/0").partition("/")
    return int(copied) if copied.isdigit() else 0


def describe_status(text: str | None) -> str:
    from ferry.storage.blobs import redact

    return redact(text or "no description")
