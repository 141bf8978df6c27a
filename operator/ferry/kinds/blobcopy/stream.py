"""Stream mode: Ferry's worker moves the bytes itself, ranged reads straight into staged blocks.

Block ids are derived from (copy key, source ETag, block index), so a restarted worker finds the
blocks it already staged in the destination's uncommitted block list and does not send them again.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.storage.blob import BlobBlock, BlobClient, BlobProperties, ContentSettings

from ferry.api.blobcopy import BlobCopySpec, Overwrite
from ferry.kinds.blobcopy import locks as leases
from ferry.kinds.blobcopy.contentmd5 import md5_of_blob, verify_md5
from ferry.kinds.blobcopy.items import (
    ABORTED,
    MARK_ETAG,
    MARK_ID,
    MARK_KEY,
    MARK_STATE,
    PENDING,
    AlreadyCopied,
    BlobFailure,
    CopyItem,
    RunContext,
    conflict,
    copied_by_us,
    dest_properties,
    final_metadata,
    pending_copy,
)
from ferry.storage.sources import APPEND_BLOB, BLOCK_BLOB, PAGE_BLOB, SourceObject, page_ranges, read_range

MiB = 1024 * 1024
PAGE_CHUNK = 4 * MiB  # Put Page's maximum
APPEND_CHUNK = 4 * MiB  # Append Block's classic maximum, accepted everywhere
# Blocks submitted ahead of the one being hashed: enough that no worker idles while the oldest
# block finishes, few enough that memory stays at a few blocks per worker.
IN_FLIGHT_PER_WORKER = 2
SMALL_BLOB_MAX = 4 * MiB  # the clients' max_single_put_size: one Put Blob


def block_id(copy_key: str, etag: str, index: int) -> str:
    digest = hashlib.sha256(f"{copy_key}\0{etag}\0{index}".encode()).hexdigest()[:40]
    return base64.b64encode(f"ferry-{digest}".encode()).decode()


def skip_reason(ctx: RunContext, item: CopyItem, props: BlobProperties | None) -> str | None:
    """Why this blob is not copied under the overwrite policy, or None."""
    return skip_reason_of(ctx, item.source, item.dest_name, props)


def skip_reason_of(ctx: RunContext, source: SourceObject, dest_name: str, props: BlobProperties | None) -> str | None:
    if props is None:
        return None
    mode = ctx.spec.overwrite
    if mode == Overwrite.NEVER:
        return f"destination blob {dest_name} exists and overwrite is Never"
    if mode == Overwrite.IF_SOURCE_NEWER:
        src, dst = source.last_modified, props.last_modified
        if src is not None and dst is not None and src <= dst:
            return f"destination blob {dest_name} is not older than the source and overwrite is IfSourceNewer"
    return None


def write_conditions(ctx: RunContext, item: CopyItem, created_by_us: bool) -> dict[str, Any]:
    """Destination access conditions of the first write, so the overwrite policy is race-safe."""
    conditions: dict[str, Any] = {}
    if ctx.spec.lock_destination:
        conditions["lease"] = ctx.dest_lease_id
    if ctx.spec.overwrite == Overwrite.NEVER and not created_by_us:
        # If-None-Match:* needs no etag; the SDK would pass a leftover etag on to the transport.
        conditions["match_condition"] = MatchConditions.IfMissing
    elif ctx.spec.overwrite == Overwrite.IF_SOURCE_NEWER and item.source.last_modified is not None:
        conditions["if_unmodified_since"] = item.source.last_modified
    return conditions


def copy_stream(ctx: RunContext, item: CopyItem) -> str | None:
    """Copy one object by streaming; returns a skip reason, or None when copied."""
    props = dest_properties(item.dest)
    if copied_by_us(ctx, item.source, props):
        raise AlreadyCopied(item.dest_name)
    pending = pending_copy(props)
    ours = pending is not None and pending[1] == ctx.copy_key
    if pending is not None and not ours:
        raise conflict(item.dest_name, pending[0])
    if not ours and (reason := skip_reason(ctx, item, props)):
        return reason
    if ctx.spec.lock_source and item.source.client is not None:
        leases.acquire(item.source.client, ctx.source_lease_id, f"source blob {item.source.name}")
    created = False
    if ctx.spec.lock_destination:
        created = leases.lock_destination(item.dest, item.source.blob_type, ctx.dest_lease_id)

    resume = False
    if ours and props is not None:
        if (props.metadata or {}).get(MARK_ETAG) != item.source.etag:
            raise BlobFailure(
                "SourceChanged",
                f"source {item.source.display_url} changed while the copy was pending: "
                "precondition failed (412, ETag no longer matches)",
            )
        resume = True
    if not resume:
        try:
            _placeholder(ctx, item, write_conditions(ctx, item, created))
        except (ResourceExistsError, ResourceModifiedError) as error:
            return (
                f"destination blob {item.dest_name} appeared or changed concurrently; "
                f"not overwritten ({error.status_code})"
            )
        except HttpResponseError as error:
            if error.status_code in (409, 412) and ctx.spec.overwrite != Overwrite.ALWAYS:
                return f"destination blob {item.dest_name} appeared or changed concurrently; not overwritten"
            raise

    lease = ctx.dest_lease_id if ctx.spec.lock_destination else None
    if item.source.blob_type == PAGE_BLOB and item.source.client is not None:
        _copy_pages(ctx, item, lease, resume)
        _finalize(ctx, item, lease)
    elif item.source.blob_type == APPEND_BLOB:
        _copy_append(ctx, item, lease, resume)
        _finalize(ctx, item, lease)
    else:
        _copy_blocks(ctx, item, lease)
    return None


def is_small(spec: BlobCopySpec, source: SourceObject) -> bool:
    """Whether one Put Blob copies it: a block blob of at most one block, with nothing to lock or verify."""
    return (
        source.blob_type == BLOCK_BLOB
        and source.size <= min(spec.block_size_mi_b * MiB, SMALL_BLOB_MAX)
        and not (spec.lock_source or spec.lock_destination or spec.verify_content_md5)
    )


def _marker(ctx: RunContext, item: CopyItem) -> dict[str, str]:
    return {MARK_ID: ctx.copy_id, MARK_KEY: ctx.copy_key, MARK_STATE: PENDING, MARK_ETAG: item.source.etag}


def _placeholder(ctx: RunContext, item: CopyItem, conditions: dict[str, Any]) -> None:
    """Show Ferry's pending copy on the destination, as the service does for its own."""
    metadata = _marker(ctx, item)
    if item.source.blob_type == PAGE_BLOB and item.source.client is not None:
        item.dest.create_page_blob(item.source.size, metadata=metadata, **conditions)
    elif item.source.blob_type == APPEND_BLOB:
        item.dest.create_append_blob(metadata=metadata, **conditions)
    else:
        # upload_blob expresses If-None-Match:* as overwrite=False.
        if_missing = conditions.pop("match_condition", None) == MatchConditions.IfMissing
        conditions.pop("etag", None)
        item.dest.upload_blob(b"", overwrite=not if_missing, metadata=metadata, **conditions)


def _ranges(size: int, block: int) -> Iterator[tuple[int, int, int]]:
    for index, offset in enumerate(range(0, size, block)):
        yield index, offset, min(block, size - offset)


def _copy_blocks(ctx: RunContext, item: CopyItem, lease: str | None) -> None:
    source = item.source
    block = ctx.spec.block_size_mi_b * MiB
    ids = [block_id(ctx.copy_key, source.etag, i) for i, _, _ in _ranges(source.size, block)]
    staged: dict[str, int] = {}
    _committed, uncommitted = item.dest.get_block_list("uncommitted", lease=lease)
    for b in uncommitted:
        staged[b.id] = int(b.size)

    # The MD5 is computed only when verifyContentMD5 asks for it; otherwise the destination carries
    # the source's stored Content-MD5 (or none), as the service's own copy does.
    hashing = ctx.spec.verify_content_md5

    def move(index: int, offset: int, length: int) -> bytes | None:
        ctx.check_stop()
        ctx.check_lifetime()
        data = None
        if staged.get(ids[index]) == length:
            ctx.count("blocksReused")  # staged before a restart: not sent again
        else:
            data = read_range(source, offset, length)
            item.dest.stage_block(ids[index], data, length=length, lease=lease)
            ctx.count("blocksStaged")
        if hashing and data is None:
            data = read_range(source, offset, length)
        ctx.add_bytes(length)
        return data if hashing else None

    md5 = hashlib.md5(usedforsecurity=False)

    def consume(done: Future[bytes | None]) -> None:
        data = done.result()
        if data is not None:
            md5.update(data)  # in block order; hashlib releases the GIL while the workers move bytes

    window: deque[Future[bytes | None]] = deque()
    parallelism = ctx.spec.parallelism
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="ferry-block") as pool:
        try:
            for index, offset, length in _ranges(source.size, block):
                if len(window) >= IN_FLIGHT_PER_WORKER * parallelism:
                    consume(window.popleft())
                ctx.check_stop()
                window.append(pool.submit(move, index, offset, length))
            while window:
                consume(window.popleft())
        finally:
            for pending in window:
                pending.cancel()
    ctx.check_stop()
    digest = md5.digest() if hashing else None
    settings = settings_with_md5(source.content_settings, digest or source.content_md5)
    item.dest.commit_block_list(
        [BlobBlock(block_id=i) for i in ids],
        content_settings=settings,
        metadata=final_metadata(ctx, item.source),
        lease=lease,
    )
    if digest is not None:
        verify_md5(item, expected=source.content_md5 or digest, actual=digest)


def settings_with_md5(settings: ContentSettings, md5: bytes | None) -> ContentSettings:
    return ContentSettings(
        content_type=settings.content_type,
        content_encoding=settings.content_encoding,
        content_language=settings.content_language,
        content_disposition=settings.content_disposition,
        cache_control=settings.cache_control,
        content_md5=bytearray(md5) if md5 is not None else None,
    )


def _written(item: CopyItem, lease: str | None) -> list[tuple[int, int]]:
    """[start, end) ranges already written to the destination page blob (before a restart)."""
    ranges, _cleared = item.dest.get_page_ranges(lease=lease)
    return [(int(r["start"]), int(r["end"]) + 1) for r in ranges]


def _copy_pages(ctx: RunContext, item: CopyItem, lease: str | None, resume: bool) -> None:
    source = item.source
    # Put Page is atomic per request, so a chunk inside the destination's written ranges was
    # completed before the restart and is not sent again.
    written = _written(item, lease) if resume else []
    chunks: list[tuple[int, int]] = []
    reused = 0
    for start, end in page_ranges(source):
        for offset in range(start, end, PAGE_CHUNK):
            length = min(PAGE_CHUNK, end - offset)
            if any(lo <= offset and offset + length <= hi for lo, hi in written):
                reused += length
                ctx.count("blocksReused")
            else:
                chunks.append((offset, length))
    ctx.add_bytes(reused)

    def move(offset: int, length: int) -> None:
        ctx.check_stop()
        ctx.check_lifetime()
        data = read_range(source, offset, length)
        item.dest.upload_page(data, offset=offset, length=length, lease=lease)
        ctx.add_bytes(length)

    with ThreadPoolExecutor(max_workers=ctx.spec.parallelism, thread_name_prefix="ferry-page") as pool:
        for done in [pool.submit(move, offset, length) for offset, length in chunks]:
            done.result()
    # Sparse gaps hold zeros on both sides: count them as copied.
    ctx.add_bytes(source.size - sum(length for _, length in chunks) - reused)


def _copy_append(ctx: RunContext, item: CopyItem, lease: str | None, resume: bool) -> None:
    source = item.source
    offset = 0
    if resume and (props := dest_properties(item.dest)) is not None:
        offset = int(props.size or 0)  # blocks appended before the restart stay
        ctx.add_bytes(offset)
    while offset < source.size:
        ctx.check_stop()
        ctx.check_lifetime()
        length = min(APPEND_CHUNK, source.size - offset)
        data = read_range(source, offset, length)
        item.dest.append_block(data, length=length, appendpos_condition=offset, lease=lease)
        offset += length
        ctx.add_bytes(length)


def _finalize(ctx: RunContext, item: CopyItem, lease: str | None) -> None:
    """Give page and append copies the source's settings and metadata (replacing the marker)."""
    ctx.check_stop()
    item.dest.set_http_headers(settings_with_md5(item.source.content_settings, item.source.content_md5), lease=lease)
    item.dest.set_blob_metadata(final_metadata(ctx, item.source), lease=lease)
    if ctx.spec.verify_content_md5:
        expected = item.source.content_md5 or md5_of_blob(item.source)
        verify_md5(item, expected=expected, actual=md5_of_blob(item.dest))


def abort_pending(client: BlobClient, props: BlobProperties, lease: str | None) -> None:
    """Leave Ferry's pending copy as Abort Copy Blob leaves the service's: metadata kept, content empty."""
    metadata = dict(props.metadata or {})
    metadata[MARK_STATE] = ABORTED
    kwargs: dict[str, Any] = {"lease": lease} if lease else {}
    blob_type = str(props.blob_type).lower()
    if blob_type.endswith("blockblob"):
        client.commit_block_list([], metadata=metadata, **kwargs)  # also drops the staged blocks
    elif "page" in blob_type:
        client.create_page_blob(int(props.size or 0), metadata=metadata, **kwargs)
    else:
        client.create_append_blob(metadata=metadata, **kwargs)
