"""What the backup says about the past: which incarnations of databases and containers lived when, with
which settings, and every item of a container as it was at a time. Pure: blobs come in through `Records`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.backup.format import BackupIndex, CatalogEvent, Operation, ResourceKind

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
    """Every item of a container incarnation as it was at `t`, by item _rid."""
    return {record["r"]: record["d"] for record in materialize(index, records, [container_rid], t)}


def materialize(
    index: BackupIndex, records: Records, containers: Iterable[str], t: datetime
) -> Iterator[dict[str, Any]]:
    """The version records of every item of these container incarnations at `t`: the last base at or before
    `t`, then the segments after it, versions and deletions up to `t` (what a new base holds, and what a
    restore writes)."""
    wanted = set(containers)
    cutoff = seconds(t)
    base = next((b for b in reversed(index.bases) if b.time <= t), None)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    if base is not None:
        for record in records(base.blob):
            if record["t"] == "v" and record["c"] in wanted:
                latest[(record["c"], record["r"])] = record
    after = base.seq if base is not None else -1
    for segment in index.segments:
        # A segment holds what changed after its start (the previous capture's read time, less the one
        # second of overlap): one that starts after `t` holds nothing older.
        if segment.seq <= after or seconds(segment.start) - 1 > cutoff:
            continue
        for record in records(segment.blob):
            if record.get("c") not in wanted or record["ts"] > cutoff:
                continue
            key = (record["c"], record["r"])
            if record["t"] == "v":
                if key not in latest or latest[key]["ts"] <= record["ts"]:
                    latest[key] = record
            elif record["t"] == "x":
                latest.pop(key, None)
    yield from latest.values()
