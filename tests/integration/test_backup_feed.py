"""Captures from the change feed (cosmosdb-server behind the change feed stand-in, three feed ranges): item
deletions from the all-versions-and-deletes feed, or swept where the account has none; the cursor's size;
a capture that fails part-way through the feeds."""

from __future__ import annotations

import gzip
import time
from datetime import timedelta
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from backup_fixtures import account_of_own, backup_store, capturer, either_account, own_account
from cosmos_fixtures import contents, fill, make_items

from ferry.backup.store import BackupStore
from ferry.backup.timeline import items_at
from ferry.kinds.databaseaccount.capture import AccountReadFailed, CaptureSettings
from ferry.storage.cosmos import CosmosAccess, strip_system
from support.seconds import moment, tick

__all__ = ["backup_store", "either_account", "own_account"]

EVERY_CAPTURE = CaptureSettings(
    retention=timedelta(hours=1), interval=timedelta(seconds=2), deletion_sweep=timedelta(seconds=1)
)


def _at(store: BackupStore, rid: str, t: Any) -> dict[str, dict[str, Any]]:
    index, _ = store.read_index()
    assert index is not None
    return {str(body["id"]): strip_system(body) for body in items_at(index, store.records, rid, t).values()}


def test_deletions_under_either_path_restore_exactly(
    either_account: CosmosAccess, backup_store: BackupStore, request: pytest.FixtureRequest
) -> None:
    swept = "deletion-sweep" in request.node.name
    orders = either_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(40))
    capture = capturer(either_account, backup_store, EVERY_CAPTURE)
    first = capture.run_once()
    assert first.records == 40
    assert first.deletion_precision_seconds == (1.0 if swept else 0.0)

    for item in make_items(40)[:5]:
        orders.upsert_item({**item, "n": -1})
    for item in make_items(40)[30:33]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    between = moment()  # a time between changes, inside one capture interval
    at_between = contents(orders)
    orders.delete_item("item-0010", partition_key="t3")
    orders.upsert_item({"id": "item-0011", "tenant": "t4", "n": 11, "again": True})
    orders.delete_item("item-0000", partition_key="t0")
    orders.create_item({"id": "item-0000", "tenant": "t0", "n": 0, "recreated": True})  # a new _rid
    tick()
    second = capture.run_once()
    # Each change once: 5 versions, 4 deletions, item-0011's version, and the re-creation's two (the old _rid
    # deleted, a version under the new one); the latest-version feed (sweep path) has no version of item-0000
    # between its change and its deletion.
    assert second.records == (4 if swept else 5) + 4 + 1 + 2
    assert _at(backup_store, rid, second.read_time - timedelta(seconds=1)) == contents(orders)
    if swept:
        # A swept deletion is dated at the sweep that saw it: before it, the item is still there.
        assert set(_at(backup_store, rid, between)) == set(at_between) | {"item-0030", "item-0031", "item-0032"}
    else:
        assert _at(backup_store, rid, between) == at_between  # dated by the service: exact


def test_the_sweep_runs_on_its_own_cadence(backup_store: BackupStore, tmp_path: Any) -> None:
    settings = CaptureSettings(
        retention=timedelta(hours=1), interval=timedelta(seconds=1), deletion_sweep=timedelta(seconds=4)
    )
    with account_of_own(tmp_path / "cosmos", all_versions=False) as (access, _):
        orders = access.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
        rid = str(orders.read()["_rid"])
        fill(orders, make_items(10))
        capture = capturer(access, backup_store, settings)
        started = time.monotonic()
        capture.run_once()
        orders.delete_item("item-0001", partition_key="t1")
        orders.upsert_item({"id": "item-0002", "tenant": "t2", "n": 2, "changed": True})
        tick()
        early = capture.run_once()  # before the sweep is due: the change is captured, the deletion not yet
        assert time.monotonic() - started < 4
        assert early.records == 1 and early.deletion_precision_seconds == 4.0
        assert "item-0001" in _at(backup_store, rid, early.read_time - timedelta(seconds=1))
        time.sleep(max(0.0, 4.2 - (time.monotonic() - started)))
        tick()
        swept = capture.run_once()
        assert swept.records == 1
        assert _at(backup_store, rid, swept.read_time - timedelta(seconds=1)) == contents(orders)


def test_the_cursor_does_not_grow_with_the_container(own_account: CosmosAccess, backup_store: BackupStore) -> None:
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    capture = capturer(own_account, backup_store)

    def cursor(result: Any) -> int:
        return len(gzip.decompress(backup_store.get(result.index.state_blob)))

    fill(orders, make_items(10))
    small = cursor(capture.run_once())
    fill(orders, make_items(400)[10:])
    tick()
    large = capture.run_once()
    assert large.records == 390
    assert cursor(large) <= small + 200  # continuations: as many as before, whatever the item count


def test_a_capture_that_fails_part_way_through_the_feeds_loses_and_duplicates_nothing(
    backup_store: BackupStore, tmp_path: Any
) -> None:
    """Feed ranges read before the failure have advanced only in memory: the next capture reads them again
    from the committed continuations."""
    with account_of_own(tmp_path / "cosmos", all_versions=True) as (access, feed):
        orders = access.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
        rid = str(orders.read()["_rid"])
        fill(orders, make_items(60))
        capture = capturer(access, backup_store)
        capture.run_once()
        for item in make_items(60)[:20]:
            orders.upsert_item({**item, "n": -2})
        for item in make_items(60)[40:45]:
            orders.delete_item(item["id"], partition_key=item["tenant"])
        tick()

        def last_range_feed(method: str, path: str, headers: dict[str, str]) -> bool:
            lowered = {k.lower(): v for k, v in headers.items()}
            return "a-im" in lowered and lowered.get("x-ms-documentdb-partitionkeyrangeid", "").endswith("2")

        feed.fail_next(1000, 500, last_range_feed, "injected")
        with pytest.raises(AccountReadFailed):
            capture.run_once()
        assert feed.injected >= 1
        feed.faults.clear()
        index, _ = backup_store.read_index()
        assert index is not None and index.captures == 1

        done = capture.run_once()
        assert done.records == 20 + 5
        assert _at(backup_store, rid, done.read_time - timedelta(seconds=1)) == contents(orders)


def test_a_version_1_cursor_is_read_once_then_the_feed_takes_over(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    """A backup made before the change feed cursor (each item's _etag in the cursor) goes on without losing or
    repeating a change."""
    from ferry.backup.format import CaptureState

    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(20))
    capture = capturer(own_account, backup_store)
    first = capture.run_once()
    # The cursor as version 1 wrote it: every item's _etag, no continuations.
    listed = orders.query_items("SELECT c._rid, c._etag FROM c", enable_cross_partition_query=True)
    state = backup_store.read_state(str(first.index.state_blob))
    old = CaptureState(
        time=state.time,
        catalog=state.catalog,
        items={rid: {str(i["_rid"]): str(i["_etag"]) for i in listed}},
        deleted=state.deleted,
    )
    backup_store.write_state(str(first.index.state_blob), old)
    for item in make_items(20)[:3]:
        orders.upsert_item({**item, "n": -7})
    for item in make_items(20)[10:12]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    tick()
    moved = capture.run_once()
    assert moved.records == 3 + 2
    state = backup_store.read_state(str(moved.index.state_blob))
    assert not state.items and state.feeds[rid].deletes
    orders.upsert_item({"id": "after", "tenant": "t1"})
    tick()
    later = capture.run_once()
    assert later.records == 1
    assert _at(backup_store, rid, later.read_time - timedelta(seconds=1)) == contents(orders)


CAPTURE = """
import os, sys, urllib3
from datetime import timedelta
urllib3.disable_warnings()
from ferry.backup.store import BackupStore
from ferry.kinds.databaseaccount.capture import Capturer, CaptureSettings
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
access = CosmosAccess(os.environ["ENDPOINT"], os.environ["KEY"], verify_tls=False)
store = BackupStore(blobs.container_client(os.environ["CONNECTION"], os.environ["CONTAINER"]), os.environ["PREFIX"])
capturer = Capturer(access, store, CaptureSettings(retention=timedelta(hours=1), interval=timedelta(seconds=2)))
print("ready", flush=True)
while True:
    capturer.run_once()
"""


def test_capture_processes_killed_at_any_moment_lose_and_duplicate_nothing(
    own_account: CosmosAccess, backup_store: BackupStore, azurite: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys

    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    rid = str(orders.read()["_rid"])
    fill(orders, make_items(300))
    capturer(own_account, backup_store).run_once()
    for item in make_items(300)[:200]:
        orders.upsert_item({**item, "n": -9})
    for item in make_items(300)[250:270]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    tick()
    account = azurite.accounts["ferrydst"]
    env = {
        **os.environ,
        "ENDPOINT": own_account.endpoint,
        "KEY": own_account.key,
        "CONNECTION": account.connection_string,
        "CONTAINER": backup_store.container.container_name,
        "PREFIX": backup_store.prefix,
    }
    for delay in (0.3, 0.9, 1.6, 4.0):  # at different points of a capture, before or after a commit
        process = subprocess.Popen([sys.executable, "-c", CAPTURE], env=env, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    tick()
    done = capturer(own_account, backup_store).run_once()
    assert done.index.captures >= 3  # some killed process had committed captures
    assert done.index.versions_captured == 300 + 200 + 20  # each version and deletion once, whoever committed it
    assert _at(backup_store, rid, done.read_time - timedelta(seconds=1)) == contents(orders)
