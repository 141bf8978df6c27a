"""Continuous backup and InAccountRestore end to end: kubectl → kube-apiserver → operator → capture pod and
restore instances (containers on the kubelet) → cosmosdb-server and Azurite."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from restore_fixtures import (
    OwnCosmos,
    backed_up_account,
    captured,
    condition,
    contents,
    item,
    restore,
    when,
)

from ferry_dev.cosmosproxy import CosmosProxy, item_writes
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl, with_reasons
from support.seconds import moment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


def test_a_deleted_container_comes_back_as_it_was_at_the_time(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    orders = cosmos.container("shop", "orders", items=60, default_ttl=3600)
    backed_up_account(kubectl, stack, cosmos)
    captured(kubectl)
    for i in range(0, 10):
        orders.upsert_item(item(i, version=2))
    for i in range(10, 20):
        orders.delete_item(f"item-{i:04d}", partition_key=f"t{i % 5}")
    # T is the end of the window once a capture has seen every change above: the backup dates a deletion by
    # the capture that saw it, so a time between a deletion and its capture is not one to expect exactness at.
    t = captured(kubectl, past=moment())
    expected = contents(orders)
    for i in range(0, 5):
        orders.upsert_item(item(i, version=3))
    for i in range(20, 25):
        orders.delete_item(f"item-{i:04d}", partition_key=f"t{i % 5}")
    for i in range(60, 65):
        orders.upsert_item(item(i))
    captured(kubectl, past=moment())
    cosmos.client.get_database_client("shop").delete_container("orders")

    kubectl.apply(restore("orders-back", "shop", "orders", restoreTimestamp=when(t)))
    status = kubectl.wait_phase("inaccountrestore", "orders-back", "Succeeded", timeout=150)["status"]
    back = cosmos.client.get_database_client("shop").get_container_client("orders")
    assert contents(back) == expected
    assert back.read()["defaultTtl"] == 3600
    assert datetime.fromisoformat(status["restoreTimestamp"]) == t
    assert status["restoredItemCount"] == status["totalCount"] == len(expected) == 50
    assert status["percent"] == 100 and status["instanceId"]
    assert status["startTime"] and status["completionTime"]
    kubectl.wait_condition("inaccountrestore", "orders-back", "Ready")
    assert kubectl.kstatus("inaccountrestore", "orders-back") == "Current"
    table = kubectl("get", "inaccountrestores")
    assert re.search(r"orders-back\s+acct\s+shop\s+orders\s+\S+\s+Succeeded\s+100", table), table
    kubectl.events("orders-back", with_reasons("Restoring", "Restored"))

    account = kubectl.get("databaseaccount", "acct")
    assert condition(account, "BackupHealthy")["status"] == "True"
    assert account["status"]["earliestRestorableTime"] <= when(t) <= account["status"]["latestRestorableTime"]

    listed = json.loads(kubectl.ferry("restorable", "list", "--account", "acct", "--at", when(t), "-o", "json"))
    mine = [c for c in listed["containers"] if c["name"] == "orders"]
    assert [e["operationType"] for e in mine[0]["events"]] == ["Create", "Delete"]
    assert mine[-1]["instanceId"] == status["instanceId"]  # the incarnation the restore created
    assert listed["at"]["resources"] == [{"databaseName": "shop", "collectionNames": ["orders"]}]
    table = kubectl.ferry("restorable", "list", "--account", "acct", "--database", "shop")
    assert re.search(r"container\s+shop\s+orders\s+\S+\s+\S+Z\s+\S+Z\s+-\s+Create@", table), table
    assert "Restorable window: " in table


def test_a_deleted_database_comes_back_with_both_containers_one_second_before_its_deletion(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    carts = cosmos.container("store", "carts", items=25)
    users = cosmos.container("store", "users", pk="/id", items=15)
    backed_up_account(kubectl, stack, cosmos)
    captured(kubectl)
    carts.upsert_item(item(3, version=2))
    users.delete_item("item-0001", partition_key="item-0001")
    expected = {"carts": contents(carts), "users": contents(users)}
    captured(kubectl, past=moment())
    cosmos.client.delete_database("store")
    deleted_by = moment()

    kubectl.apply(restore("store-back", "store"))
    status = kubectl.wait_phase("inaccountrestore", "store-back", "Succeeded", timeout=150)["status"]
    assert cosmos.names("store") == {"carts", "users"}
    database = cosmos.client.get_database_client("store")
    assert {name: contents(database.get_container_client(name)) for name in expected} == expected
    assert database.get_container_client("users").read()["partitionKey"]["paths"] == ["/id"]
    chosen = datetime.fromisoformat(status["restoreTimestamp"])
    listed = json.loads(kubectl.ferry("restorable", "list", "--account", "acct", "-o", "json"))
    deletion = next(d["deleted"] for d in listed["databases"] if d["name"] == "store" and d["deleted"])
    assert chosen == datetime.fromisoformat(deletion) - timedelta(seconds=1) and chosen < deleted_by
    assert when(chosen) in condition(kubectl.get("inaccountrestore", "store-back"), "Complete")["message"]
    assert status["restoredItemCount"] == 39


def test_the_past_of_a_live_container_comes_back_beside_it_under_another_name(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    ledger = cosmos.container("bank", "ledger", items=30)
    backed_up_account(kubectl, stack, cosmos)
    captured(kubectl)
    t = moment()
    expected = contents(ledger)
    for i in range(30):
        ledger.upsert_item(item(i, version=9))  # a bad batch job overwrote everything
    now = contents(ledger)
    captured(kubectl, past=moment())

    kubectl.apply(
        restore(
            "rewind", "bank", "ledger", restoreTimestamp=when(t), target={"database": "bank", "container": "ledger-t"}
        )
    )
    kubectl.wait_phase("inaccountrestore", "rewind", "Succeeded", timeout=150)
    assert contents(cosmos.client.get_database_client("bank").get_container_client("ledger-t")) == expected
    assert contents(ledger) == now  # the live container is untouched


def test_each_rule_refuses_with_its_reason_and_a_message_that_says_what_to_do(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    cosmos.container("app", "live", items=3)
    cosmos.container("app", "busy", items=3)
    cosmos.container("app", "gone", items=3)
    cosmos.container("olddb", "things", items=3)
    backed_up_account(kubectl, stack, cosmos)
    before = captured(kubectl)
    cosmos.container("app", "late", items=1)
    captured(kubectl, past=moment())
    cosmos.client.get_database_client("app").delete_container("late")
    cosmos.client.get_database_client("app").delete_container("gone")
    cosmos.client.delete_database("olddb")
    captured(kubectl, past=moment())
    early = datetime.fromisoformat(kubectl.status("databaseaccount", "acct")["earliestRestorableTime"])

    cases = {
        "live": ("ResourceExists", restore("live", "app", "live"), "delete it first"),
        "never": ("NotInBackup", restore("never", "app", "never"), "ferry restorable list"),
        "future": ("FutureTimestamp", restore("future", "app", "gone", restoreTimestamp="2099-01-01T00:00:00Z"),
                   "future"),
        "early": ("OutsideRetentionWindow", restore("early", "app", "gone",
                                                    restoreTimestamp=when(early - timedelta(hours=1))), "window"),
        "nodb": ("DatabaseNotFound", restore("nodb", "olddb", "things", restoreTimestamp=when(before)),
                 "restore the database first"),
        "taken": ("TargetExists", restore("taken", "app", "gone", restoreTimestamp=when(before),
                                          target={"database": "app", "container": "busy"}), "not in use"),
        "notyet": ("NotFoundAtTime", restore("notyet", "app", "late", restoreTimestamp=when(before)), "it existed"),
    }  # fmt: skip
    for _, manifest, _ in cases.values():
        kubectl.apply(manifest)
    for name, (reason, _, advice) in cases.items():
        status = kubectl.wait_phase("inaccountrestore", name, "Failed", timeout=120)["status"]
        assert status["failure"]["reason"] == reason, (name, status["failure"])
        assert advice in status["failure"]["message"], (name, status["failure"])
    assert cosmos.names("app") == {"live", "busy"}  # nothing was created by a refused restore

    kubectl.apply(restore("first", "app", "gone", restoreTimestamp=when(before)))
    kubectl.apply(restore("second", "app", "gone", restoreTimestamp=when(before)))
    second = kubectl.wait_phase("inaccountrestore", "second", "Failed", timeout=60)["status"]
    assert second["failure"]["reason"] == "RestoreInProgress" and "first" in second["failure"]["message"]
    assert kubectl.kstatus("inaccountrestore", "second") == "Failed"
    kubectl.wait_phase("inaccountrestore", "first", "Succeeded", timeout=120)

    backed_up_account(kubectl, stack, cosmos, name="plain", backup={"mode": "Off"})
    kubectl.apply(restore("nobackup", "app", "gone", account="plain"))
    status = kubectl.wait_phase("inaccountrestore", "nobackup", "Failed", timeout=60)["status"]
    assert status["failure"]["reason"] == "BackupNotEnabled"

    refused = kubectl.run(
        "apply", "-f", "-", check=False, stdin=restore("bad", "app", target={"database": "x", "container": "y"})
    )
    assert refused.returncode != 0 and "target.container" in refused.stderr


def test_four_restores_at_once_three_run_and_one_waits_in_line(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    names = ["c0", "c1", "c2", "c3"]
    expected = {n: contents(cosmos.container("many", n, items=150)) for n in names}
    backed_up_account(kubectl, stack, cosmos)
    captured(kubectl)
    for n in names:
        cosmos.client.get_database_client("many").delete_container(n)
    captured(kubectl, past=moment())
    kubectl.apply("---\n".join(restore(f"r-{n}", "many", n) for n in names))
    fourth = kubectl.wait_for(
        "inaccountrestore", "r-c3", lambda o: (o.get("status") or {}).get("queuePosition") == 1, timeout=60
    )
    assert fourth["status"]["phase"] == "Queued"
    # The account's own record catches up with the restores': r-c3 in line, or already running once one of the
    # first three (quick restores) ended; never more than three at once.
    account = kubectl.wait_for(
        "databaseaccount",
        "acct",
        lambda o: (
            "r-c3" in ((o.get("status") or {}).get("queuedRestores") or [])
            or "r-c3" in ((o.get("status") or {}).get("activeRestores") or [])
        ),
    )["status"]
    active = account.get("activeRestores") or []
    assert len(active) <= 3, active
    if "r-c3" in (account.get("queuedRestores") or []):
        assert account["queuedRestores"] == ["r-c3"] and set(active) <= {"r-c0", "r-c1", "r-c2"}, account
    done = [kubectl.wait_phase("inaccountrestore", f"r-{n}", "Succeeded", timeout=180)["status"] for n in names]
    assert done[3]["startTime"] >= min(d["completionTime"] for d in done[:3])
    database = cosmos.client.get_database_client("many")
    assert {n: contents(database.get_container_client(n)) for n in names} == expected


def test_killed_restore_instances_and_a_killed_capture_pod_lose_nothing(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos, request: pytest.FixtureRequest
) -> None:
    big = cosmos.container("tough", "big", items=800)
    proxy = CosmosProxy(cosmos.endpoint).start()  # to slow the restore's writes down
    request.addfinalizer(proxy.stop)
    backed_up_account(kubectl, stack, cosmos, endpoint=proxy.endpoint)
    captured(kubectl)
    for i in range(0, 800, 4):
        big.upsert_item(item(i, version=2))
        if i == 400:
            assert stack.kill_pod(kubectl.namespace, "acct-backup-0", signal.SIGKILL)
    expected = contents(big)
    captured(kubectl, past=moment(), timeout=120)
    cosmos.client.get_database_client("tough").delete_container("big")
    captured(kubectl, past=moment())

    proxy.throttle_next(400, retry_after_ms=100)  # the restore lasts long enough for the kills to land mid-way
    kubectl.apply(restore("big-back", "tough", "big"))
    kills = 0
    deadline = time.monotonic() + 120
    while kills < 2 and time.monotonic() < deadline:
        status = kubectl.status("inaccountrestore", "big-back")
        if status.get("phase") == "Succeeded":
            break
        instances = kubectl.status("databaseaccount", "acct").get("restoreInstances") or []
        victim = instances[kills % len(instances)] if instances else None
        started = status.get("phase") == "Restoring"
        if victim and started and (kills == 0 or (status.get("restoredItemCount") or 0) > 100 * kills):
            kills += stack.kill_pod(kubectl.namespace, victim, signal.SIGKILL)
        time.sleep(0.5)
    assert kills >= 1, "the restore finished before it could be interrupted"
    status = kubectl.wait_phase("inaccountrestore", "big-back", "Succeeded", timeout=180)["status"]
    assert contents(cosmos.client.get_database_client("tough").get_container_client("big")) == expected
    assert status["restoredItemCount"] == status["totalCount"] == 800
    backup = kubectl.status("databaseaccount", "acct")
    # The all-versions feed dates every version itself: the capture pod's downtime leaves no gap.
    assert not backup["backup"].get("gaps")


def test_retention_prunes_the_window_and_refuses_what_left_it(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    brief = cosmos.container("short", "brief", items=5)
    backed_up_account(kubectl, stack, cosmos, annotations={"ferry.dev/backup-retention": "20s"})
    first = captured(kubectl)
    brief.upsert_item(item(1, version=2))
    time.sleep(30)
    moved = kubectl.wait_for(
        "databaseaccount",
        "acct",
        lambda o: (o.get("status") or {}).get("earliestRestorableTime", "") > when(first + timedelta(seconds=5)),
        timeout=60,
    )
    earliest = datetime.fromisoformat(moved["status"]["earliestRestorableTime"])
    latest = datetime.fromisoformat(moved["status"]["latestRestorableTime"])
    assert timedelta(seconds=15) <= latest - earliest <= timedelta(seconds=30)
    cosmos.client.get_database_client("short").delete_container("brief")
    kubectl.apply(restore("too-old", "short", "brief", restoreTimestamp=when(first)))
    status = kubectl.wait_phase("inaccountrestore", "too-old", "Failed", timeout=60)["status"]
    assert status["failure"]["reason"] == "OutsideRetentionWindow"


def test_a_pause_in_the_backup_is_a_gap_and_a_restore_into_it_is_refused(
    stack: DevStack, kubectl: Kubectl, swept_cosmos: OwnCosmos
) -> None:
    cosmos = swept_cosmos
    cosmos.container("gappy", "c", items=5)
    backed_up_account(kubectl, stack, cosmos)
    captured(kubectl)
    kubectl("patch", "databaseaccount", "acct", "--type=merge", "-p", '{"spec": {"backup": {"mode": "Off"}}}')
    kubectl.wait_gone("pod", "acct-backup-0", timeout=60)
    paused = moment()
    time.sleep(8)  # more than three capture intervals without a capture
    kubectl("patch", "databaseaccount", "acct", "--type=merge", "-p", '{"spec": {"backup": {"mode": "Continuous"}}}')

    def gap_of_pause(o: dict[str, Any]) -> dict[str, str] | None:
        # A capture pod starved of CPU for more than three intervals is a gap too (a loaded machine may show one).
        gaps = ((o.get("status") or {}).get("backup") or {}).get("gaps") or []
        return next((g for g in gaps if g["start"] <= when(paused) < g["end"]), None)

    unhealthy = kubectl.wait_for(
        "databaseaccount",
        "acct",
        lambda o: condition(o, "BackupHealthy").get("reason") == "GapInWindow" and gap_of_pause(o) is not None,
        timeout=90,
    )
    assert "gap" in condition(unhealthy, "BackupHealthy")["message"]
    gap = gap_of_pause(unhealthy)
    assert gap is not None
    cosmos.client.get_database_client("gappy").delete_container("c")
    captured(kubectl, past=moment())
    kubectl.apply(restore("in-gap", "gappy", "c", restoreTimestamp=when(paused + timedelta(seconds=1))))
    status = kubectl.wait_phase("inaccountrestore", "in-gap", "Failed", timeout=90)["status"]
    assert status["failure"]["reason"] == "InBackupGap" and gap["start"] in status["failure"]["message"]


def test_a_write_region_change_fails_the_incomplete_restores_of_the_account(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    proxy = CosmosProxy(cosmos.endpoint).start()
    try:
        proxy.set_regions(["West US"], ["West US", "East US"])
        cosmos.container("moving", "done", items=5)
        cosmos.container("moving", "slow", items=50)
        backed_up_account(kubectl, stack, cosmos, endpoint=proxy.endpoint)
        captured(kubectl)
        for name in ("done", "slow"):
            cosmos.client.get_database_client("moving").delete_container(name)
        captured(kubectl, past=moment())
        kubectl.apply(restore("done", "moving", "done"))
        kubectl.wait_phase("inaccountrestore", "done", "Succeeded", timeout=120)

        def slow_writes(method: str, path: str, headers: dict[str, str]) -> bool:
            return item_writes(method, path, headers) and "/colls/slow/" in path

        proxy.throttle_next(1_000_000, retry_after_ms=500, match=slow_writes)  # the restore crawls
        kubectl.apply(restore("slow", "moving", "slow"))
        running = kubectl.wait_phase("inaccountrestore", "slow", "Restoring", timeout=90)
        assert running["status"]["writeRegion"] == "West US"
        proxy.set_regions(["East US"], ["East US", "West US"])
        failed = kubectl.wait_phase("inaccountrestore", "slow", "Failed", timeout=30)["status"]
        assert failed["failure"]["reason"] == "WriteRegionChanged" and "East US" in failed["failure"]["message"]
        assert kubectl.status("inaccountrestore", "done")["phase"] == "Succeeded"
    finally:
        proxy.stop()


def test_item_deletions_come_back_exactly_under_either_deletion_path(
    stack: DevStack, kubectl: Kubectl, either_cosmos: OwnCosmos, request: pytest.FixtureRequest
) -> None:
    swept = "deletion-sweep" in request.node.name
    cosmos = either_cosmos
    orders = cosmos.container("shop", "orders", items=30)
    policy = {
        "mode": "Continuous",
        "tier": "Continuous7Days",
        "captureInterval": "2s",
        "deletionSweepInterval": "1s",  # every capture sweeps, where deletions are swept
        "location": {
            "account": {"secretRef": {"name": "backup-storage", "key": "connectionString"}},
            "container": "backups",
        },
    }
    backed_up_account(kubectl, stack, cosmos, backup=policy)
    captured(kubectl)
    for i in range(0, 4):
        orders.upsert_item(item(i, version=2))
    for i in range(10, 16):
        orders.delete_item(f"item-{i:04d}", partition_key=f"t{i % 5}")
    t = captured(kubectl, past=moment())
    expected = contents(orders)
    for i in range(20, 25):
        orders.delete_item(f"item-{i:04d}", partition_key=f"t{i % 5}")
    captured(kubectl, past=moment())
    account = kubectl.status("databaseaccount", "acct")
    assert account["backup"]["deletionPrecisionSeconds"] == (1 if swept else 0)
    cosmos.client.get_database_client("shop").delete_container("orders")

    kubectl.apply(restore("orders-back", "shop", "orders", restoreTimestamp=when(t)))
    status = kubectl.wait_phase("inaccountrestore", "orders-back", "Succeeded", timeout=150)["status"]
    back = cosmos.client.get_database_client("shop").get_container_client("orders")
    assert contents(back) == expected and len(expected) == 24
    assert ("deletionSweepInterval" in status.get("note", "")) if swept else "note" not in status
