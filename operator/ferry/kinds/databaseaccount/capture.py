"""One capture: what changed in the account since the last one, recorded and committed to the backup.

Catalog: every database and container with its settings, compared by _rid with the last capture: Create,
Replace (settings changed), Delete, and Recreate (a new _rid under a name that was deleted).

Items, per live container, from its change feed, continuing from the continuation of each feed range kept in
the cursor (the work follows what changed, not the container's size; see capture_items):
- with the account's all-versions-and-deletes feed: every version and every deletion, dated by the service;
- without it: the latest version of each changed item from the latest-version feed, and deletions from a
  sweep every deletion sweep interval, which lists every item's _rid and compares it, as two sorted streams,
  with what the backup holds; a swept deletion is dated one second before this capture's read time, so the
  backup knows it to within the sweep interval.
Records are gathered sorted on disk (SortedRuns) and written as one sorted segment: memory stays bounded.

The capture's read time is taken before anything is read (whole seconds, like _ts): every item version
stamped before it was written before any read, so the window reaches one second before it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from ferry.api.databaseaccount import BackupGap
from ferry.backup.format import (
    FORMAT,
    BackupIndex,
    BaseRef,
    CaptureState,
    CatalogEntry,
    CatalogEvent,
    ContainerCursor,
    Operation,
    ResourceKind,
    SegmentRef,
    base_blob,
    deletion,
    record_key,
    restore_marker,
    segment_blob,
    state_blob,
    version,
)
from ferry.backup.store import BackupStore
from ferry.backup.stream import SortedRuns, SpooledBlob
from ferry.backup.timeline import Records, history, incarnations, latest, materialize, moment
from ferry.storage.cosmos import (
    ALL_VERSIONS_AND_DELETES,
    LATEST_VERSION,
    CosmosAccess,
    change_feed_now,
    change_feed_page,
    describe,
    feed_ranges,
)
from ferry.transfer.state import DATABASE as STATE_DATABASE

# Container properties that are its settings (the rest is the service's bookkeeping).
CONTAINER_SETTINGS = (
    "partitionKey",
    "uniqueKeyPolicy",
    "indexingPolicy",
    "defaultTtl",
    "conflictResolutionPolicy",
    "analyticalStorageTtl",
    "computedProperties",
)
ONE_SECOND = timedelta(seconds=1)
THROUGHPUT_SETTINGS = ("throughput", "autoscaleMaxThroughput", "throughputMode")
ID_PAGE = 1000
BODY_PAGE = 200
FEED_PAGE = 1000
FAR = datetime(9999, 1, 1, tzinfo=UTC)  # "everything the backup knows", as a time


class AccountReadFailed(Exception):
    """Reading the account failed (as opposed to the backup location)."""


@dataclass(frozen=True)
class CaptureSettings:
    retention: timedelta
    interval: timedelta
    base_every: int = 120  # captures between two bases at most: a restore reads at most this many segments
    bases_per_window: int = 4  # and at least this many bases per retention window, so pruning frees space early
    gap_factor: float = 3.0  # a capture later than this many intervals leaves a gap in the window
    deletion_sweep: timedelta = timedelta(minutes=10)  # without the deletes feed: how often deletions are swept


@dataclass
class CaptureResult:
    seq: int
    read_time: datetime
    records: int
    events: int
    seconds: float
    bytes_written: int
    requests: int
    index: BackupIndex
    deletion_precision_seconds: float | None = None


class _Counter:
    """Counts the requests a capture sends (for the capture's cost, measured in the benchmark)."""

    def __init__(self) -> None:
        self.requests = 0
        self.continuation: str | None = None  # the last change feed continuation read

    def pages(self, pager: Any) -> Iterator[Any]:
        for page in pager.by_page():
            self.requests += 1
            yield from page


def read_catalog(access: CosmosAccess, counter: _Counter) -> dict[str, CatalogEntry]:
    client = access.client()
    catalog: dict[str, CatalogEntry] = {}
    counter.requests += 1
    for database in client.list_databases():
        name, rid = str(database["id"]), str(database["_rid"])
        if name == STATE_DATABASE:
            continue  # Ferry's own job history: not the user's data, and busy with lease renewals
        catalog[rid] = CatalogEntry(
            kind=ResourceKind.DATABASE, name=name, database=name, database_rid=rid, modified=database.get("_ts")
        )
        counter.requests += 1
        for container in client.get_database_client(name).list_containers():
            settings = {k: container[k] for k in CONTAINER_SETTINGS if k in container}
            catalog[str(container["_rid"])] = CatalogEntry(
                kind=ResourceKind.CONTAINER,
                name=str(container["id"]),
                database=name,
                database_rid=rid,
                settings=settings,
                modified=container.get("_ts"),
            )
    return catalog


def _throughput(access: CosmosAccess, entry: CatalogEntry, counter: _Counter) -> dict[str, Any]:
    """The provisioned throughput, where the account lets it be read (a new resource only)."""
    counter.requests += 1
    try:
        proxy: Any = access.database(entry.database)
        if entry.kind == ResourceKind.CONTAINER:
            proxy = proxy.get_container_client(entry.name)
        offer = proxy.get_throughput()
    except Exception:  # serverless accounts and some emulators have no offers
        return {}
    autoscale = offer.properties.get("content", {}).get("offerAutopilotSettings") if offer.properties else None
    found: dict[str, Any] = {"throughput": offer.offer_throughput}
    if autoscale:
        found["autoscaleMaxThroughput"] = autoscale.get("maxThroughput")
    return found


def diff_catalog(
    before: dict[str, CatalogEntry], now: dict[str, CatalogEntry], deleted: set[str], at: datetime
) -> list[CatalogEvent]:
    """Catalog events between two captures; `deleted` (kind/database/name) learns this capture's deletions.

    Creations and replacements are dated by the resource's own _ts; a deletion, which leaves no trace, is dated
    one second before this capture's read time (the latest the window then reaches: see capture_items), or at
    the re-creation of its name if that came first.
    """
    events: list[CatalogEvent] = []
    gone = {rid: entry for rid, entry in before.items() if rid not in now}
    gone_names = {_name(entry) for entry in gone.values()}
    recreated: dict[str, datetime] = {}

    def event(op: Operation, rid: str, entry: CatalogEntry, when: datetime) -> CatalogEvent:
        return CatalogEvent(
            operation_type=op,
            event_timestamp=when,
            kind=entry.kind,
            owner_id=entry.name,
            owner_resource_id=rid,
            database=entry.database,
            database_resource_id=entry.database_rid,
            settings=entry.settings,
            instance_id=entry.instance_id,
        )

    def changed_at(entry: CatalogEntry) -> datetime:
        return min(at, moment(entry.modified)) if entry.modified else at

    # Databases are created before their containers, and deleted after them.
    for kind in (ResourceKind.DATABASE, ResourceKind.CONTAINER):
        for rid, entry in now.items():
            if entry.kind != kind:
                continue
            if rid not in before:
                name = _name(entry)
                op = Operation.RECREATE if name in deleted or name in gone_names else Operation.CREATE
                when = changed_at(entry)
                if op == Operation.RECREATE:
                    recreated[name] = when
                events.append(event(op, rid, entry, when))
            elif entry.settings != before[rid].settings:
                entry.instance_id = before[rid].instance_id
                events.append(event(Operation.REPLACE, rid, entry, changed_at(entry)))
            else:
                entry.instance_id = before[rid].instance_id
    for kind in (ResourceKind.CONTAINER, ResourceKind.DATABASE):
        for rid, entry in gone.items():
            if entry.kind != kind:
                continue
            name = _name(entry)
            when = min(at - ONE_SECOND, recreated.get(name, at))
            if entry.modified:
                when = max(when, moment(entry.modified))  # never before its own creation
            events.append(event(Operation.DELETE, rid, entry, when))
            deleted.add(name)
    return events


def _name(entry: CatalogEntry) -> str:
    return f"{entry.kind.value}/{entry.database}/{entry.name}"


def _version(rid: str, item: dict[str, Any]) -> dict[str, Any]:
    return version(rid, {k: v for k, v in item.items() if k != "_lsn"})  # _lsn is the feed's, not the item's


def _feed(
    container: ContainerProxy, token: str | None, feed_range: dict[str, Any] | None, counter: _Counter, mode: Any
) -> Iterator[list[dict[str, Any]]]:
    """A feed range's pages after `token` (from the beginning without one) until it has nothing more; the
    continuation after the last page goes into `counter.continuation`."""
    while True:
        counter.requests += 1
        if token is None:
            page, token = change_feed_page(container, feed_range or {}, None, FEED_PAGE, mode=mode)
        else:
            page, token = change_feed_page(container, {}, token, FEED_PAGE)
        counter.continuation = token
        if not page:
            return
        yield page


def _probe_deletes(container: ContainerProxy, ranges: list[dict[str, Any]], counter: _Counter) -> list[str] | None:
    """The all-versions-and-deletes feed's continuations from now, or None where the account does not have it
    (the service answers 400 until the mode is enabled on the account)."""
    try:
        counter.requests += len(ranges)
        return [change_feed_now(container, r, ALL_VERSIONS_AND_DELETES) for r in ranges]
    except CosmosHttpResponseError as error:
        if error.status_code == 400:
            return None
        raise


def _continued_without_loss(state: CaptureState, feeds: dict[str, ContainerCursor], events: list[CatalogEvent]) -> bool:
    """Whether a late capture still knows every moment since the last one, so the delay is no gap.

    Only when every container continued the all-versions-and-deletes feed from the previous capture: that
    feed dates each version and deletion itself. The latest-version feed collapses what changed twice, and
    the catalog (containers created or deleted) is dated by the capture that sees it, so either makes the
    late stretch inexact.
    """
    if events or not feeds:
        return False
    return all(
        cursor.deletes is not None and rid in state.feeds and state.feeds[rid].deletes is not None
        for rid, cursor in feeds.items()
    )


def capture_items(
    access: CosmosAccess,
    entry: CatalogEntry,
    rid: str,
    cursor: ContainerCursor | None,
    known: dict[str, str] | None,
    at: datetime,
    counter: _Counter,
    found: SortedRuns,
) -> tuple[ContainerCursor, bool]:
    """A container's versions and feed deletions since the last capture into `found`, from the change feed's
    continuations; its cursor afterwards, and whether its deletions need a sweep in this capture.

    A container first seen is read from its latest-version feed's beginning. After that, where the account
    has the all-versions-and-deletes feed, every version and deletion comes from it (deletions dated by the
    service's crts); elsewhere the latest versions come from the latest-version feed and deletions from a
    sweep (see sweep_deletions) every deletion sweep interval. Requests: one per feed range, plus one per
    page of changes.
    """
    container = access.container(entry.database, entry.name)
    if cursor is None:
        counter.requests += 1
        ranges = feed_ranges(container)
        deletes = _probe_deletes(container, ranges, counter)  # first: no deletion after it is missed
        latest: list[str] = []
        if known is not None:  # a version 1 cursor: one last capture by polling, the feed from now on
            counter.requests += len(ranges)
            latest = [change_feed_now(container, r) for r in ranges]
            found.extend(_poll(container, rid, known, at, counter))
        else:  # first seen: everything, from the feed's beginning
            for feed_range in ranges:
                counter.requests += 1
                now = change_feed_now(container, feed_range)  # an empty range's continuation: taken before
                counter.continuation = None
                for page in _feed(container, None, feed_range, counter, LATEST_VERSION):
                    found.extend(_version(rid, item) for item in page)
                latest.append(counter.continuation or now)
        return ContainerCursor(latest=latest, deletes=deletes, last_sweep=at), False
    if cursor.deletes is None:  # no deletes feed: the latest version of what changed; deletions are swept
        latest = []
        for token in cursor.latest:
            for page in _feed(container, token, None, counter, LATEST_VERSION):
                found.extend(_version(rid, item) for item in page)
            latest.append(counter.continuation or token)
        return ContainerCursor(latest=latest, last_sweep=cursor.last_sweep), False
    # The all-versions-and-deletes feed: every version (not only the latest, so that a restore is exact
    # between any two changes) and every deletion, from one feed per range.
    sweep = False
    deleting = []
    for token in cursor.deletes:
        for page in _feed(container, token, None, counter, ALL_VERSIONS_AND_DELETES):
            for change in page:
                metadata = change.get("metadata") or {}
                if metadata.get("operationType") != "delete":
                    if change.get("current"):
                        found.add(_version(rid, change["current"]))
                    continue
                previous = change.get("previous") or {}
                if "_rid" in previous:
                    found.add(deletion(rid, str(previous["_rid"]), int(metadata.get("crts") or 0)))
                else:
                    sweep = True  # no previous image to name the item by: the sweep finds it
        deleting.append(counter.continuation or token)
    return ContainerCursor(latest=[], deletes=deleting, last_sweep=cursor.last_sweep), sweep


def live_item_rids(access: CosmosAccess, entry: CatalogEntry, counter: _Counter) -> SortedRuns:
    """Every item's _rid in the container now, sorted on disk (the deletion sweep's read)."""
    container = access.container(entry.database, entry.name)
    rids = SortedRuns(key=str)
    pager = container.query_items(
        "SELECT VALUE c._rid FROM c", enable_cross_partition_query=True, max_item_count=ID_PAGE
    )
    for item_rid in counter.pages(pager):
        rids.add(str(item_rid))
    return rids


def sweep_deletions(
    index: BackupIndex, records: Records, rid: str, live: Iterable[str], found: SortedRuns, at: datetime
) -> Iterator[dict[str, Any]]:
    """Deletions by comparison: the items the backup (with this capture's records) has live that the
    container no longer holds, in a merge of two sorted streams. The deletion happened since the last sweep:
    it is dated at the latest second this capture's window reaches (never before the item's last version)."""
    merged = heapq.merge(*history(index, records, [rid], FAR), (r for r in found if r["c"] == rid), key=record_key)
    stamp = int(at.timestamp()) - 1
    ids = iter(live)
    current = next(ids, None)
    for record in latest(merged, float("inf")):
        while current is not None and current < record["r"]:
            current = next(ids, None)
        if current != record["r"]:
            yield deletion(rid, str(record["r"]), max(stamp, int(record["ts"])))


def _poll(
    container: ContainerProxy, rid: str, known: dict[str, str], at: datetime, counter: _Counter
) -> list[dict[str, Any]]:
    """Version 1's capture, once, for a container whose cursor holds every item's _etag."""
    listed = counter.pages(
        container.query_items(
            "SELECT c._rid, c._etag, c._ts FROM c", enable_cross_partition_query=True, max_item_count=ID_PAGE
        )
    )
    current = {str(i["_rid"]): (str(i["_etag"]), int(i["_ts"])) for i in listed}
    changed = {r: e for r, (e, _) in current.items() if known.get(r) != e}
    records: list[dict[str, Any]] = []
    if changed:
        since = min(current[r][1] for r in changed)
        pager = container.query_items(
            "SELECT * FROM c WHERE c._ts >= @since",
            parameters=[{"name": "@since", "value": since}],
            enable_cross_partition_query=True,
            max_item_count=BODY_PAGE,
        )
        for item in counter.pages(pager):
            if changed.get(str(item["_rid"])) == item["_etag"]:
                records.append(version(rid, item))
    stamp = int(at.timestamp()) - 1
    records += [deletion(rid, item_rid, stamp) for item_rid in known if item_rid not in current]
    return records


class Capturer:
    def __init__(self, access: CosmosAccess, store: BackupStore, settings: CaptureSettings) -> None:
        self.access = access
        self.store = store
        self.settings = settings

    def _new_index(self) -> BackupIndex:
        self.store.ensure()
        return BackupIndex(
            endpoint=self.access.endpoint,
            retention_seconds=self.settings.retention.total_seconds(),
            capture_interval_seconds=self.settings.interval.total_seconds(),
        )

    def run_once(self, now: datetime | None = None) -> CaptureResult:
        """One capture, committed by the index write; IndexConflict if another capture committed meanwhile."""
        with SortedRuns(record_key) as found, SortedRuns(record_key) as swept:
            return self._capture(now, found, swept)

    def _capture(self, now: datetime | None, found: SortedRuns, swept: SortedRuns) -> CaptureResult:
        started = time.monotonic()
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        counter = _Counter()
        index, etag = self.store.read_index()
        index = index or self._new_index()
        index.retention_seconds = self.settings.retention.total_seconds()
        index.capture_interval_seconds = self.settings.interval.total_seconds()
        state = self.store.read_state(index.state_blob) if index.state_blob else CaptureState(time=at)
        feeds: dict[str, ContainerCursor] = {}
        live: dict[str, SortedRuns] = {}
        try:
            catalog = read_catalog(self.access, counter)
            self._settings_of_throughput(catalog, state, counter)
            for rid, entry in catalog.items():
                if entry.kind != ResourceKind.CONTAINER:
                    continue
                cursor = state.feeds.get(rid)
                feeds[rid], due = capture_items(
                    self.access, entry, rid, cursor, state.items.get(rid), at, counter, found
                )
                last_sweep = feeds[rid].last_sweep
                if cursor is not None and feeds[rid].deletes is None:
                    due = due or last_sweep is None or at - last_sweep >= self.settings.deletion_sweep
                if due:  # after the feeds were read: the sweep compares with what they gave
                    live[rid] = live_item_rids(self.access, entry, counter)
                    feeds[rid].last_sweep = at
        except (AzureError, OSError) as error:
            for rids in live.values():
                rids.close()
            raise AccountReadFailed(describe(error)) from error
        for rid, rids in live.items():
            with rids:
                swept.extend(sweep_deletions(index, self.store.records, rid, rids, found, at))
        deleted = set(state.deleted)
        events = diff_catalog(state.catalog, catalog, deleted, at)
        counter.requests += 1
        markers = self.store.restore_markers()
        _attach_instance_ids(index, catalog, events, markers)

        seq = index.captures + 1
        written = 0
        records = len(found) + len(swept)
        if records:
            blob = segment_blob(seq)
            with SpooledBlob(heapq.merge(found, swept, key=record_key)) as data:
                self.store.put_file(blob, data.path)
                written += data.size
            start = index.last_capture or at
            index.segments.append(SegmentRef(seq=seq, start=start, end=at, blob=blob, records=records))
        late = (
            index.last_capture is not None
            and at - index.last_capture > self.settings.gap_factor * self.settings.interval
        )
        if late and not _continued_without_loss(state, feeds, events):
            assert index.last_capture is not None
            index.gaps.append(BackupGap(start=index.last_capture, end=at))
        index.format = max(index.format, FORMAT)
        index.events += events
        index.captures = seq
        index.versions_captured += records
        previous_state = index.state_blob
        index.state_blob = state_blob(seq)
        precision = state.deletion_precision_seconds
        if feeds:
            swept_only = any(f.deletes is None for f in feeds.values())
            precision = self.settings.deletion_sweep.total_seconds() if swept_only else 0.0
        index.deletion_precision_seconds = precision
        written += self.store.write_state(
            index.state_blob,
            CaptureState(
                time=at, catalog=catalog, feeds=feeds, deleted=sorted(deleted), deletion_precision_seconds=precision
            ),
        )
        written += self._maybe_base(index, catalog, seq, at)
        index.last_capture = at
        pruned = prune(index, at)
        written += self.store.write_index(index, etag)
        for blob in [*pruned, *([previous_state] if previous_state else [])]:
            self.store.delete(blob)
        self._forget_markers(index, markers, at)
        return CaptureResult(
            seq=seq,
            read_time=at,
            records=records,
            events=len(events),
            seconds=time.monotonic() - started,
            bytes_written=written,
            requests=counter.requests,
            index=index,
            deletion_precision_seconds=precision,
        )

    def sweep(self, index: BackupIndex) -> list[str]:
        """Delete what captures that died before committing left behind: blobs the index does not name, of a
        sequence number it has already passed (a capture running now writes the next one)."""
        named = {s.blob for s in index.segments} | {b.blob for b in index.bases} | {index.state_blob}
        swept = []
        for folder in ("segments", "bases", "state"):
            for blob in self.store.list(folder):
                seq = blob.split("/", 1)[1].split("-", 1)[0]
                if blob not in named and seq.isdigit() and int(seq) <= index.captures:
                    self.store.delete(blob)
                    swept.append(blob)
        return swept

    def _settings_of_throughput(self, catalog: dict[str, CatalogEntry], state: CaptureState, counter: _Counter) -> None:
        """Throughput is read once per incarnation (where the account lets it be read) and kept from then on;
        a container without its own throughput in a database with throughput shares the database's."""
        for rid, entry in catalog.items():
            known = state.catalog.get(rid)
            if known is None:
                entry.settings.update(_throughput(self.access, entry, counter))
            else:
                entry.settings.update({k: v for k, v in known.settings.items() if k in THROUGHPUT_SETTINGS})
        for entry in catalog.values():
            if entry.kind != ResourceKind.CONTAINER or "throughputMode" in entry.settings:
                continue
            database = catalog.get(entry.database_rid)
            if "throughput" in entry.settings:
                entry.settings["throughputMode"] = "Dedicated"
            elif database is not None and "throughput" in database.settings:
                entry.settings["throughputMode"] = "Shared"

    def _maybe_base(self, index: BackupIndex, catalog: dict[str, CatalogEntry], seq: int, at: datetime) -> int:
        """A new base every `base_every` captures, and at least `bases_per_window` per retention window."""
        if index.bases:
            last = index.bases[-1]
            spacing = timedelta(seconds=index.retention_seconds / self.settings.bases_per_window)
            if seq - last.seq < self.settings.base_every and at - last.time < spacing:
                return 0
        # Everything as it is now, from the last base and the segments since (no request to the account),
        # streamed in (container, item) order.
        containers = [rid for rid, e in catalog.items() if e.kind == ResourceKind.CONTAINER]
        header = {"t": "base", "seq": seq, "time": at.isoformat()}
        blob = base_blob(seq)
        with SpooledBlob(itertools.chain([header], materialize(index, self.store.records, containers, at))) as data:
            self.store.put_file(blob, data.path)
            index.bases.append(BaseRef(seq=seq, time=at, blob=blob))
            return data.size

    def _forget_markers(self, index: BackupIndex, markers: dict[str, dict[str, Any]], at: datetime) -> None:
        """A marker is needed until a committed index carries its instance id (or it outlived the window)."""
        attached = {e.owner_resource_id for e in index.events if e.instance_id}
        oldest = at - timedelta(seconds=index.retention_seconds)
        for rid, marker in markers.items():
            if rid in attached or datetime.fromisoformat(str(marker.get("time"))) < oldest:
                self.store.delete(restore_marker(rid))


def _attach_instance_ids(
    index: BackupIndex, catalog: dict[str, CatalogEntry], events: list[CatalogEvent], markers: dict[str, dict[str, Any]]
) -> None:
    """Restores record the incarnations they create (by _rid, after creating them): their events and catalog
    entries carry the restore's instance id from the capture that sees both."""
    for rid, marker in markers.items():
        instance = str(marker.get("instanceId"))
        if rid in catalog:
            catalog[rid].instance_id = instance
        for event in [*index.events, *events]:
            if event.owner_resource_id == rid and event.instance_id is None:
                event.instance_id = instance


def prune(index: BackupIndex, now: datetime) -> list[str]:
    """Drop what lies before the retention window, keeping the window's first base; returns blobs to delete."""
    cutoff = now - timedelta(seconds=index.retention_seconds)
    keep = max((i for i, b in enumerate(index.bases) if b.time <= cutoff), default=0)
    if keep == 0:
        return []
    first = index.bases[keep]
    # The first base's own segment stays: what it holds stamped after the base's time is read with the base.
    dropped = [b.blob for b in index.bases[:keep]] + [s.blob for s in index.segments if s.seq < first.seq]
    index.bases = index.bases[keep:]
    index.segments = [s for s in index.segments if s.seq >= first.seq]
    index.gaps = [g for g in index.gaps if g.end > first.time]
    gone = {i.rid for i in incarnations(index.events) if i.deleted is not None and i.deleted <= first.time}
    index.events = [e for e in index.events if e.owner_resource_id not in gone]
    return dropped
