"""The backup's format in blob storage, version 2 (reads version 1). Users keep it for weeks: change it only
compatibly.

Under the location's prefix:

    index.json                    the window: bases, segments, gaps, the catalog's history, the cursor
    segments/<seq>-<id>[.sorted].jsonl.gz  what one capture saw change (immutable once the index names it)
    bases/<seq>-<id>[.sorted].jsonl.gz     every item as it was at one capture
    state/<seq>-<id>.json.gz      the capture cursor: the live catalog and each container's change feed
                                  continuations (version 1: each item's last _etag)
    restores/<rid>.json           written by a restore: the incarnation it created and its instance id

Records are JSON lines:
    {"t": "v", "c": <container rid>, "r": <item rid>, "e": <_etag>, "ts": <_ts>, "d": <item>}   a version
    {"t": "x", "c": <container rid>, "r": <item rid>, "ts": <seconds>}                          a deletion
Bases begin with {"t": "base", "seq": N, "time": T}. Catalog events (databases and containers created,
replaced, deleted, re-created) are kept in the index, shaped like Azure's restorableSqlDatabases and
restorableSqlContainers events.

A restore to time T reads the index, the last base at or before T, the records of the base's own segment
stamped after the base's time, and the segments after it up to T.

Version 2 (compatible: the records and the index keep their shape, so version 1 readers still read it):
segments and bases named `*.sorted.jsonl.gz` hold their records sorted by `record_key` (container, item,
time, version before deletion), so that readers merge them as streams in bounded memory; version 1 blobs
(unsorted) are sorted on reading. The cursor holds change feed continuations instead of every item's _etag.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from ferry.api.common import FerryModel
from ferry.api.databaseaccount import BackupGap

FORMAT = 2
SORTED = ".sorted.jsonl.gz"


class Operation(StrEnum):
    CREATE = "Create"
    REPLACE = "Replace"
    DELETE = "Delete"
    RECREATE = "Recreate"


class ResourceKind(StrEnum):
    DATABASE = "database"
    CONTAINER = "container"


class CatalogEvent(FerryModel):
    """A database or container event, as Azure's restorable resources report them."""

    operation_type: Operation
    event_timestamp: datetime
    kind: ResourceKind
    owner_id: str = Field(description="The database's or container's name.")
    owner_resource_id: str = Field(description="The _rid of this incarnation.")
    database: str = Field(description="The database's name (itself, for a database).")
    database_resource_id: str
    settings: dict[str, Any] = Field(default_factory=dict, description="The resource's settings after the event.")
    instance_id: str | None = Field(default=None, description="Set when a Ferry restore created this incarnation.")


class SegmentRef(FerryModel):
    seq: int
    start: datetime = Field(description="The previous capture: changes after it ...")
    end: datetime = Field(description="... up to this capture's read time.")
    blob: str
    records: int


class BaseRef(FerryModel):
    seq: int
    time: datetime
    blob: str


class BackupIndex(FerryModel):
    format: int = FORMAT
    endpoint: str
    retention_seconds: float
    capture_interval_seconds: float
    captures: int = 0
    last_capture: datetime | None = None
    state_blob: str | None = None
    versions_captured: int = 0
    deletion_precision_seconds: float | None = Field(
        default=None, description="As the last capture's cursor says; here too, for restores (the cursor is replaced)."
    )
    bases: list[BaseRef] = Field(default_factory=list)
    segments: list[SegmentRef] = Field(default_factory=list)
    gaps: list[BackupGap] = Field(default_factory=list)
    events: list[CatalogEvent] = Field(default_factory=list)

    @property
    def earliest(self) -> datetime | None:
        return self.bases[0].time if self.bases else None


class CatalogEntry(FerryModel):
    """A live database or container as the last capture saw it."""

    kind: ResourceKind
    name: str
    database: str
    database_rid: str
    settings: dict[str, Any] = Field(default_factory=dict)
    instance_id: str | None = None
    modified: int | None = Field(default=None, description="The resource's _ts: when it was created or last replaced.")


class ContainerCursor(FerryModel):
    """Where a container's capture continues: a few continuations, whatever the container's size."""

    latest: list[str] = Field(
        default_factory=list,
        description="The latest-version change feed's continuation of each feed range (without the deletes feed).",
    )
    deletes: list[str] | None = Field(
        default=None, description="The all-versions-and-deletes feed's, where the account has it; else swept."
    )
    last_sweep: datetime | None = Field(default=None, description="The deletion sweep's last read (sweep path).")


class CaptureState(FerryModel):
    """The capture cursor: where the next capture continues from."""

    time: datetime
    catalog: dict[str, CatalogEntry] = Field(default_factory=dict, description="By _rid.")
    items: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Version 1: container rid: item rid: _etag (read once, then dropped)."
    )
    feeds: dict[str, ContainerCursor] = Field(default_factory=dict, description="Version 2: by container rid.")
    deleted: list[str] = Field(default_factory=list, description="kind/database/name of deleted incarnations.")
    deletion_precision_seconds: float | None = Field(
        default=None, description="How closely item deletions are dated: 0 from the feed, the sweep interval else."
    )


def new_id() -> str:
    return uuid.uuid4().hex[:8]


def segment_blob(seq: int) -> str:
    return f"segments/{seq:010d}-{new_id()}{SORTED}"


def base_blob(seq: int) -> str:
    return f"bases/{seq:010d}-{new_id()}{SORTED}"


def is_sorted(blob: str) -> bool:
    """Version 2 blobs hold their records in `record_key` order; version 1 blobs in no order."""
    return blob.endswith(SORTED)


def record_key(record: dict[str, Any]) -> tuple[str, str, int, int]:
    """Container, item, time, and a version before a deletion of the same second."""
    return str(record["c"]), str(record["r"]), int(record["ts"]), 0 if record["t"] == "v" else 1


def state_blob(seq: int) -> str:
    return f"state/{seq:010d}-{new_id()}.json.gz"


def restore_marker(rid: str) -> str:
    return f"restores/{rid.replace('/', '_').replace('=', '')}.json"


def version(container: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"t": "v", "c": container, "r": item["_rid"], "e": item["_etag"], "ts": int(item["_ts"]), "d": item}


def deletion(container: str, item_rid: str, ts: int) -> dict[str, Any]:
    return {"t": "x", "c": container, "r": item_rid, "ts": ts}


def dump_lines(records: Iterable[dict[str, Any]]) -> bytes:
    body = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)
    return gzip.compress(body.encode(), compresslevel=6)


def load_lines(data: bytes) -> Iterator[dict[str, Any]]:
    for line in gzip.decompress(data).decode().splitlines():
        if line:
            yield json.loads(line)
