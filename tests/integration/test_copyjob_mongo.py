"""The MongoDB copy engine against FerretDB (a real MongoDB wire-protocol server): collections copied with their
BSON types, into a destination with its own indexes; missing and conflicting destinations; leases and checkpoints
in the account's own __datatransferstate; an instance killed mid-copy loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Binary, Int64, ObjectId
from mongo_fixtures import unique_db
from pymongo import ASCENDING

from ferry.api.transfer import VerifyMode
from ferry.kinds.containercopyjob.engine import CopyTask, JobSpec
from ferry.kinds.containercopyjob.mongo_engine import run_mongo_instance
from ferry.storage.mongo import MongoAccess
from ferry.transfer.state import get_job, list_jobs
from ferry_dev.emulators import FerretDB
from support.reports import Reports

pytest_plugins = ["mongo_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def never() -> bool:
    return False


def _job(db: str, source: str, dest: str, instances: int = 1, **fields: Any) -> JobSpec:
    return JobSpec(
        job_id=str(uuid.uuid4()),
        name=f"default/{source}-copy",
        tasks=[CopyTask(db, source, db, dest)],
        max_items_per_second=fields.pop("rate", None),
        instances=instances,
        write_region="localhost",
        **fields,
    )


def _documents(n: int) -> list[dict[str, Any]]:
    """Documents whose ids mix BSON types, with values of types JSON does not have."""
    docs: list[dict[str, Any]] = []
    for i in range(n):
        ident: Any = ObjectId() if i % 3 == 0 else i if i % 3 == 1 else f"doc-{i:05d}"
        docs.append(
            {
                "_id": ident,
                "tenant": f"t{i % 7}",
                "region": ["north", "south", "east"][i % 3],
                "at": datetime(2026, 1, 1, tzinfo=UTC).replace(microsecond=(i * 1000) % 1_000_000),
                "cents": Int64(i * 1_000_000_007),  # FerretDB v1 has no Decimal128
                "blob": Binary(bytes([i % 256]) * 4),
                "lines": [{"sku": f"sku-{i % 11}", "qty": i % 4}],
            }
        )
    return docs


def _all(mongo: MongoAccess, db: str, name: str) -> list[dict[str, Any]]:
    return list(mongo.collection(db, name).find({}).sort("_id", ASCENDING))


def test_a_collection_is_copied_with_its_types_into_a_destination_with_its_own_indexes(mongo: MongoAccess) -> None:
    db = unique_db()
    mongo.collection(db, "orders").insert_many(_documents(150))
    dest = mongo.collection(db, "orders-by-region")
    dest.create_index([("region", ASCENDING), ("tenant", ASCENDING)], name="by_region")  # created beforehand
    reports = Reports()
    job = _job(db, "orders", "orders-by-region", verify=VerifyMode.FULL)

    outcome = run_mongo_instance(mongo, job, "i-1", reports, never, page_size=40)

    assert outcome.kind == "completed", outcome
    assert _all(mongo, db, "orders-by-region") == _all(mongo, db, "orders")
    copied = dest.find_one({"_id": 1})
    assert copied is not None and isinstance(copied["cents"], Int64) and copied["blob"] == b"\x01" * 4
    status = reports.merged()
    assert status["totalCount"] == status["processedCount"] == 150
    assert status["transfer"]["state"] == "Succeeded"
    verification = status["verification"]
    assert verification["sourceCount"] == verification["destinationCount"] == 150
    assert (verification["missing"], verification["extra"], verification["differing"]) == (0, 0, 0)
    # The job's record and units are in the account's own __datatransferstate, as for the API for NoSQL.
    record = get_job(mongo, job.job_id)
    assert record is not None and record["state"] == "Succeeded" and record["tasks"][0]["totalCount"] == 150
    assert any(j["id"] == job.job_id for j in list_jobs(mongo))
    # Running the finished job again changes nothing.
    assert run_mongo_instance(mongo, job, "i-2", Reports(), never).kind == "completed"


def test_a_missing_destination_collection_fails_with_destination_not_found(mongo: MongoAccess) -> None:
    db = unique_db()
    mongo.collection(db, "src").insert_many(_documents(5))
    reports = Reports()
    outcome = run_mongo_instance(mongo, _job(db, "src", "absent"), "i-1", reports, never)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "DestinationNotFound"
    assert f"{db}/absent does not exist: create it beforehand" in outcome.failure.message
    assert reports.merged()["transfer"]["failure"]["reason"] == "DestinationNotFound"
    absent = run_mongo_instance(mongo, _job(db, "gone", "src"), "i-1", Reports(), never)
    assert absent.failure is not None and absent.failure.reason == "SourceNotFound"


def test_other_documents_under_the_same_ids_fail_with_item_conflict(mongo: MongoAccess) -> None:
    db = unique_db()
    mongo.collection(db, "src").insert_many([{"_id": i, "v": i} for i in range(30)])
    mongo.collection(db, "dst").insert_many([{"_id": 3, "v": "other"}, {"_id": 4, "v": 4}])  # 4 is the same
    outcome = run_mongo_instance(mongo, _job(db, "src", "dst"), "i-1", Reports(), never, page_size=10)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "ItemConflict"
    assert "_id 3 conflict" in outcome.failure.message.replace('{"$numberInt": "3"}', "3")


def test_a_suspended_copy_stops_at_a_checkpoint_and_resumes_from_it(mongo: MongoAccess) -> None:
    db = unique_db()
    mongo.collection(db, "src").insert_many(_documents(120))
    mongo.collection(db, "dst").create_index([("tenant", ASCENDING)], name="tenant")
    job = _job(db, "src", "dst")
    pages: list[int] = []
    reports = Reports()

    def after_two_pages() -> bool:
        pages.append(1)
        return len(pages) > 3

    stopped = run_mongo_instance(mongo, job, "i-1", reports, after_two_pages, page_size=20)
    assert stopped.kind == "stopped"
    copied = mongo.collection(db, "dst").count_documents({})
    assert 0 < copied < 120
    assert run_mongo_instance(mongo, job, "i-1", reports, never, page_size=20).kind == "completed"
    assert _all(mongo, db, "dst") == _all(mongo, db, "src")
    assert reports.merged()["processedCount"] == 120


# One instance as its own process, writing at a bounded rate; killed before it finishes.
INSTANCE = """
import json, os
from ferry.kinds.containercopyjob.engine import JobSpec
from ferry.kinds.containercopyjob.mongo_engine import run_mongo_instance
from ferry.storage.mongo import MongoAccess
access = MongoAccess(os.environ["ENDPOINT"], os.environ["KEY"], "ferry")
job = JobSpec(**json.loads(os.environ["JOB"]))
print("ready", flush=True)
run_mongo_instance(access, job, os.environ["INSTANCE"], lambda part, force=False: None, lambda: False,
                   lease_seconds=float(os.environ["LEASE"]), page_size=10)
"""


def test_an_instance_killed_mid_copy_loses_nothing(mongo: MongoAccess, ferretdb: FerretDB) -> None:
    db = unique_db()
    mongo.collection(db, "src").insert_many(_documents(300))
    mongo.collection(db, "dst").create_index([("region", ASCENDING)], name="region")
    job = replace(_job(db, "src", "dst", instances=2, verify=VerifyMode.FULL), max_items_per_second=100)
    env = {
        **os.environ,
        "ENDPOINT": ferretdb.endpoint.endpoint,
        "KEY": ferretdb.endpoint.key,
        "JOB": json.dumps(asdict(job)),
        "INSTANCE": "doomed",
        "LEASE": "3",
    }
    doomed = subprocess.Popen([sys.executable, "-c", INSTANCE], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while mongo.collection(db, "dst").count_documents({}) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert doomed.poll() is None, "the instance ended before it was killed"
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    written = mongo.collection(db, "dst").count_documents({})
    assert 40 <= written < 300

    survivor = replace(job, max_items_per_second=None)
    reports = Reports()
    deadline = time.monotonic() + 60
    outcome = run_mongo_instance(mongo, survivor, "survivor", reports, never, lease_seconds=3, page_size=25)
    while outcome.kind == "idle" and time.monotonic() < deadline:  # the dead instance's lease has to expire
        time.sleep(outcome.retry_after or 0.5)
        outcome = run_mongo_instance(mongo, survivor, "survivor", reports, never, lease_seconds=3, page_size=25)

    assert outcome.kind == "completed", outcome
    assert _all(mongo, db, "dst") == _all(mongo, db, "src")
    status = reports.merged()
    assert status["processedCount"] == status["totalCount"] == 300
    assert status["verification"]["differing"] == status["verification"]["missing"] == 0
