"""The backup's blobs: reading and writing the index, segments, bases, the cursor and restore markers.

The index is the commit point. A capture writes its segment and cursor under fresh names first and
then the index, conditionally on the ETag it read, so a capture that dies half-way, or a second capture
pod running for a moment, never leaves the index pointing at something half-written.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ferry.backup.format import BackupIndex, CaptureState, restore_marker
from ferry.backup.stream import read_lines

INDEX = "index.json"


class IndexConflict(Exception):
    """Someone else wrote the index since it was read: this capture's work is not committed."""


class BackupStore:
    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self.container = container
        self.prefix = prefix.strip("/")

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def ensure(self) -> None:
        """Create the container on first use."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            if error.status_code != 409:
                raise

    # The index.

    def read_index(self) -> tuple[BackupIndex | None, str | None]:
        try:
            download = self.container.get_blob_client(self._name(INDEX)).download_blob()
        except ResourceNotFoundError:
            return None, None
        return BackupIndex.model_validate_json(download.readall()), str(download.properties.etag)

    def write_index(self, index: BackupIndex, etag: str | None) -> int:
        """Commit the index if nobody wrote it since `etag` was read; returns the bytes written."""
        data = index.model_dump_json(by_alias=True).encode()
        blob = self.container.get_blob_client(self._name(INDEX))
        condition: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            if etag
            else {"match_condition": MatchConditions.IfMissing}
        )
        try:
            blob.upload_blob(data, overwrite=True, **condition)
        except (ResourceExistsError, HttpResponseError) as error:
            if isinstance(error, ResourceExistsError) or error.status_code in (409, 412):
                raise IndexConflict("the backup index changed meanwhile (another capture?)") from None
            raise
        return len(data)

    # Blobs.

    def put(self, name: str, data: bytes) -> None:
        self.container.get_blob_client(self._name(name)).upload_blob(data, overwrite=True)

    def put_file(self, name: str, path: str) -> None:
        """Upload from disk, in blocks: memory does not grow with the blob."""
        with open(path, "rb") as data:
            self.container.get_blob_client(self._name(name)).upload_blob(data, overwrite=True)

    def get(self, name: str) -> bytes:
        return bytes(self.container.get_blob_client(self._name(name)).download_blob().readall())

    def delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.container.get_blob_client(self._name(name)).delete_blob()

    def list(self, folder: str) -> list[str]:
        start = self._name(folder.rstrip("/") + "/")
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [b.name[cut:] for b in self.container.list_blobs(name_starts_with=start)]

    def records(self, name: str) -> Iterator[dict[str, Any]]:
        """A blob's records, streamed: downloaded to a temporary file (in chunks) when first read, then read
        line by line. The file has no name, so nothing is left behind by a reader that stops early, is never
        closed, or is killed."""
        with tempfile.TemporaryFile(prefix="ferry-backup-") as spool:
            self.container.get_blob_client(self._name(name)).download_blob().readinto(spool)
            spool.seek(0)
            yield from read_lines(spool)

    # The cursor.

    def read_state(self, name: str) -> CaptureState:
        return CaptureState.model_validate_json(gzip.decompress(self.get(name)))

    def write_state(self, name: str, state: CaptureState) -> int:
        data = gzip.compress(state.model_dump_json(by_alias=True).encode(), compresslevel=6)
        self.put(name, data)
        return len(data)

    # Restore markers: which incarnation a restore created, under which instance id.

    def mark_restore(self, rid: str, marker: dict[str, Any]) -> None:
        self.put(restore_marker(rid), json.dumps(marker).encode())

    def restore_markers(self) -> dict[str, dict[str, Any]]:
        found = {}
        for name in self.list("restores"):
            marker = json.loads(self.get(name))
            found[str(marker["rid"])] = marker
        return found
