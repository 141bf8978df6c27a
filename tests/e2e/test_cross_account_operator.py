"""Copies from another account end to end: the job waits in and runs on its own (the destination's) account, whose
copy instances read the source through the other account's endpoint and key; that account's write region and key
matter to the job as its own account's do."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from copyjobs import all_items, apply_account, job_manifest, new_container
from restore_fixtures import OwnCosmos

from ferry_dev.cosmosproxy import CosmosProxy
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


@pytest.fixture
def source_proxy(cosmos: OwnCosmos) -> Iterator[CosmosProxy]:
    """The source account: the test's own cosmosdb-server, behind a proxy whose regions and answers it sets."""
    proxy = CosmosProxy(cosmos.endpoint).start()
    proxy.set_regions(["East US"], ["East US"])
    yield proxy
    proxy.stop()


def test_a_container_of_another_account_is_copied_into_one_of_the_same_name(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos, source_proxy: CosmosProxy
) -> None:
    source = new_container(cosmos.client, "/tenant", items=150, db="shop", name="orders")
    dest = new_container(stack, "/region", db="shop", name="orders")  # the same names, in the job's own account
    apply_account(kubectl, stack)
    apply_account(kubectl, stack, name="orders-account", endpoint=source_proxy.endpoint)

    same = job_manifest("self", dest, dest, source_account="acct")
    refused = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=same, check=False)
    assert refused.returncode != 0 and "source and destination must differ" in refused.stderr

    kubectl.apply(job_manifest("across", source, dest, source_account="orders-account"))
    done = kubectl.wait_phase("containercopyjob", "across", "Succeeded", timeout=120)["status"]
    assert all_items(dest) == all_items(source) and len(all_items(dest)) == 150
    account = kubectl.status("databaseaccount", "acct")
    assert (done["writeRegion"], done["sourceWriteRegion"]) == (account["writeRegion"], "East US")
    assert done["processedCount"] == done["totalCount"] == 150
    history = kubectl.ferry("jobs", "show", f"{kubectl.namespace}/across", "--account", "acct")
    assert "state: Succeeded" in history and "account: orders-account" in history, history


def test_the_source_accounts_region_change_and_refused_key_fail_the_job_naming_it(
    stack: DevStack, kubectl: Kubectl, cosmos: OwnCosmos, source_proxy: CosmosProxy
) -> None:
    source = new_container(cosmos.client, "/tenant", items=200)
    dest = new_container(stack, "/region")
    apply_account(kubectl, stack)
    apply_account(kubectl, stack, name="orders-account", endpoint=source_proxy.endpoint)
    # 8 items/s, about 25 s: still running when the region moves, on a loaded machine too.
    kubectl.apply(job_manifest("moved", source, dest, source_account="orders-account", maxItemsPerSecond=8))
    kubectl.wait_for(
        "containercopyjob", "moved", lambda o: ((o.get("status") or {}).get("processedCount") or 0) > 5, 120
    )

    source_proxy.set_regions(["West Europe"], ["West Europe"])
    failed = kubectl.wait_phase("containercopyjob", "moved", "Failed", timeout=30)["status"]["failure"]
    assert failed["reason"] == "WriteRegionChanged"
    assert '"orders-account" changed from East US to West Europe' in failed["message"], failed
    time.sleep(4)
    stopped_at = len(all_items(dest))
    time.sleep(3)
    assert len(all_items(dest)) == stopped_at < 200  # its instances stopped

    # An account whose key the service refuses: a job reading from it fails with the account's own reason.
    source_proxy.fail_next(10_000, 401, message="The input authorization token can't serve the request.")
    apply_account(kubectl, stack, name="locked-account", endpoint=source_proxy.endpoint)
    kubectl.apply(job_manifest("refused", source, new_container(stack, "/region"), source_account="locked-account"))
    failed = kubectl.wait_phase("containercopyjob", "refused", "Failed", timeout=60)["status"]["failure"]
    assert failed["reason"] == "Unauthorized", failed
    assert 'source account "locked-account" cannot be read' in failed["message"] and "key" in failed["message"]
