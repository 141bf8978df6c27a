"""DatabaseAccount and ContainerCopyJob end to end: kubectl → kube-apiserver → operator → copy instances
(containers on the kubelet) → cosmosdb-server."""

from __future__ import annotations

import itertools
import random
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from azure.cosmos import ContainerProxy
from copyjobs import all_items, apply_account, job_manifest, new_container

from ferry_dev.cosmosproxy import CosmosProxy
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl, with_reasons

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


def _connected(account: dict[str, Any]) -> dict[str, Any] | None:
    """The account's Ready condition once it is True and the write region is recorded."""
    status = account.get("status") or {}
    ready = {c["type"]: c for c in status.get("conditions") or []}.get("Ready")
    return ready if status.get("writeRegion") and ready and ready["status"] == "True" else None


def test_account_reports_regions_and_a_repartitioning_copy_succeeds(stack: DevStack, kubectl: Kubectl) -> None:
    source = new_container(stack, "/tenant", items=120)
    dest = new_container(stack, "/region")
    apply_account(kubectl, stack)
    # The monitor records the regions and the operator then judges Ready: wait for both.
    account = kubectl.wait_for("databaseaccount", "acct", lambda o: _connected(o) is not None, timeout=60)
    ready = _connected(account)
    assert ready is not None and ready["reason"] == "Connected"
    assert account["status"]["readRegions"]
    listed = kubectl("get", "databaseaccounts")
    assert re.search(r"acct\s+True\s+" + re.escape(account["status"]["writeRegion"]), listed), listed

    kubectl.apply(job_manifest("repartition", source, dest))
    status = kubectl.wait_phase("containercopyjob", "repartition", "Succeeded", timeout=120)["status"]
    assert all_items(dest) == all_items(source)
    assert status["totalCount"] == status["processedCount"] == 120
    assert status["percent"] == 100
    assert status["writeRegion"] == account["status"]["writeRegion"]
    assert status["startTime"] and status["completionTime"]
    kubectl.wait_condition("containercopyjob", "repartition", "Ready")
    assert kubectl.kstatus("containercopyjob", "repartition") == kubectl.kstatus("databaseaccount", "acct") == "Current"
    table = kubectl("get", "containercopyjobs")
    assert re.search(r"repartition\s+acct\s+Succeeded\s+120\s+120\s+100", table), table
    kubectl.events("repartition", with_reasons("Copying", "Copied"))

    jobs = kubectl.ferry("jobs", "list", "--account", "acct")
    assert f"{kubectl.namespace}/repartition" in jobs and "Succeeded" in jobs
    shown = yaml.safe_load(kubectl.ferry("jobs", "show", f"{kubectl.namespace}/repartition", "--account", "acct"))
    assert shown["state"] == "Succeeded" and shown["startTime"] and shown["completionTime"]
    assert shown["processedCount"] == shown["totalCount"] == 120


def test_missing_destination_fails_with_a_clear_reason(stack: DevStack, kubectl: Kubectl) -> None:
    source = new_container(stack, "/tenant", items=3)
    apply_account(kubectl, stack)
    doc = yaml.safe_load(job_manifest("nodest", source, source))
    doc["spec"]["destination"]["container"] = "does-not-exist"
    kubectl.apply(yaml.safe_dump(doc))
    status = kubectl.wait_phase("containercopyjob", "nodest", "Failed", timeout=90)["status"]
    assert status["failure"]["reason"] == "DestinationNotFound"
    assert kubectl.kstatus("containercopyjob", "nodest") == "Failed"
    assert "create" in status["failure"]["message"].lower()


def test_instances_no_node_has_room_for_say_so_and_start_once_resized(stack: DevStack, kubectl: Kubectl) -> None:
    """The node has two CPUs: instances asking for 64 wait unscheduled, the account says why in the scheduler's
    words, and the job waits for them; lowering copyInstances.resources replaces them and the job runs."""
    source = new_container(stack, "/tenant", items=20)
    dest = new_container(stack, "/tenant")
    apply_account(kubectl, stack, copyInstances={"count": 1, "resources": {"cpu": "64", "memory": "256Mi"}})
    kubectl.apply(job_manifest("waits", source, dest))

    def unschedulable(account: dict[str, Any]) -> bool:
        found = {c["type"]: c for c in (account.get("status") or {}).get("conditions") or []}.get("InstancesReady")
        return found is not None and found["status"] == "False" and found["reason"] == "Unschedulable"

    account = kubectl.wait_for("databaseaccount", "acct", unschedulable, timeout=60)
    ready = {c["type"]: c for c in account["status"]["conditions"]}["InstancesReady"]
    assert "acct-copy-0" in ready["message"] and "Insufficient cpu" in ready["message"], ready
    kubectl.events(
        "acct", lambda events: any("Insufficient cpu" in e["message"] for e in events), "reason=Unschedulable"
    )
    job = yaml.safe_load(kubectl("get", "containercopyjob", "waits", "-o", "yaml"))
    assert job["status"].get("phase") in ("Queued", "Pending"), job["status"]

    resized = {"spec": {"copyInstances": {"count": 1, "resources": {"cpu": "300m", "memory": "256Mi"}}}}
    kubectl("patch", "databaseaccount", "acct", "--type", "merge", "-p", yaml.safe_dump(resized))
    kubectl.wait_phase("containercopyjob", "waits", "Succeeded", timeout=120)
    assert all_items(dest) == all_items(source)


def test_jobs_of_one_account_run_one_at_a_time_in_creation_order(stack: DevStack, kubectl: Kubectl) -> None:
    apply_account(kubectl, stack)
    pairs = [(new_container(stack, "/tenant", items=40), new_container(stack, "/id")) for _ in range(3)]
    for index, (source, dest) in enumerate(pairs):
        kubectl.apply(job_manifest(f"job-{index}", source, dest, maxItemsPerSecond=20))
        time.sleep(1.1)  # creationTimestamp has a one-second resolution
    second = kubectl.wait_for(
        "containercopyjob", "job-2", lambda o: (o.get("status") or {}).get("queuePosition") == 2, timeout=60
    )
    assert second["status"]["phase"] == "Queued"
    account = kubectl.status("databaseaccount", "acct")
    assert account["activeCopyJob"] == "job-0"
    assert account["queuedCopyJobs"] == ["job-1", "job-2"]
    finished = [kubectl.wait_phase("containercopyjob", f"job-{i}", "Succeeded", timeout=180) for i in range(3)]
    for earlier, later in itertools.pairwise(finished):
        assert later["status"]["startTime"] >= earlier["status"]["completionTime"]
    for source, dest in pairs:
        assert all_items(dest) == all_items(source)


def test_a_queue_applied_at_once_runs_in_the_order_written(stack: DevStack, kubectl: Kubectl) -> None:
    """One `kubectl apply` creates the jobs within a second: they still run in the order of the file."""
    apply_account(kubectl, stack)
    pairs = [(new_container(stack, "/tenant", items=15), new_container(stack, "/id")) for _ in range(3)]
    names = ["zulu", "alpha", "mike"]  # not in name order
    kubectl.apply("---\n".join(job_manifest(n, s, d) for n, (s, d) in zip(names, pairs, strict=True)))
    finished = [kubectl.wait_phase("containercopyjob", n, "Succeeded", timeout=180)["status"] for n in names]
    for earlier, later in itertools.pairwise(finished):
        assert later["startTime"] >= earlier["completionTime"]
    created = {kubectl.get("containercopyjob", n)["metadata"]["creationTimestamp"] for n in names}
    assert len(created) <= 2  # created within (about) one second: the second alone could not order them
    for source, dest in pairs:
        assert all_items(dest) == all_items(source)


def test_an_account_whose_secret_is_missing_says_so_and_can_be_deleted(stack: DevStack, kubectl: Kubectl) -> None:
    assert stack.cosmos is not None
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": "keyless"},
        "spec": {
            "endpoint": stack.cosmos.endpoint.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "not-created", "key": "primaryKey"}},
        },
    }
    kubectl.apply(yaml.safe_dump(body))
    ready = _ready(kubectl, "keyless", "False")
    deadline = time.monotonic() + 30
    while ready["reason"] != "SecretNotFound" and time.monotonic() < deadline:
        time.sleep(0.5)
        ready = {c["type"]: c for c in kubectl.status("databaseaccount", "keyless")["conditions"]}["Ready"]
    assert ready["reason"] == "SecretNotFound" and 'secret "not-created" not found' in ready["message"]
    kubectl.events("keyless", with_reasons("SecretNotFound"))
    kubectl("delete", "databaseaccount", "keyless", "--timeout=30s")
    kubectl.wait_gone("databaseaccount", "keyless", timeout=30)


def test_suspend_pauses_and_resume_completes(stack: DevStack, kubectl: Kubectl) -> None:
    source, dest = new_container(stack, "/tenant", items=150), new_container(stack, "/id")
    apply_account(kubectl, stack)
    # Slow enough that both instances (the source has several feed ranges) are still copying when suspended.
    kubectl.apply(job_manifest("pausable", source, dest, maxItemsPerSecond=12))
    running = kubectl.wait_for(
        "containercopyjob", "pausable", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 30, 90
    )["status"]
    assert 0 < running["itemsPerSecond"] <= 12 * 1.5
    assert running["estimatedSecondsRemaining"] > 0
    kubectl("patch", "containercopyjob", "pausable", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    kubectl.wait_phase("containercopyjob", "pausable", "Paused")
    copied = len(all_items(dest))
    time.sleep(3)
    assert len(all_items(dest)) == copied < 150  # Paused means no instance writes any more
    paused_at, copied = _settled(kubectl, "pausable", dest)
    assert paused_at <= copied
    kubectl("patch", "containercopyjob", "pausable", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    kubectl.wait_phase("containercopyjob", "pausable", "Succeeded", timeout=120)
    assert all_items(dest) == all_items(source)


def _settled(kubectl: Kubectl, name: str, dest: ContainerProxy, timeout: float = 30) -> tuple[int, int]:
    """Wait until the job's reported count and the destination stop moving; returns both."""
    deadline = time.monotonic() + timeout
    last = (-1, -1)
    while time.monotonic() < deadline:
        now = (kubectl.status("containercopyjob", name).get("processedCount") or 0, len(all_items(dest)))
        if now == last:
            time.sleep(3)
            assert (kubectl.status("containercopyjob", name).get("processedCount") or 0, len(all_items(dest))) == now
            return now
        last = now
        time.sleep(3)
    raise AssertionError(f"{name} kept copying while paused: {last}")


def test_deleting_a_job_cancels_it(stack: DevStack, kubectl: Kubectl) -> None:
    source, dest = new_container(stack, "/tenant", items=150), new_container(stack, "/id")
    apply_account(kubectl, stack)
    kubectl.apply(job_manifest("doomed", source, dest, maxItemsPerSecond=20))
    kubectl.wait_for(
        "containercopyjob", "doomed", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 5, 90
    )
    kubectl("delete", "containercopyjob", "doomed")
    deadline, copied = time.monotonic() + 30, -1
    while time.monotonic() < deadline:  # the work stops at the instances' next check
        previous, copied = copied, len(all_items(dest))
        if copied == previous:
            break
        time.sleep(3)
    time.sleep(3)
    assert len(all_items(dest)) == copied < 150
    assert kubectl.status("databaseaccount", "acct").get("activeCopyJob") is None
    history = kubectl.ferry("jobs", "show", f"{kubectl.namespace}/doomed", "--account", "acct")
    assert "state: Cancelled" in history, history


@pytest.fixture
def cosmos_proxy(stack: DevStack) -> Iterator[CosmosProxy]:
    """A fault-injecting HTTPS proxy in front of cosmosdb-server (which itself never refuses a key)."""
    assert stack.cosmos is not None
    proxy = CosmosProxy(stack.cosmos.endpoint.endpoint).start()
    yield proxy
    proxy.stop()


def _ready(kubectl: Kubectl, name: str, status: str) -> dict[str, Any]:
    def has(o: dict[str, Any]) -> bool:
        conditions = (o.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == status for c in conditions)

    obj = kubectl.wait_for("databaseaccount", name, has, timeout=60)
    return {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]


def test_refused_key_and_unreachable_endpoint_are_explained(
    stack: DevStack, kubectl: Kubectl, cosmos_proxy: CosmosProxy
) -> None:
    apply_account(kubectl, stack, name="nowhere", endpoint="https://127.0.0.1:9/")
    nowhere = _ready(kubectl, "nowhere", "False")
    assert nowhere["reason"] == "Unreachable" and "127.0.0.1:9" in nowhere["message"]
    assert kubectl.kstatus("databaseaccount", "nowhere") == "InProgress"  # it may come back on its own

    disabled = "Local Authorization is disabled. Use an AAD token to authorize all requests."
    cosmos_proxy.fail_next(10_000, 401, message=disabled, x_ms_substatus="5202")
    apply_account(kubectl, stack, name="keyless", endpoint=cosmos_proxy.endpoint)
    keyless = _ready(kubectl, "keyless", "False")
    assert keyless["reason"] == "LocalAuthDisabled" and "enable local" in keyless["message"], keyless

    cosmos_proxy.faults.clear()
    cosmos_proxy.fail_next(10_000, 401, message="The input authorization token can't serve the request.")
    kubectl("patch", "databaseaccount", "keyless", "--type=merge", "-p", '{"spec":{"regionPollInterval":"1s"}}')
    refused = _ready(kubectl, "keyless", "False")
    deadline = time.monotonic() + 30
    while refused["reason"] != "Unauthorized" and time.monotonic() < deadline:
        time.sleep(0.5)
        refused = {c["type"]: c for c in kubectl.status("databaseaccount", "keyless")["conditions"]}["Ready"]
    assert refused["reason"] == "Unauthorized" and "key" in refused["message"]
    assert kubectl.kstatus("databaseaccount", "keyless") == "Failed"  # a refused key needs the user

    cosmos_proxy.faults.clear()
    assert _ready(kubectl, "keyless", "True")["reason"] == "Connected"
    assert stack.cosmos is not None
    assert stack.cosmos.endpoint.key not in kubectl("describe", "databaseaccount", "keyless")


def test_write_region_change_fails_every_incomplete_job_of_that_account_only(
    stack: DevStack, kubectl: Kubectl, cosmos_proxy: CosmosProxy
) -> None:
    cosmos_proxy.set_regions(["West US"], ["West US", "East US"])
    apply_account(kubectl, stack, name="moving", endpoint=cosmos_proxy.endpoint)
    apply_account(kubectl, stack, name="steady")
    done_src, done_dst = new_container(stack, "/tenant", items=10), new_container(stack, "/id")
    kubectl.apply(job_manifest("finished", done_src, done_dst, account="moving"))
    kubectl.wait_phase("containercopyjob", "finished", "Succeeded", timeout=90)

    running_src, running_dst = new_container(stack, "/tenant", items=200), new_container(stack, "/id")
    kubectl.apply(job_manifest("running", running_src, running_dst, account="moving", maxItemsPerSecond=20))
    time.sleep(1.1)
    kubectl.apply(job_manifest("queued", done_src, new_container(stack, "/id"), account="moving"))
    other_src, other_dst = new_container(stack, "/tenant", items=60), new_container(stack, "/id")
    kubectl.apply(job_manifest("elsewhere", other_src, other_dst, account="steady", maxItemsPerSecond=20))
    kubectl.wait_for(
        "containercopyjob", "running", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 5, 90
    )
    assert kubectl.status("containercopyjob", "queued")["phase"] == "Queued"
    assert kubectl.status("containercopyjob", "running")["writeRegion"] == "West US"

    cosmos_proxy.set_regions(["East US"], ["East US", "West US"])
    changed = time.monotonic()
    for name in ("running", "queued"):
        status = kubectl.wait_phase("containercopyjob", name, "Failed", timeout=30)["status"]
        assert status["failure"]["reason"] == "WriteRegionChanged"
        assert "West US" in status["failure"]["message"] and "East US" in status["failure"]["message"]
    assert time.monotonic() - changed <= 2 * 2 + 3  # two poll intervals (2s each), and a little slack
    time.sleep(4)
    stopped_at = len(all_items(running_dst))
    time.sleep(3)
    assert len(all_items(running_dst)) == stopped_at < 200  # its work stopped
    assert kubectl.status("containercopyjob", "finished")["phase"] == "Succeeded"
    assert kubectl.status("databaseaccount", "moving")["writeRegion"] == "East US"
    with urllib.request.urlopen(stack.operator_metrics, timeout=10) as response:
        changes = re.search(r"^ferry_account_write_region_changes_total (\S+)", response.read().decode(), re.M)
    events = kubectl.events("moving", with_reasons("WriteRegionChanged"))
    assert [int(e.get("count") or 1) for e in events if e["reason"] == "WriteRegionChanged"] == [1]
    assert changes and float(changes.group(1)) >= 1
    kubectl.wait_phase("containercopyjob", "elsewhere", "Succeeded", timeout=120)
    assert all_items(other_dst) == all_items(other_src)


def test_throttled_writes_are_retried_and_nothing_is_lost(
    stack: DevStack, kubectl: Kubectl, cosmos_proxy: CosmosProxy
) -> None:
    source, dest = new_container(stack, "/tenant", items=80), new_container(stack, "/region")
    cosmos_proxy.throttle_next(30, retry_after_ms=100)
    apply_account(kubectl, stack, name="busy", endpoint=cosmos_proxy.endpoint)
    kubectl.apply(job_manifest("throttled", source, dest, account="busy"))
    status = kubectl.wait_phase("containercopyjob", "throttled", "Succeeded", timeout=120)["status"]
    assert all_items(dest) == all_items(source)
    assert status["processedCount"] == 80
    assert status["throttledRequests"] >= 30
    assert cosmos_proxy.injected >= 30
    with urllib.request.urlopen(stack.operator_metrics, timeout=10) as response:
        metrics = response.read().decode()
    throttled = re.search(r"^ferry_cosmos_throttled_requests_total (\S+)", metrics, re.M)
    assert throttled and float(throttled.group(1)) >= 30
    copied = re.search(r"^ferry_copyjob_items_copied_total (\S+)", metrics, re.M)
    assert copied and float(copied.group(1)) >= 80
    assert re.search(r'^ferry_objects\{kind="ContainerCopyJob",phase="Succeeded"\} [1-9]', metrics, re.M)


def test_instances_and_operator_killed_repeatedly_the_copy_is_still_exact(stack: DevStack, kubectl: Kubectl) -> None:
    source, dest = new_container(stack, "/tenant", items=300), new_container(stack, "/region")
    apply_account(kubectl, stack, name="sturdy")
    kubectl.apply(job_manifest("sturdy", source, dest, account="sturdy", maxItemsPerSecond=40))
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and kills < 4:
        time.sleep(rng.uniform(1.0, 3.0))
        status = kubectl.status("containercopyjob", "sturdy")
        if status.get("phase") == "Succeeded":
            break
        instances = kubectl.status("databaseaccount", "sturdy").get("instances") or []
        if instances and stack.kill_pod(kubectl.namespace, rng.choice(instances), signal.SIGKILL):
            kills += 1
        if kills == 2:
            stack.restart_operator(signal.SIGKILL)
    assert kills >= 2, "the job finished before it could be interrupted"
    status = kubectl.wait_phase("containercopyjob", "sturdy", "Succeeded", timeout=240)["status"]
    assert all_items(dest) == all_items(source)
    assert status["processedCount"] == status["totalCount"] == 300


def test_idle_instances_are_removed(stack: DevStack, kubectl: Kubectl) -> None:
    source, dest = new_container(stack, "/tenant", items=10), new_container(stack, "/id")
    apply_account(kubectl, stack, name="idler", idleTimeout="3s")
    kubectl.apply(job_manifest("quick", source, dest, account="idler"))
    kubectl.wait_phase("containercopyjob", "quick", "Succeeded", timeout=90)
    kubectl.wait_for("databaseaccount", "idler", lambda o: not (o.get("status") or {}).get("instances"), timeout=60)
    pods = kubectl("get", "pods", "-l", "ferry.dev/role=copy,ferry.dev/kind=DatabaseAccount", "-o", "name").split()
    deadline = time.monotonic() + 20  # under the pods' 30 s grace period: an idle instance stops on SIGTERM
    while pods and time.monotonic() < deadline:
        time.sleep(0.5)
        pods = kubectl("get", "pods", "-l", "ferry.dev/role=copy,ferry.dev/kind=DatabaseAccount", "-o", "name").split()
    assert pods == []


def test_an_online_copy_follows_writes_and_completes_at_the_cutover(stack: DevStack, kubectl: Kubectl) -> None:
    source = new_container(stack, "/tenant", items=60)
    dest = new_container(stack, "/region")
    apply_account(kubectl, stack)
    kubectl.wait_for("databaseaccount", "acct", lambda o: _connected(o) is not None, timeout=60)
    # A cutover on an offline job is refused by the schema, which names the field.
    refused = kubectl.run(
        "apply", "-f", "-", stdin=job_manifest("offline-cut", source, dest, cutover=True), check=False
    )
    assert refused.returncode != 0 and "spec.cutover" in refused.stderr, refused.stderr
    assert "only when mode is Online" in refused.stderr

    kubectl.apply(job_manifest("online", source, dest, mode="Online"))

    def caught_up(job: dict[str, Any]) -> bool:
        conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
        return conditions.get("CaughtUp", {}).get("status") == "True"

    kubectl.wait_for("containercopyjob", "online", caught_up, timeout=120)
    source.upsert_item({"id": "new-1", "tenant": "t1", "region": "r2", "n": 1})
    source.replace_item("item-0003", {"id": "item-0003", "tenant": "t3", "region": "r1", "n": 1003})  # moves
    source.delete_item("item-0004", "t4")
    deadline = time.monotonic() + 60
    while all_items(dest) != all_items(source) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all_items(dest) == all_items(source)
    assert kubectl.status("containercopyjob", "online")["phase"] == "Running"  # online: it does not end by itself

    kubectl("patch", "containercopyjob", "online", "--type=merge", "-p", '{"spec": {"cutover": true}}')
    status = kubectl.wait_phase("containercopyjob", "online", "Succeeded", timeout=60)["status"]
    complete = {c["type"]: c for c in status["conditions"]}["Complete"]
    assert complete["reason"] == "CutOver" and "safe to repoint clients" in complete["message"]
    assert status["pendingChanges"] == 0
    assert all_items(dest) == all_items(source)
