"""Writing a page of source items into the destination container, with a small thread pool.

Items are created, not upserted: a blind upsert would silently overwrite an item whose new
(partition key, id) collides with another source item. On a conflict the existing item is read:
identical content is a replay of an earlier, interrupted run (harmless); different content, or no
item at all under that id (a unique key of the destination refused it), is an ItemConflict.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from ferry.retry import policy
from ferry.storage.cosmos import is_transient, partition_key_value, status_code, strip_system

# Transient failures of one write (beyond the SDK's own retries) are retried this often.
# Waits from 0.5s, doubling up to 8s, or the service's retry-after when it asks for longer (within 8s).
WRITE_ATTEMPTS = 6
BACKOFF_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
WRITE_RETRIES = policy(WRITE_ATTEMPTS, is_transient, first=BACKOFF_SECONDS, cap=BACKOFF_CAP_SECONDS)


@dataclass(frozen=True)
class SourceChange:
    """A change of a source item as the destination needs it: its new version, or its deletion."""

    item_id: str
    source_key: Any  # the item's partition key value in the source
    body: dict[str, Any] | None  # None: deleted


@dataclass(frozen=True)
class Conflict:
    item_id: str
    unique_key: bool  # True: refused by a unique key; False: another item has the same id and key


class TokenBucket:
    """At most `rate` takes per second on average, with a burst of one (thread-safe)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 1.0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(1.0, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
            time.sleep(wait)


class ItemWriter:
    def __init__(
        self,
        destination: ContainerProxy,
        partition_key_paths: list[str],
        concurrency: int,
        bucket: TokenBucket | None,
        newer_versions_of: list[str] | None = None,
    ) -> None:
        self.destination = destination
        self.paths = partition_key_paths
        self.bucket = bucket
        # An online copy reads a source that changes meanwhile: an item already written may come again, newer
        # (changed since, or a page replayed after a restart). With the source's key paths given, an existing
        # item of the same id and source key is such an older version and is overwritten, not a conflict.
        self.newer_versions_of = newer_versions_of
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="copy-write")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def write_page(self, items: list[dict[str, Any]]) -> list[Conflict]:
        """Write every item of the page; returns the conflicts (empty when all arrived)."""
        futures = [self._pool.submit(self._write, strip_system(item)) for item in items]
        conflicts = [f.result() for f in futures]
        return [c for c in conflicts if c is not None]

    def apply_changes(self, changes: list[SourceChange], source_paths: list[str]) -> list[Conflict]:
        """Apply changes of distinct items at once: upsert new versions, delete deleted items."""
        futures = [self._pool.submit(self._apply, change, source_paths) for change in changes]
        conflicts = [f.result() for f in futures]
        return [c for c in conflicts if c is not None]

    def _apply(self, change: SourceChange, source_paths: list[str]) -> Conflict | None:
        if self.bucket is not None:
            self.bucket.take()
        keep = None
        if change.body is not None:
            body = strip_system(change.body)
            try:
                WRITE_RETRIES(self.destination.upsert_item, body)
            except CosmosHttpResponseError as error:
                if status_code(error) == 409:  # an upsert conflicts only with a unique key
                    return Conflict(change.item_id, unique_key=True)
                raise
            if self.paths == source_paths:
                return None
            keep = partition_key_value(body, self.paths)
        # Partitioned otherwise, the destination may hold the item under the key of an older version
        # (or of the deleted one): find the copies by id and source key, and delete all but the new one.
        same_id = self.destination.query_items(
            "SELECT * FROM c WHERE c.id = @id",
            parameters=[{"name": "@id", "value": change.item_id}],
            enable_cross_partition_query=True,
        )
        for item in same_id:
            key = partition_key_value(item, self.paths)
            if partition_key_value(item, source_paths) != change.source_key or (keep is not None and key == keep):
                continue
            try:
                WRITE_RETRIES(self.destination.delete_item, str(item["id"]), key)
            except CosmosHttpResponseError as error:
                if status_code(error) != 404:
                    raise
        return None

    def _write(self, body: dict[str, Any]) -> Conflict | None:
        if self.bucket is not None:
            self.bucket.take()
        try:
            # A create that timed out may have landed: the retry then sees a conflict and checks it.
            WRITE_RETRIES(self.destination.create_item, body)
        except CosmosHttpResponseError as error:
            if status_code(error) == 409:
                return self._check_existing(body)
            raise
        return None

    def _check_existing(self, body: dict[str, Any]) -> Conflict | None:
        # A query, not read_item: it answers "no such item" as an empty result everywhere (the
        # local server fails point reads of absent items), and conflicts are rare.
        key = partition_key_value(body, self.paths)
        same_id = self.destination.query_items(
            "SELECT * FROM c WHERE c.id = @id",
            parameters=[{"name": "@id", "value": body["id"]}],
            enable_cross_partition_query=True,
        )
        existing = [item for item in same_id if partition_key_value(item, self.paths) == key]
        if not existing:
            return Conflict(str(body["id"]), unique_key=True)
        if strip_system(existing[0]) == body:
            return None
        source = self.newer_versions_of
        if source is not None and partition_key_value(existing[0], source) == partition_key_value(body, source):
            WRITE_RETRIES(self.destination.upsert_item, body)
            return None
        return Conflict(str(body["id"]), unique_key=False)
