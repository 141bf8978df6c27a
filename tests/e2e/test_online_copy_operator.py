"""Online copies and verification end to end: kubectl → kube-apiserver → operator → copy instances (containers
on the kubelet) → the change feed stand-in → cosmosdb-server, with a writer on the source while the job runs."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from typing import Any

import pytest
import yaml
from azure.cosmos import ContainerProxy, PartitionKey
from restore_fixtures import OwnCosmos, condition, contents

from ferry_dev.cosmosproxy import CosmosProxy
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


def _account(kubectl: Kubectl, cosmos: OwnCosmos, endpoint: str | None = None) -> None:
    kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={cosmos.server.endpoint.key}")
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": "acct"},
        "spec": {
            "endpoint": endpoint or cosmos.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "cosmos-key", "key": "primaryKey"}},
            "copyInstances": {"count": 2, "resources": {"cpu": "300m", "memory": "256Mi"}},
            "regionPollInterval": "2s",
        },
    }
    kubectl.apply(yaml.safe_dump(body))


def _job(name: str, database: str, source: str, destination: str, **spec: Any) -> str:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": {"name": name},
        "spec": {
            "accountRef": {"name": "acct"},
            "source": {"database": database, "container": source},
            "destination": {"database": database, "container": destination},
            **spec,
        },
    }
    return yaml.safe_dump(body)


def _item(i: int, version: int = 1) -> dict[str, Any]:
    return {"id": f"item-{i:05d}", "tenant": f"t{i % 5}", "n": i, "version": version}


class Writer(threading.Thread):
    """Creates, replaces and deletes items of the source at about 1,000 writes a minute until stopped."""

    def __init__(self, container: ContainerProxy, first_new: int) -> None:
        super().__init__(daemon=True)
        self.container = container
        self.next = first_new
        self.live = list(range(first_new))
        self.writes = 0
        self.halt = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        while not self.halt.wait(0.06):
            roll = self.rng.random()
            if roll < 0.4:
                self.container.upsert_item(_item(self.next))
                self.live.append(self.next)
                self.next += 1
            elif roll < 0.8:
                self.container.upsert_item(_item(self.rng.choice(self.live), version=self.writes))
            else:
                gone = self.live.pop(self.rng.randrange(len(self.live)))
                self.container.delete_item(f"item-{gone:05d}", partition_key=f"t{gone % 5}")
            self.writes += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def test_an_online_copy_follows_a_writer_through_a_killed_instance_to_a_verified_cutover(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos
) -> None:
    database = cosmos.database("live")
    source = database.create_container("src", PartitionKey("/tenant"))
    for i in range(300):
        source.upsert_item(_item(i))
    database.create_container("dst", PartitionKey("/tenant"))
    _account(kubectl, cosmos)
    writer = Writer(source, 300)
    writer.start()
    try:
        kubectl.apply(_job("online", "live", "src", "dst", mode="Online", verify="Full"))
        streaming = kubectl.wait_for(
            "containercopyjob", "online", lambda o: condition(o, "CaughtUp").get("status") is not None, timeout=120
        )
        assert streaming["status"]["phase"] == "Running"
        instances = kubectl.status("databaseaccount", "acct").get("instances") or []
        assert instances and stack.kill_pod(kubectl.namespace, instances[0], signal.SIGKILL)
        time.sleep(8)  # the writer goes on while the killed instance comes back and its units are taken over
        lag = kubectl.status("containercopyjob", "online")
        assert lag["pendingChanges"] >= 0 and lag["secondsBehind"] < 30
    finally:
        writer.stop()
    assert writer.writes > 50
    kubectl("patch", "containercopyjob", "online", "--type=merge", "-p", '{"spec": {"cutover": true}}')
    done = kubectl.wait_phase("containercopyjob", "online", "Succeeded", timeout=120)
    destination = cosmos.client.get_database_client("live").get_container_client("dst")
    assert contents(destination) == contents(source)
    assert condition(done, "Complete")["reason"] == "CutOver"
    verified = condition(done, "Verified")
    assert verified["status"] == "True" and f"the {len(contents(source))} expected items" in verified["message"]
    assert done["status"]["verification"]["mode"] == "Full"


def test_a_destination_changed_behind_the_copy_fails_its_verification_naming_the_item(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos, request: pytest.FixtureRequest
) -> None:
    database = cosmos.database("checked")
    source = database.create_container("src", PartitionKey("/tenant"))
    for i in range(400):
        source.upsert_item(_item(i))
    destination = database.create_container("dst", PartitionKey("/tenant"))
    proxy = CosmosProxy(cosmos.endpoint).start()  # slows the copy's writes down, so the change lands mid-copy
    request.addfinalizer(proxy.stop)
    _account(kubectl, cosmos, endpoint=proxy.endpoint)
    proxy.throttle_next(600, retry_after_ms=100)
    kubectl.apply(_job("checked", "checked", "src", "dst", verify="Full"))
    kubectl.wait_for(
        "containercopyjob", "checked", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 0, timeout=120
    )
    changed = next(iter(destination.query_items("SELECT * FROM c", enable_cross_partition_query=True)))
    assert kubectl.status("containercopyjob", "checked")["processedCount"] < 400  # not verified yet
    destination.upsert_item({**changed, "n": -1})

    failed = kubectl.wait_phase("containercopyjob", "checked", "Failed", timeout=180)
    failure = failed["status"]["failure"]
    assert failure["reason"] == "VerificationFailed" and changed["id"] in failure["message"]
    verified = condition(failed, "Verified")
    assert verified["status"] == "False" and verified["reason"] == "Differs"
    assert failed["status"]["verification"]["firstDifferences"] == [changed["id"]]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"verify": "Ful"}, 'spec.verify: Unsupported value: "Ful"'),
        ({"mode": "Streaming"}, 'spec.mode: Unsupported value: "Streaming"'),
    ],
    ids=["misspelt-verify", "unknown-mode"],
)
def test_copy_job_options_are_refused_at_apply_naming_the_field(
    kubectl: Kubectl, spec: dict[str, Any], words: str
) -> None:
    done = kubectl.run("apply", "-f", "-", stdin=_job(f"j{uuid.uuid4().hex[:6]}", "d", "a", "b", **spec), check=False)
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert kubectl.run("get", "containercopyjobs", "-o", "name", check=False).stdout == ""
