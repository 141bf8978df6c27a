"""Continuous backup against cosmosdb-server and Azurite: what a capture records, and what the backup says
about any moment of its window."""

from __future__ import annotations

import io
import tempfile
from datetime import timedelta
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from backup_fixtures import account_of_own, backup_store, blob_names, capturer, own_account
from cosmos_fixtures import contents, fill, make_items

from ferry.backup.format import Operation, ResourceKind
from ferry.backup.store import BackupStore, IndexConflict
from ferry.backup.stream import write_lines
from ferry.backup.timeline import incarnations, items_at, named, restorable_window
from ferry.kinds.databaseaccount.capture import CaptureSettings
from ferry.storage.cosmos import CosmosAccess, strip_system
from support.seconds import moment, tick

__all__ = ["backup_store", "own_account"]


def _state(container: Any) -> dict[str, dict[str, Any]]:
    return contents(container)


def _at(store: BackupStore, rid: str, t: Any) -> dict[str, dict[str, Any]]:
    index, _ = store.read_index()
    assert index is not None
    return {str(body["id"]): strip_system(body) for body in items_at(index, store.records, rid, t).values()}


def test_every_version_and_deletion_is_in_the_backup(own_account: CosmosAccess, backup_store: BackupStore) -> None:
    database = own_account.client().create_database("shop")
    orders = database.create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(40))
    first = moment()
    at_first = _state(orders)
    capture = capturer(own_account, backup_store)
    capture.run_once()

    for item in make_items(40)[:8]:
        orders.upsert_item({**item, "n": -1, "changed": True})
    for item in make_items(40)[30:35]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    fill(orders, [{"id": "late", "tenant": "t9", "n": 99}])
    second = moment()
    at_second = _state(orders)
    capture.run_once()

    orders.upsert_item({"id": "item-0000", "tenant": "t0", "n": 1000})
    orders.delete_item("late", partition_key="t9")
    tick()
    result = capture.run_once()

    assert _at(backup_store, rid, first) == at_first
    assert _at(backup_store, rid, second) == at_second
    assert _at(backup_store, rid, result.read_time - timedelta(seconds=1)) == _state(orders)
    # 40 first versions, 8 changes, 5 deletions, 1 new item, then 1 change and 1 deletion: each recorded once.
    assert result.index.versions_captured == 40 + 8 + 5 + 1 + 2


def test_an_unchanged_account_costs_no_segment(own_account: CosmosAccess, backup_store: BackupStore) -> None:
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    fill(orders, make_items(25))
    capture = capturer(own_account, backup_store)
    capture.run_once()
    tick()
    quiet = capture.run_once()
    assert quiet.records == 0
    assert len(quiet.index.segments) == 1  # the first capture's only


def test_catalog_events_are_shaped_like_azures_restorable_resources(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    client = own_account.client()
    database = client.create_database("shop")
    database.create_container(
        "orders", PartitionKey("/tenant"), default_ttl=3600, unique_key_policy={"uniqueKeys": [{"paths": ["/sku"]}]}
    )
    capture = capturer(own_account, backup_store)
    capture.run_once()
    tick()
    database.replace_container("orders", PartitionKey("/tenant"), default_ttl=60)
    capture.run_once()
    tick()
    database.delete_container("orders")
    capture.run_once()
    tick()
    database.create_container("orders", PartitionKey("/city"))
    index = capture.run_once().index

    events = [e for e in index.events if e.kind == ResourceKind.CONTAINER]
    assert [e.operation_type for e in events] == [
        Operation.CREATE,
        Operation.REPLACE,
        Operation.DELETE,
        Operation.RECREATE,
    ]
    assert all(e.owner_id == "orders" and e.database == "shop" for e in events)
    assert events[0].settings["defaultTtl"] == 3600
    assert events[0].settings["uniqueKeyPolicy"] == {"uniqueKeys": [{"paths": ["/sku"]}]}
    assert events[1].settings["defaultTtl"] == 60
    assert events[3].settings["partitionKey"]["paths"] == ["/city"]
    assert events[3].owner_resource_id != events[0].owner_resource_id  # a new incarnation: a new _rid
    found = named(incarnations(index.events), ResourceKind.CONTAINER, "shop", "orders")
    assert [i.deleted is not None for i in found] == [True, False]
    assert found[0].settings_at(events[1].event_timestamp)["defaultTtl"] == 60
    assert found[0].settings_at(events[0].event_timestamp)["defaultTtl"] == 3600
    assert [e.operation_type for e in index.events if e.kind == ResourceKind.DATABASE] == [Operation.CREATE]


def test_a_capture_that_dies_before_committing_loses_and_duplicates_nothing(
    own_account: CosmosAccess, backup_store: BackupStore, azurite: Any
) -> None:
    """The index is the commit point: a capture whose index write fails leaves the backup as it was, and the
    next capture records the same changes once."""
    from faultproxy import FaultProxy

    from ferry.storage import blobs

    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(30))
    capturer(own_account, backup_store).run_once()
    for item in make_items(30)[:6]:
        orders.upsert_item({**item, "n": -5})
    orders.delete_item("item-0029", partition_key="t1")
    expected = _state(orders)
    tick()

    proxy = FaultProxy(f"http://{azurite.host}:{azurite.blob_port}").start()
    try:
        account = azurite.accounts["ferrydst"]
        via = account.connection_string.replace(account.blob_endpoint, proxy.endpoint(account.name))
        broken = BackupStore(blobs.container_client(via, backup_store.container.container_name), backup_store.prefix)
        proxy.fail_next(100, lambda method, path: method == "PUT" and "index.json" in path)
        try:
            capturer(own_account, broken).run_once()
            raise AssertionError("the index write should have failed")
        except Exception as error:  # the SDK's error after its retries
            assert "503" in str(error) or "busy" in str(error).lower()
    finally:
        proxy.stop()
    index, _ = backup_store.read_index()
    assert index is not None and index.captures == 1 and index.versions_captured == 30

    done = capturer(own_account, backup_store).run_once()
    assert done.records == 7  # six changes and one deletion, once
    assert _at(backup_store, rid, done.read_time - timedelta(seconds=1)) == expected
    referenced = {s.blob for s in done.index.segments} | {b.blob for b in done.index.bases} | {done.index.state_blob}
    stray = set(blob_names(backup_store)) - referenced
    assert 1 <= len(stray) <= 2  # the dead capture's segment and cursor: unreferenced, never read ...
    assert sorted(capturer(own_account, backup_store).sweep(done.index)) == sorted(stray)  # ... and swept
    assert set(blob_names(backup_store)) == referenced


def test_a_second_capturer_cannot_commit_over_the_first(own_account: CosmosAccess, backup_store: BackupStore) -> None:
    """Two capture pods for a moment (a replacement starting before its predecessor ended): one commits."""
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    fill(orders, make_items(10))
    capturer(own_account, backup_store).run_once()
    orders.upsert_item({"id": "new", "tenant": "t1"})
    tick()
    first, second = capturer(own_account, backup_store), capturer(own_account, backup_store)
    index, etag = backup_store.read_index()
    second.run_once()
    assert index is not None
    try:
        backup_store.write_index(index, etag)
        raise AssertionError("a stale index write must be refused")
    except IndexConflict:
        pass
    assert first.run_once().index.versions_captured == 11


def test_gaps_are_recorded_and_pruning_keeps_the_windows_first_base(tmp_path: Any, backup_store: BackupStore) -> None:
    with account_of_own(tmp_path / "cosmos", all_versions=False) as (swept, _):
        _gaps_and_pruning(swept, backup_store)


def _gaps_and_pruning(account: CosmosAccess, backup_store: BackupStore) -> None:
    """Without the all-versions feed a late capture only sees the newest version of what changed twice."""
    orders = account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(12))
    settings = CaptureSettings(retention=timedelta(seconds=8), interval=timedelta(seconds=1), bases_per_window=4)
    capture = capturer(account, backup_store, settings)
    first = capture.run_once()
    for n in range(6):
        orders.upsert_item({"id": "counter", "tenant": "t0", "n": n})
        tick()
        capture.run_once()
    tick()
    tick()
    tick()
    tick()  # four seconds without a capture: more than three intervals
    last = capture.run_once()
    index = last.index
    assert index.gaps and index.gaps[-1].end == last.read_time
    window = restorable_window(index, last.read_time)
    assert window is not None
    earliest, latest = window
    assert earliest > first.read_time  # the oldest part was pruned
    assert index.bases[0].time <= earliest  # ... but the window still starts at a base
    kept = set(blob_names(backup_store))
    assert first.index.bases[0].blob not in kept
    assert {b.blob for b in index.bases} <= kept and {s.blob for s in index.segments} <= kept
    assert _at(backup_store, rid, latest) == _state(orders)
    assert _at(backup_store, rid, earliest)["counter"]["n"] >= 0


def test_a_late_capture_on_the_all_versions_feed_is_no_gap(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    """A capture pod down for a while misses nothing when the feed dates every version: no gap, and a time
    inside the pause restores exactly."""
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(6))
    settings = CaptureSettings(retention=timedelta(minutes=5), interval=timedelta(seconds=1))
    capture = capturer(own_account, backup_store, settings)
    capture.run_once()
    orders.upsert_item({"id": "counter", "tenant": "t0", "n": 1})
    inside = moment()
    at_inside = _state(orders)
    orders.upsert_item({"id": "counter", "tenant": "t0", "n": 2})
    orders.delete_item("item-0001", partition_key="t1")
    tick()
    tick()  # well over three intervals since the last capture
    late = capture.run_once()
    assert not late.index.gaps
    assert _at(backup_store, rid, inside) == at_inside
    assert _at(backup_store, rid, late.read_time) == _state(orders)


def test_the_backup_does_not_capture_ferrys_job_history(own_account: CosmosAccess, backup_store: BackupStore) -> None:
    from ferry.transfer.state import StateStore

    StateStore(own_account).ensure()
    own_account.client().create_database("shop")
    index = capturer(own_account, backup_store).run_once().index
    assert {e.owner_id for e in index.events} == {"shop"}


def test_a_blob_read_in_part_leaves_no_file_behind(
    backup_store: BackupStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that stops early and is never closed (a restore killed mid-stream) leaves no named spool file."""
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))  # this test's own temporary directory
    data = io.BytesIO()
    write_lines(({"r": f"rid-{i}", "d": {"id": str(i)}} for i in range(5_000)), data)
    backup_store.container.create_container()
    backup_store.put("segments/one.jsonl.gz", data.getvalue())

    reader = backup_store.records("segments/one.jsonl.gz")
    assert next(reader) == {"r": "rid-0", "d": {"id": "0"}}
    assert list(spool_dir.iterdir()) == []
    assert sum(1 for _ in reader) == 4_999  # the rest is still there to read
