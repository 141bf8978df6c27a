"""Small block blobs of a Stream copy of many blobs, moved by one event loop with the SDK's asynchronous clients.

With a thread per request in flight, every response costs a hand-over of the interpreter lock; at 64
small blobs in flight that is a large share of the copy's CPU. One event loop thread keeps as many
small blobs in flight for the CPU of one thread. Each blob is one read (pinned to the listed ETag) and
one Put Blob carrying the source's settings and metadata; the destination is looked at first only when
the overwrite policy needs it or the blob may have been copied before a restart.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobProperties
from azure.storage.blob.aio import ContainerClient

from ferry.api.blobcopy import Overwrite
from ferry.kinds.blobcopy.items import (
    AlreadyCopied,
    RunContext,
    conflict,
    copied_by_us,
    final_metadata,
    pending_copy,
)
from ferry.kinds.blobcopy.stream import settings_with_md5, skip_reason_of
from ferry.storage.blobaccount import BlobAccount
from ferry.storage.blobs import error_code
from ferry.storage.sources import SourceChangedError, SourceObject


class SmallBlobMover:
    """An event loop in its own thread; submit() returns a Future of the skip reason (None: copied)."""

    def __init__(self, ctx: RunContext, source: tuple[BlobAccount, str], destination: tuple[BlobAccount, str]) -> None:
        self.ctx = ctx
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ferry-small-blobs", daemon=True)
        self._thread.start()
        self._source: ContainerClient = source[0].async_container_client(source[1], ctx.recorder)
        self._dest: ContainerClient = destination[0].async_container_client(destination[1], ctx.recorder)

    def submit(self, source: SourceObject, dest_name: str, check: bool) -> Future[str | None]:
        return asyncio.run_coroutine_threadsafe(self._copy(source, dest_name, check), self._loop)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _close(self) -> None:
        await self._source.close()
        await self._dest.close()

    async def _copy(self, source: SourceObject, dest_name: str, check: bool) -> str | None:
        ctx = self.ctx
        ctx.check_stop()
        ctx.check_lifetime()
        dest = self._dest.get_blob_client(dest_name)
        props: BlobProperties | None = None
        if check or ctx.spec.overwrite != Overwrite.ALWAYS:
            try:
                props = await dest.get_blob_properties()
            except ResourceNotFoundError:
                props = None
        if copied_by_us(ctx, source, props):
            raise AlreadyCopied(dest_name)
        pending = pending_copy(props)
        if pending is not None and pending[1] != ctx.copy_key:
            raise conflict(dest_name, pending[0])
        if pending is None and (reason := skip_reason_of(ctx, source, dest_name, props)):
            return reason
        conditions: dict[str, Any] = {}
        overwrite = ctx.spec.overwrite == Overwrite.ALWAYS or pending is not None
        if not overwrite and props is not None and ctx.spec.overwrite == Overwrite.IF_SOURCE_NEWER:
            overwrite = True
            if source.last_modified is not None:
                conditions["if_unmodified_since"] = source.last_modified
        data = await self._read(source)
        ctx.check_stop()
        try:
            await dest.upload_blob(
                data,
                length=len(data),
                overwrite=overwrite,  # False is If-None-Match:*: a blob that appeared since is not replaced
                metadata=final_metadata(ctx, source),
                content_settings=settings_with_md5(source.content_settings, source.content_md5),
                **conditions,
            )
        except (ResourceExistsError, ResourceModifiedError) as error:
            return (
                f"destination blob {dest_name} appeared or changed concurrently; not overwritten ({error.status_code})"
            )
        except HttpResponseError as error:
            if error_code(error) == "PendingCopyOperation":
                raise conflict(dest_name, "of the storage service") from None
            raise
        ctx.add_bytes(len(data))
        return None

    async def _read(self, source: SourceObject) -> bytes:
        if not source.size:
            return b""
        blob = self._source.get_blob_client(source.name)
        try:
            downloader = await blob.download_blob(etag=source.etag, match_condition=MatchConditions.IfNotModified)
            return await downloader.readall()
        except (ResourceModifiedError, HttpResponseError) as error:
            if isinstance(error, ResourceModifiedError) or error.status_code == 412:
                raise SourceChangedError(
                    f"source {source.name} changed during the copy: precondition failed (412, "
                    f"ETag {source.etag} no longer matches)"
                ) from error
            raise
