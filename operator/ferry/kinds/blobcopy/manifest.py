"""The manifest of a multi-blob copy: its listing checkpoint, its open pages and every failure.

It lives in the destination account, in the container `ferry-manifests`, under
`blobcopies/<namespace>/<name>/<copyKey>/`: a dedicated container keeps it out of the user's
container (a later copy of that container, or Ferry's own listing of the destination, never sees
it), and the destination is the one account Ferry may always write to.

- `state.json`: where the listing stands (its next marker), the pages listed but not finished (each
  with the marker that lists it again), and the counts of every finished page. Written with ETag
  conditions, so that a second writer is noticed instead of overwriting.
- `failures/<page>.jsonl`: the failed blobs of one finished page (name, reason, message), written
  before the page is marked finished, so a page done again overwrites its own file.

A page is the unit of work: a restarted worker lists the open pages again from their markers (the
blobs it finished there are recognised on the destination and counted once) and then continues
the listing where it stopped.

A copy spread over several workers (spec.workers) shares the same state: the coordinator adds the pages it
lists, every worker removes the pages it finished, each change a read-modify-write conditional on the ETag
(update), and `claims/<page>` blobs whose leases say which worker copies a page (see claims).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient
from pydantic import BaseModel, Field

from ferry.api.blobcopy import FIRST_FAILURES, BlobFailureEntry

MANIFEST_CONTAINER = "ferry-manifests"


class ManifestConflict(Exception):
    """Someone else wrote the manifest since this worker read it (another worker of the same copy)."""


class OpenPage(BaseModel):
    marker: str | None = None  # the continuation marker that lists this page again (None: the first)
    last: str | None = None  # the name of its last blob, which ends it when listed again (older manifests: none)
    count: int = 0
    bytes: int = 0


UPDATE_ATTEMPTS = 50  # conflicting writers retry their change on the state they read again


class ManifestState(BaseModel):
    started_at: datetime | None = None
    page_size: int | None = None  # blobs per page, fixed when the copy starts (older manifests: the default)
    shared: bool = False  # written by several workers (spec.workers > 1): pages are claimed, see claims
    next_marker: str | None = None
    pages_listed: int = 0
    listed: int = 0
    listed_bytes: int = 0
    listing_done: bool = False
    open: dict[int, OpenPage] = Field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    first_failures: list[BlobFailureEntry] = Field(default_factory=list)


def manifest_prefix(copy_key: str, owner: str | None) -> str:
    return f"blobcopies/{owner}/{copy_key}/" if owner else f"blobcopies/{copy_key}/"


class Manifest:
    def __init__(self, service: BlobServiceClient, copy_key: str, owner: str | None = None) -> None:
        self.container: ContainerClient = service.get_container_client(MANIFEST_CONTAINER)
        self.prefix = manifest_prefix(copy_key, owner)
        self._etag: str | None = None
        self.lock = threading.Lock()  # one write at a time; the state object is shared by the copy's threads

    def load(self) -> ManifestState | None:
        """The last saved state, or None for a copy that has not started."""
        try:
            download = self.container.get_blob_client(self.prefix + "state.json").download_blob()
        except ResourceNotFoundError:
            return None
        self._etag = download.properties.etag
        return ManifestState.model_validate_json(download.readall())

    def read(self) -> ManifestState | None:
        """The current state, without taking part in this writer's ETag chain (for readers beside the writer)."""
        try:
            return ManifestState.model_validate_json(
                self.container.get_blob_client(self.prefix + "state.json").download_blob().readall()
            )
        except ResourceNotFoundError:
            return None

    def update(
        self, change: Callable[[ManifestState], bool], create: ManifestState | None = None
    ) -> ManifestState | None:
        """Apply `change` to the current state and write it if it says so, again on a fresh read when another
        writer came first; `create` is the state to start from when there is none (else nothing is written).
        Returns the state as written, or as read when `change` declined."""
        for attempt in range(UPDATE_ATTEMPTS):
            with self.lock:
                state = self.load()
                if state is None:
                    if create is None:
                        return None
                    state, self._etag = create.model_copy(deep=True), None
                if not change(state):
                    return state
                try:
                    self.save(state)
                    return state
                except ManifestConflict:
                    pass
            time.sleep(random.uniform(0.01, 0.05) * (1 + attempt))  # let the other writer finish
        raise ManifestConflict(f"the manifest {MANIFEST_CONTAINER}/{self.prefix}state.json kept changing under us")

    def save(self, state: ManifestState) -> None:
        blob = self.container.get_blob_client(self.prefix + "state.json")
        body = state.model_dump_json()
        try:
            if self._etag is None:
                self._ensure_container()
                result = blob.upload_blob(body, overwrite=False)
            else:
                result = blob.upload_blob(
                    body, overwrite=True, etag=self._etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError) as error:
            raise ManifestConflict(
                f"the manifest {MANIFEST_CONTAINER}/{self.prefix}state.json was changed by another writer"
            ) from error
        self._etag = str(result["etag"])

    def _ensure_container(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.container.create_container()

    def write_failures(self, page: int, failures: list[BlobFailureEntry]) -> None:
        lines = "".join(json.dumps(f.wire()) + "\n" for f in failures)
        self.container.get_blob_client(f"{self.prefix}failures/{page:010d}.jsonl").upload_blob(lines, overwrite=True)

    def failures(self) -> Iterator[BlobFailureEntry]:
        """Every recorded failure, page by page (one page's file in memory at a time)."""
        try:
            pages = [p.name for p in self.container.list_blobs(name_starts_with=self.prefix + "failures/")]
        except ResourceNotFoundError:
            return  # no manifest container: nothing failed yet
        for name in pages:  # one name per failed page, not per blob
            text = self.container.get_blob_client(name).download_blob().readall().decode()
            for line in text.splitlines():
                if line.strip():
                    yield BlobFailureEntry.model_validate_json(line)


def add_first_failures(state: ManifestState, failures: list[BlobFailureEntry]) -> None:
    room = FIRST_FAILURES - len(state.first_failures)
    if room > 0:
        state.first_failures.extend(failures[:room])
