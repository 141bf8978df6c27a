"""The restore engine against cosmosdb-server and Azurite: what comes back is the past, exactly, and a killed
restore instance costs nothing but time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from backup_fixtures import backup_store, capturer, either_account, own_account
from cosmos_fixtures import contents, fill, make_items

from ferry.api.transfer import VerifyMode
from ferry.backup.restoreplan import RestoreRequest
from ferry.backup.store import BackupStore
from ferry.kinds.inaccountrestore.engine import RestoreJob, run_restore_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.job_document import InstanceOutcome
from ferry.transfer.state import StateStore
from support.reports import Reports
from support.seconds import moment, tick

__all__ = ["backup_store", "either_account", "own_account"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]


def job(request: RestoreRequest, instances: int = 1, verify: VerifyMode = VerifyMode.COUNT) -> RestoreJob:
    return RestoreJob(
        job_id=str(uuid.uuid4()),
        name=f"ns/{uuid.uuid4().hex[:6]}",
        request=request,
        instances=instances,
        write_region="South Central US",
        verify=verify,
    )


def restore(
    access: CosmosAccess, store: BackupStore, work: RestoreJob, reports: Reports | None = None, instance: str = "i0"
) -> InstanceOutcome:
    deadline = time.monotonic() + 60
    while True:
        outcome = run_restore_instance(
            access, store, work, instance, reports or Reports(), lambda: False, lease_seconds=2.0
        )
        if outcome.kind != "idle" or time.monotonic() > deadline:
            return outcome
        time.sleep(0.3)


def _history(access: CosmosAccess, store: BackupStore) -> dict[str, Any]:
    """An orders container with a past: items written, some changed and some deleted after a moment T, then
    the container deleted. Returns T, what the container held at T, its settings and the last state."""
    database = access.client().create_database_if_not_exists("shop")
    orders = database.create_container(
        "orders",
        PartitionKey("/tenant"),
        default_ttl=86400,
        unique_key_policy={"uniqueKeys": [{"paths": ["/n"]}]},
    )
    settings = orders.read()
    fill(orders, make_items(60))
    for item in make_items(60)[:10]:
        orders.upsert_item({**item, "note": "first change"})
    capture = capturer(access, store)
    capture.run_once()
    at = moment()
    then = contents(orders)
    for item in make_items(60)[5:15]:
        orders.upsert_item({**item, "note": "after T"})
    for item in make_items(60)[40:50]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    fill(orders, [{"id": "new-after-t", "tenant": "t1", "n": 1000}])
    last = contents(orders)
    tick()
    capture.run_once()
    database.delete_container("orders")
    tick()
    capture.run_once()
    return {"at": at, "then": then, "last": last, "settings": settings}


def test_a_deleted_container_comes_back_exactly_as_it_was_at_the_time(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    past = _history(own_account, backup_store)
    reports = Reports()
    work = job(RestoreRequest(database="shop", container="orders", timestamp=past["at"]), instances=2)
    assert restore(own_account, backup_store, work, reports, "a").kind in ("completed", "progress", "idle")
    assert restore(own_account, backup_store, work, reports, "b").kind == "completed"

    restored = own_account.container("shop", "orders")
    assert contents(restored) == past["then"]  # changed items at their T version, later ones absent, deleted ones back
    properties = restored.read()
    assert properties["partitionKey"]["paths"] == ["/tenant"]
    assert properties["defaultTtl"] == 86400
    assert properties["uniqueKeyPolicy"]["uniqueKeys"][0]["paths"] == ["/n"]
    status = reports.merged()
    assert status["restoredItemCount"] == status["totalCount"] == 60 and status["percent"] == 100
    assert status["restoreTimestamp"] == past["at"].isoformat().replace("+00:00", "Z")
    assert status["instanceId"] and status["transfer"]["state"] == "Succeeded"
    assert status["verification"] == {
        "mode": "Count",
        "sourceCount": 60,
        "destinationCount": 60,
        "missing": 0,
        "extra": 0,
        "differing": 0,
        "firstDifferences": [],
    }
    # The backup learns which incarnation the restore created, under its instance id.
    index = capturer(own_account, backup_store).run_once().index
    restored_rid = str(properties["_rid"])
    assert [e.instance_id for e in index.events if e.owner_resource_id == restored_rid] == [status["instanceId"]]


def test_no_timestamp_restores_the_last_incarnation_one_second_before_its_deletion(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    past = _history(own_account, backup_store)
    reports = Reports()
    work = job(RestoreRequest(database="shop", container="orders", ttl_disabled=True))
    assert restore(own_account, backup_store, work, reports).kind == "completed"
    restored = own_account.container("shop", "orders")
    assert contents(restored) == past["last"]
    assert "defaultTtl" not in restored.read()  # restoreWithTtlDisabled
    index, _ = backup_store.read_index()
    assert index is not None
    deleted = max(e.event_timestamp for e in index.events if e.operation_type.value == "Delete")
    chosen = reports.merged()["restoreTimestamp"]
    assert chosen == (deleted - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")


def test_a_database_comes_back_with_the_containers_it_had_at_the_time(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    client = own_account.client()
    database = client.create_database("crm")
    people = database.create_container("people", PartitionKey("/city"))
    notes = database.create_container("notes", PartitionKey("/person"))
    fill(people, make_items(25))
    fill(notes, [{"id": f"n{i}", "person": f"p{i % 3}", "text": "x" * i} for i in range(30)])
    capture = capturer(own_account, backup_store)
    capture.run_once()
    at = moment()
    people_then, notes_then = contents(people), contents(notes)
    database.create_container("later", PartitionKey("/id"))  # created after T: not part of the restore
    notes.delete_item("n3", partition_key="p0")
    tick()
    capture.run_once()
    client.delete_database("crm")
    tick()
    capture.run_once()

    work = job(RestoreRequest(database="crm", timestamp=at), instances=3, verify=VerifyMode.FULL)
    reports = Reports()
    assert restore(own_account, backup_store, work, reports).kind == "completed"
    verification = reports.merged()["verification"]
    assert verification["mode"] == "Full" and verification["sourceCount"] == verification["destinationCount"] == 55
    assert (verification["missing"], verification["extra"], verification["differing"]) == (0, 0, 0)
    names = sorted(c["id"] for c in client.get_database_client("crm").list_containers())
    assert names == ["notes", "people"]
    assert contents(own_account.container("crm", "people")) == people_then
    assert contents(own_account.container("crm", "notes")) == notes_then
    units = StateStore(own_account).job_units(work.job_id)
    assert len(units) == 1 + 2 * 3 + 1  # the init unit, three buckets per container, the verification


def test_the_past_of_a_live_container_comes_back_beside_it_under_another_name(
    own_account: CosmosAccess, backup_store: BackupStore
) -> None:
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    fill(orders, make_items(20))
    capture = capturer(own_account, backup_store)
    capture.run_once()
    at = moment()
    then = contents(orders)
    for item in make_items(20):
        orders.upsert_item({**item, "n": -1})  # a bad batch update: every item overwritten
    tick()
    capture.run_once()

    request = RestoreRequest(database="shop", container="orders", timestamp=at, target_container="orders-rewound")
    assert restore(own_account, backup_store, job(request)).kind == "completed"
    assert contents(own_account.container("shop", "orders-rewound")) == then
    assert all(item["n"] == -1 for item in contents(orders).values())  # the live container is untouched


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"container": "live"}, "ResourceExists"),
        ({"container": "live", "target_container": "live"}, "TargetExists"),
        ({"container": "orders", "timestamp": "early"}, "NotFoundAtTime"),
        ({"container": "orders", "timestamp": "ancient"}, "OutsideRetentionWindow"),
        ({"container": "never"}, "NotInBackup"),
        ({"database": "gone", "container": "box"}, "DatabaseNotFound"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_rule_refuses_with_its_reason(
    own_account: CosmosAccess, backup_store: BackupStore, request_fields: dict[str, Any], reason: str
) -> None:
    client = own_account.client()
    shop = client.create_database("shop")
    shop.create_container("live", PartitionKey("/id"))
    capture = capturer(own_account, backup_store)
    capture.run_once()
    early = moment()
    shop.create_container("orders", PartitionKey("/id")).upsert_item({"id": "a"})
    gone = client.create_database("gone")
    gone.create_container("box", PartitionKey("/id"))
    tick()
    capture.run_once()
    shop.delete_container("orders")
    client.delete_database("gone")
    tick()
    capture.run_once()

    fields = {"database": "shop", **request_fields}
    times = {"early": early, "ancient": early - timedelta(days=30)}
    if isinstance(fields.get("timestamp"), str):
        fields["timestamp"] = times[fields["timestamp"]]
    if fields.get("target_container"):
        fields["target_database"] = fields["database"]
    reports = Reports()
    outcome = restore(own_account, backup_store, job(RestoreRequest(**fields)), reports)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == reason, outcome.failure
    assert reports.merged()["transfer"]["failure"]["reason"] == reason
    assert "orders" not in [c["id"] for c in shop.list_containers()]  # nothing was created


INSTANCE = """
import json, os, sys, urllib3
from datetime import datetime
urllib3.disable_warnings()
from ferry.backup.restoreplan import RestoreRequest
from ferry.backup.store import BackupStore
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
from ferry.kinds.inaccountrestore.engine import RestoreJob, run_restore_instance
access = CosmosAccess(os.environ["ENDPOINT"], os.environ["KEY"], verify_tls=False)
store = BackupStore(blobs.container_client(os.environ["CONNECTION"], os.environ["CONTAINER"]), os.environ["PREFIX"])
spec = json.loads(os.environ["JOB"])
spec["request"]["timestamp"] = datetime.fromisoformat(spec["request"]["timestamp"])
job = RestoreJob(**{**spec, "request": RestoreRequest(**spec["request"])})
print("ready", flush=True)
outcome = run_restore_instance(access, store, job, os.environ["INSTANCE"], lambda part, force=False: None,
                               lambda: False, lease_seconds=1.0, page_size=20, concurrency=2)
print(outcome.kind, flush=True)
"""


def test_a_killed_restore_instance_is_resumed_from_its_checkpoint(
    own_account: CosmosAccess, backup_store: BackupStore, azurite: Any
) -> None:
    orders = own_account.client().create_database("shop").create_container("orders", PartitionKey("/tenant"))
    fill(orders, make_items(1500), threads=32)
    capture = capturer(own_account, backup_store)
    capture.run_once()
    at = moment()
    then = contents(orders)
    own_account.client().get_database_client("shop").delete_container("orders")
    tick()
    capture.run_once()

    work = job(RestoreRequest(database="shop", container="orders", timestamp=at))
    spec = asdict(work)
    spec["request"]["timestamp"] = at.isoformat()
    account = azurite.accounts["ferrydst"]
    env = {
        **os.environ,
        "ENDPOINT": own_account.endpoint,
        "KEY": own_account.key,
        "CONNECTION": account.connection_string,
        "CONTAINER": backup_store.container.container_name,
        "PREFIX": backup_store.prefix,
        "JOB": json.dumps(spec, default=str),
        "INSTANCE": "doomed",
    }
    proc = subprocess.Popen([sys.executable, "-c", INSTANCE], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        written = 0
        while time.monotonic() < deadline and written == 0:
            units = StateStore(own_account).job_units(work.job_id) if _job_exists(own_account, work) else []
            written = sum(int(u.get("processedCount") or 0) for u in units)
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no chance to checkpoint or release its lease
        proc.wait(timeout=10)
    assert 0 < written < 1500, "the doomed instance should have been killed part-way"

    reports = Reports()
    assert restore(own_account, backup_store, work, reports, "survivor").kind == "completed"
    assert contents(own_account.container("shop", "orders")) == then
    assert reports.merged()["restoredItemCount"] == 1500


def _job_exists(access: CosmosAccess, work: RestoreJob) -> bool:
    try:
        return StateStore(access).read_job(work.job_id) is not None
    except Exception:
        return False


def test_a_restore_is_exact_under_either_deletion_path(
    either_account: CosmosAccess, backup_store: BackupStore, request: pytest.FixtureRequest
) -> None:
    """From the deletes feed, a restore is exact to any second; where deletions are swept, exact to the sweeps'
    times, and its status says how closely deletions are known."""
    from ferry.kinds.databaseaccount.capture import CaptureSettings

    swept = "deletion-sweep" in request.node.name
    settings = CaptureSettings(
        retention=timedelta(hours=1), interval=timedelta(seconds=2), deletion_sweep=timedelta(seconds=1)
    )
    database = either_account.client().create_database("shop")
    orders = database.create_container("orders", PartitionKey("/tenant"))
    fill(orders, make_items(30))
    capture = capturer(either_account, backup_store, settings)
    capture.run_once()
    for item in make_items(30)[:4]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    tick()
    swept_at = capture.run_once().read_time - timedelta(seconds=1)
    at_sweep = contents(orders)
    for item in make_items(30)[10:13]:
        orders.upsert_item({**item, "n": -3})
    for item in make_items(30)[20:22]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    between = moment()
    at_between = contents(orders)
    for item in make_items(30)[25:28]:
        orders.delete_item(item["id"], partition_key=item["tenant"])
    orders.upsert_item({**make_items(30)[10], "n": -4})
    tick()
    capture.run_once()
    database.delete_container("orders")
    tick()
    capture.run_once()

    when, expected = (swept_at, at_sweep) if swept else (between, at_between)
    reports = Reports()
    outcome = restore(either_account, backup_store, job(RestoreRequest("shop", "orders", timestamp=when)), reports)
    assert outcome.kind == "completed", outcome
    fresh = CosmosAccess(either_account.endpoint, either_account.key, verify_tls=False)
    assert contents(fresh.container("shop", "orders")) == expected
    note = reports.merged().get("note")
    assert ("deletionSweepInterval" in note) if swept else note is None
