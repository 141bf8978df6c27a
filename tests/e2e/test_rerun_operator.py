"""Running a failed ContainerCopyJob again in place, end to end: `kubectl ferry jobs rerun` after a write region
change starts the job over in the new region, keeps the failed run in status.attempts, and a Succeeded job is not
run again, whether asked through the command or by the annotation itself."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from copyjobs import all_items, apply_account, job_manifest, new_container

from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.cosmosproxy import CosmosProxy
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


@pytest.fixture
def moving(stack: DevStack) -> Iterator[CosmosProxy]:
    """The account's endpoint: cosmosdb-server behind a proxy whose write region the test moves."""
    assert stack.cosmos is not None
    proxy = CosmosProxy(stack.cosmos.endpoint.endpoint).start()
    proxy.set_regions(["West US"], ["West US", "East US"])
    yield proxy
    proxy.stop()


def _plugin(stack: DevStack, kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl ferry ...`, as a user runs it."""
    argv = [kubectl_binary(), "ferry", *args, "-n", kubectl.namespace]
    return subprocess.run(argv, env=stack.env(), capture_output=True, text=True, timeout=60)


def test_a_job_failed_by_a_region_change_is_run_again_to_success_and_keeps_its_history(
    stack: DevStack, kubectl: Kubectl, moving: CosmosProxy
) -> None:
    source, dest = new_container(stack, "/tenant", items=120), new_container(stack, "/region")
    apply_account(kubectl, stack, endpoint=moving.endpoint)
    kubectl.apply(job_manifest("again", source, dest, maxItemsPerSecond=4))  # 30 s: time to move the region
    kubectl.wait_for(
        "containercopyjob", "again", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 5, 120
    )
    early = _plugin(stack, kubectl, "jobs", "rerun", "again")
    assert early.returncode == 1 and "has not ended (Running)" in early.stderr, early.stderr

    moving.set_regions(["East US"], ["East US", "West US"])
    failed = kubectl.wait_phase("containercopyjob", "again", "Failed", timeout=30)["status"]
    assert failed["failure"]["reason"] == "WriteRegionChanged"
    kubectl("patch", "containercopyjob", "again", "--type=merge", "-p", '{"spec":{"maxItemsPerSecond":500}}')

    asked = _plugin(stack, kubectl, "jobs", "rerun", "again")
    assert asked.returncode == 0 and "attempt 2" in asked.stdout, asked.stderr
    done = kubectl.wait_phase("containercopyjob", "again", "Succeeded", timeout=120)
    status = done["status"]
    assert all_items(dest) == all_items(source)
    assert (status["attempt"], status["writeRegion"]) == (2, "East US")
    assert status["recordId"] == f"{done['metadata']['uid']}-2"  # started over: the region's checkpoints are gone
    assert status["processedCount"] == status["totalCount"] == 120
    [first] = status["attempts"]
    assert (first["attempt"], first["phase"], first["reason"]) == (1, "Failed", "WriteRegionChanged")
    assert 5 < first["processedCount"] < 120 and first["completionTime"]
    history = kubectl.ferry("jobs", "list", "--account", "acct")
    assert history.count(f"{kubectl.namespace}/again") == 2, history  # both runs' records

    refused = _plugin(stack, kubectl, "jobs", "rerun", "again")
    assert refused.returncode == 1 and "succeeded" in refused.stderr
    kubectl("annotate", "--overwrite", "containercopyjob", "again", "ferry.dev/rerun=by-hand")
    said = kubectl.wait_for(
        "containercopyjob",
        "again",
        lambda o: any(c["type"] == "Rerun" and c["status"] == "False" for c in o["status"]["conditions"]),
        30,
    )
    rerun = {c["type"]: c for c in said["status"]["conditions"]}["Rerun"]
    assert rerun["reason"] == "RerunRefused" and "succeeded" in rerun["message"]
    assert said["status"]["phase"] == "Succeeded" and said["status"]["attempt"] == 2
