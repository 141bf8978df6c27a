"""MongoDB API accounts end to end, on the stack's FerretDB: a collection copied by kubectl apply while its
instances are killed, a missing destination collection failing with DestinationNotFound, and what such an
account refuses at apply."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from bson import ObjectId
from pymongo import ASCENDING

from ferry.storage.mongo import MongoAccess
from ferry_dev.emulators import FERRETDB_USER
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture
def mongo(stack: DevStack) -> Iterator[MongoAccess]:
    assert stack.mongo is not None
    access = MongoAccess(stack.mongo.endpoint.endpoint, stack.mongo.endpoint.key, FERRETDB_USER)
    yield access
    access.close()


def _account(kubectl: Kubectl, stack: DevStack, name: str, **spec: Any) -> str:
    assert stack.mongo is not None
    kubectl("create", "secret", "generic", f"{name}-key", f"--from-literal=password={stack.mongo.endpoint.key}")
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": name},
        "spec": {
            "api": "MongoDB",
            "endpoint": stack.mongo.endpoint.endpoint,
            "credentials": {"username": FERRETDB_USER, "secretRef": {"name": f"{name}-key", "key": "password"}},
            "copyInstances": {"count": 2, "resources": {"cpu": "300m", "memory": "256Mi"}},
            "regionPollInterval": "2s",
            **spec,
        },
    }
    return yaml.safe_dump(body)


def _job(name: str, account: str, db: str, source: str, dest: str, **spec: Any) -> str:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": {"name": name},
        "spec": {
            "accountRef": {"name": account},
            "source": {"database": db, "container": source},
            "destination": {"database": db, "container": dest},
            **spec,
        },
    }
    return yaml.safe_dump(body)


def _fill(mongo: MongoAccess, db: str, name: str, n: int) -> None:
    docs = [{"_id": ObjectId() if i % 2 else i, "tenant": f"t{i % 5}", "n": i} for i in range(n)]
    mongo.collection(db, name).insert_many(docs)


def _all(mongo: MongoAccess, db: str, name: str) -> list[dict[str, Any]]:
    return list(mongo.collection(db, name).find({}).sort("_id", ASCENDING))


def test_a_collection_is_copied_while_its_instances_are_killed(
    stack: DevStack, kubectl: Kubectl, mongo: MongoAccess
) -> None:
    db = f"shop{uuid.uuid4().hex[:6]}"
    _fill(mongo, db, "orders", 300)
    mongo.collection(db, "orders-by-tenant").create_index([("tenant", ASCENDING)], name="tenant")
    kubectl.apply(_account(kubectl, stack, "catalog"))
    account = kubectl.wait_for(
        "databaseaccount", "catalog", lambda o: bool((o.get("status") or {}).get("writeRegion")), timeout=90
    )
    assert stack.mongo is not None and account["status"]["writeRegion"] == stack.mongo.host
    kubectl.apply(_job("orders", "catalog", db, "orders", "orders-by-tenant", maxItemsPerSecond=40, verify="Full"))

    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and kills < 2:
        time.sleep(2.0)
        status = kubectl.status("containercopyjob", "orders")
        if status.get("phase") == "Succeeded":
            break
        instances = kubectl.status("databaseaccount", "catalog").get("instances") or []
        started = (status.get("processedCount") or 0) > 0 and instances
        if started and stack.kill_pod(kubectl.namespace, instances[kills % len(instances)], signal.SIGKILL):
            kills += 1
    assert kills >= 1, "the job finished before an instance could be killed"

    done = kubectl.wait_phase("containercopyjob", "orders", "Succeeded", timeout=240)["status"]
    assert _all(mongo, db, "orders-by-tenant") == _all(mongo, db, "orders")
    assert done["processedCount"] == done["totalCount"] == 300
    assert done["verification"]["differing"] == done["verification"]["missing"] == 0
    assert [(t["destination"], t["phase"]) for t in done["tasks"]] == [(f"{db}/orders-by-tenant", "Succeeded")]
    # The job's record is in the MongoDB account's own __datatransferstate.
    record = mongo.collection("__datatransferstate", "jobs").find_one({"name": f"{kubectl.namespace}/orders"})
    assert record is not None and record["state"] == "Succeeded"
    listed = kubectl.ferry("jobs", "list", "--account", "catalog")
    assert f"{kubectl.namespace}/orders" in listed and f"{db}/orders-by-tenant" in listed


def test_a_missing_destination_collection_fails_with_destination_not_found(
    stack: DevStack, kubectl: Kubectl, mongo: MongoAccess
) -> None:
    db = f"shop{uuid.uuid4().hex[:6]}"
    _fill(mongo, db, "orders", 10)
    kubectl.apply(_account(kubectl, stack, "catalog"))
    kubectl.apply(_job("nowhere", "catalog", db, "orders", "absent"))
    failed = kubectl.wait_phase("containercopyjob", "nowhere", "Failed", timeout=120)["status"]
    assert failed["failure"]["reason"] == "DestinationNotFound"
    assert f"{db}/absent does not exist: create it beforehand" in failed["failure"]["message"]
    online = _job("online", "catalog", db, "orders", "copy", mode="Online")
    kubectl.apply(online)
    refused = kubectl.wait_phase("containercopyjob", "online", "Failed", timeout=60)["status"]["failure"]
    assert refused["reason"] == "NotSupportedForApi"


def test_what_a_mongodb_account_cannot_have_is_refused_at_apply(stack: DevStack, kubectl: Kubectl) -> None:
    def refused(manifest: str) -> str:
        done = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
        assert done.returncode != 0, manifest
        return done.stderr

    body = yaml.safe_load(_account(kubectl, stack, "strict"))
    https = yaml.safe_dump({**body, "spec": {**body["spec"], "endpoint": "https://strict.documents.azure.com/"}})
    assert "spec.endpoint" in refused(https) and "mongodb://" in refused(https)
    backup = {**body["spec"], "backup": {"mode": "Continuous", "tier": "Continuous7Days"}}
    assert "spec.backup.mode" in refused(yaml.safe_dump({**body, "spec": backup}))
    with_user = {**body["spec"], "endpoint": "mongodb://ferry:secret@localhost:27017/"}
    assert "must not carry credentials" in refused(yaml.safe_dump({**body, "spec": with_user}))
