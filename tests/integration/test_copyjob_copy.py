"""The copy engine against cosmosdb-server: repartitioning copies, missing containers, conflicts."""

from __future__ import annotations

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique

from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.kinds.containercopyjob.engine import run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer import state as transferstate
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]

# The instances' part of a job's status: progress and the job's record, never the phase or failure.
STATUS_KEYS = ContainerCopyProgress.wire_keys()


def test_copy_into_a_different_partition_key(access: CosmosAccess) -> None:
    db = unique("db")
    source = create_container(access, db, "orders", "/tenant")
    items = make_items(150)
    items.append({"id": "no-city", "tenant": "t1", "n": -1})  # lacks the destination's key: still copied
    fill(source, items)
    destination = create_container(access, db, "orders-by-city", "/city")
    reports = Reports()
    job = job_spec(db, "orders", "orders-by-city")

    outcome = run_instance(access, job, "i-1", reports, never, page_size=40)

    assert outcome.kind == "completed", outcome
    assert contents(destination) == contents(source)
    assert contents(destination)["item-0000"]["ttl"] == 3600  # TTL copied as is
    status = reports.merged()
    assert set().union(*reports.patches) <= STATUS_KEYS
    assert status["totalCount"] == status["processedCount"] == len(items)
    assert status["percent"] == 100
    assert status["transfer"]["state"] == "Succeeded"
    assert status["transfer"]["completionTime"] and status["transfer"]["startTime"]
    assert "failure" not in status["transfer"]
    doc = transferstate.get_job(access, job.job_id)
    assert doc is not None and doc["state"] == "Succeeded" and doc["processedCount"] == len(items)

    # Running the finished job again changes nothing and reports it completed.
    assert run_instance(access, job, "i-2", Reports(), never).kind == "completed"


def test_missing_destination_fails_with_destination_not_found(access: CosmosAccess) -> None:
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(3))
    reports = Reports()
    outcome = run_instance(access, job_spec(db, "src", "absent"), "i-1", reports, never)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "DestinationNotFound"
    assert "create the destination container" in outcome.failure.message
    assert reports.merged()["transfer"]["failure"]["reason"] == "DestinationNotFound"


def test_missing_source_fails_with_source_not_found(access: CosmosAccess) -> None:
    db = unique("db")
    create_container(access, db, "dst", "/tenant")
    outcome = run_instance(access, job_spec(db, "absent", "dst"), "i-1", Reports(), never)
    assert outcome.failure is not None and outcome.failure.reason == "SourceNotFound"


def test_colliding_ids_fail_with_item_conflict(access: CosmosAccess) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    # Same id in two source partitions; in the destination both land in partition "same".
    fill(
        source, [*make_items(20), {"id": "dup", "tenant": "a", "k": "same"}, {"id": "dup", "tenant": "b", "k": "same"}]
    )
    create_container(access, db, "dst", "/k")
    reports = Reports()
    outcome = run_instance(access, job_spec(db, "src", "dst"), "i-1", reports, never)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "ItemConflict"
    assert "dup" in outcome.failure.message
    assert reports.merged()["transfer"]["failure"]["reason"] == "ItemConflict"


def test_existing_different_item_is_a_conflict_identical_one_a_replay(access: CosmosAccess) -> None:
    db = unique("db")
    items = make_items(10)
    fill(create_container(access, db, "src", "/tenant"), items)
    destination = create_container(access, db, "dst", "/tenant")
    destination.upsert_item(items[3])  # identical: an earlier run's write
    destination.upsert_item({**items[5], "n": "changed"})
    outcome = run_instance(access, job_spec(db, "src", "dst"), "i-1", Reports(), never)
    assert outcome.failure is not None and outcome.failure.reason == "ItemConflict"
    assert items[5]["id"] in outcome.failure.message and items[3]["id"] not in outcome.failure.message


def test_unique_key_violation_fails_with_item_conflict(access: CosmosAccess) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    # The service treats a missing unique key value as null (one per partition): every item has one.
    items = [{**item, "email": f"{item['id']}@x"} for item in make_items(10)]
    fill(source, [*items, {"id": "u1", "tenant": "x", "email": "a@x"}, {"id": "u2", "tenant": "x", "email": "a@x"}])
    create_container(access, db, "dst", "/tenant", unique_keys=["/email"])
    outcome = run_instance(access, job_spec(db, "src", "dst"), "i-1", Reports(), never)
    assert outcome.failure is not None and outcome.failure.reason == "ItemConflict", outcome
    assert ("u1" in outcome.failure.message) or ("u2" in outcome.failure.message)
    assert "/email" in outcome.failure.message
