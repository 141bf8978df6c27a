"""What the backup says about the past: which incarnations of databases and containers lived when, with
which settings, and every item of a container as it was at a time. Pure: blobs come in through `Records`."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.backup.format import BackupIndex, CatalogEvent, Operation, ResourceKind, is_sorted, record_key

Records = Callable[[str], Iterator[dict[str, Any]]]  # blob name -> its records


def seconds(t: datetime) -> float:
    return t.timestamp()


def moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class Incarnation:
    """One database or container from its creation (or re-creation) to its deletion, if any."""

    kind: ResourceKind
    name: str
    database: str
    rid: str
    database_rid: str
    created: datetime
    deleted: datetime | None = None
    instance_id: str | None = None
    events: list[CatalogEvent] = field(default_factory=list)

    def live_at(self, t: datetime) -> bool:
        return self.created <= t and (self.deleted is None or t < self.deleted)

    def settings_at(self, t: datetime) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for event in self.events:
            if event.event_timestamp <= t and event.operation_type != Operation.DELETE:
                found = event.settings
        return dict(found)


def incarnations(events: Iterable[CatalogEvent]) -> list[Incarnation]:
    by_rid: dict[str, Incarnation] = {}
    for event in sorted(events, key=lambda e: e.event_timestamp):
        found = by_rid.get(event.owner_resource_id)
        if found is None:
            found = by_rid[event.owner_resource_id] = Incarnation(
                kind=event.kind,
                name=event.owner_id,
                database=event.database,
                rid=event.owner_resource_id,
                database_rid=event.database_resource_id,
                created=event.event_timestamp,
            )
        found.events.append(event)
        if event.instance_id:
            found.instance_id = event.instance_id
        if event.operation_type == Operation.DELETE:
            found.deleted = event.event_timestamp
    return sorted(by_rid.values(), key=lambda i: i.created)


def named(found: Iterable[Incarnation], kind: ResourceKind, database: str, name: str) -> list[Incarnation]:
    return [i for i in found if i.kind == kind and i.database == database and i.name == name]


def containers_of(found: Iterable[Incarnation], database_rid: str, t: datetime) -> list[Incarnation]:
    return [i for i in found if i.kind == ResourceKind.CONTAINER and i.database_rid == database_rid and i.live_at(t)]


def restorable_window(index: BackupIndex, now: datetime) -> tuple[datetime, datetime] | None:
    """(earliest, latest) restorable times: from the window's first base (or the retention limit, if later) to
    one second before the last capture's read time (item times are whole seconds, and an item written in the
    second of a read may have been missed by it). None until a second capture has closed the first base's
    second."""
    if index.earliest is None or index.last_capture is None:
        return None
    earliest = max(index.earliest, now - timedelta(seconds=index.retention_seconds))
    latest = index.last_capture - timedelta(seconds=1)
    return (earliest, latest) if earliest <= latest else None


def gap_at(index: BackupIndex, t: datetime) -> tuple[datetime, datetime] | None:
    for gap in index.gaps:
        if gap.start < t < gap.end:
            return gap.start, gap.end
    return None


def items_at(index: BackupIndex, records: Records, container_rid: str, t: datetime) -> dict[str, dict[str, Any]]:
    """Every item of a container incarnation as it was at `t`, by item _rid (for tests: it holds them all)."""
    return {record["r"]: record["d"] for record in materialize(index, records, [container_rid], t)}


def sorted_records(records: Records, blob: str, wanted: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """A blob's records in `record_key` order, kept to the wanted containers: version 2 blobs are streamed as
    they are; version 1 blobs (unsorted) are sorted in memory, as version 1 readers held them."""
    found = (r for r in records(blob) if wanted is None or r.get("c") in wanted)
    return found if is_sorted(blob) else iter(sorted(found, key=record_key))


def history(
    index: BackupIndex, records: Records, containers: Iterable[str], t: datetime
) -> list[Iterable[dict[str, Any]]]:
    """The sorted streams that say what the items of these container incarnations were at `t`: the last base
    at or before `t`, the records of the base's own segment stamped after the base's time (changes read
    while that capture ran), and the segments after it; in that order, so that a merge keeps it for equal
    keys."""
    wanted = set(containers)
    cutoff = seconds(t)
    base = next((b for b in reversed(index.bases) if b.time <= t), None)
    streams: list[Iterable[dict[str, Any]]] = []
    if base is not None:
        streams.append(r for r in sorted_records(records, base.blob, wanted) if r["t"] == "v")
    after = base.seq if base is not None else -1
    for segment in index.segments:
        # A segment holds what changed after its start (the previous capture's read time, less the one
        # second of overlap): one that starts after `t` holds nothing older.
        if segment.seq < after or seconds(segment.start) - 1 > cutoff:
            continue
        found = sorted_records(records, segment.blob, wanted)
        if base is not None and segment.seq == after:
            since = seconds(base.time)
            found = (r for r in found if r["ts"] > since)
        streams.append(found)
    return streams


def latest(merged: Iterable[dict[str, Any]], cutoff: float) -> Iterator[dict[str, Any]]:
    """Each item's last version at or before `cutoff` from a merged stream, unless a deletion came after it."""
    current: dict[str, Any] | None = None
    key: tuple[str, str] | None = None
    for record in merged:
        here = (record["c"], record["r"])
        if here != key:
            if current is not None:
                yield current
            current, key = None, here
        if record["ts"] > cutoff:
            continue
        current = record if record["t"] == "v" else None
    if current is not None:
        yield current


def materialize(
    index: BackupIndex, records: Records, containers: Iterable[str], t: datetime
) -> Iterator[dict[str, Any]]:
    """The version records of every item of these container incarnations at `t`, in (container, item _rid)
    order (what a new base holds, and what a restore writes): a streamed merge of the base and segments, in
    memory bounded by the number of blobs, not of items."""
    streams = history(index, records, containers, t)
    return latest(heapq.merge(*streams, key=record_key), seconds(t))
