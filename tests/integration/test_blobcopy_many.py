"""Multi-blob copies at scale against Azurite: streamed listing, the manifest, resume after SIGKILL, concurrency
across blobs, failures recorded and listed, and ServerSide monitoring by listing."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from rich.console import Console

from ferry.cli.blobcopy import print_failures
from ferry.kinds.blobcopy.engine import Endpoints, run_copy
from ferry.kinds.blobcopy.items import list_again, list_page
from ferry.kinds.blobcopy.manifest import Manifest
from ferry_dev.emulators import StorageAccount
from support.asynccopy import AsyncCopyService
from support.blobcopy_worker import merged, worker

pytestmark = pytest.mark.integration

# The worker as a process: endpoints from the environment, status patches appended as JSON lines.


def fill(container: ContainerClient, names: list[str], size: int = 1024) -> dict[str, bytes]:
    data = {name: os.urandom(size) for name in names}
    for name, body in data.items():
        container.upload_blob(name, body)
    return data


def etags(container: ContainerClient, prefix: str) -> dict[str, str]:
    return {b.name: str(b.etag) for b in container.list_blobs(name_starts_with=prefix)}


def manifest(account: StorageAccount, key: str) -> Manifest:
    return Manifest(BlobServiceClient.from_connection_string(account.connection_string), key)


def puts_of(prefix: str) -> Any:
    """Matches the one write per blob: Put Blob (Stream) or Copy Blob (ServerSide) of a blob under `prefix`."""
    return lambda method, path: method == "PUT" and f"/{prefix}" in path and "comp=" not in path


@pytest.mark.parametrize("mode", ["Stream", "ServerSide"])
def test_killed_mid_listing_and_mid_copy_resumes_from_the_manifest(
    src_account, dst_account, src_container, dst_container, make_spec, fault_proxy, proxied, tmp_path, mode
):
    names = [f"m/{i:03d}" for i in range(60)]
    data = fill(src_container, names)
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "m/"},
        destination={"container": dst_container.container_name},
        mode=mode,
        parallelism=4,
    )
    reports = tmp_path / "reports.jsonl"
    key = f"kill-{mode}"
    env = {
        "SPEC": json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
        "REPORTS": str(reports),
        "KEY": key,
        "PAGE_SIZE": "10",
        "FERRY_SOURCE_CONNECTION_STRING": proxied(src_account, fault_proxy),
        "FERRY_DESTINATION_CONNECTION_STRING": proxied(dst_account, fault_proxy),
    }
    fault_proxy.delay, fault_proxy.delay_match = 0.15, puts_of("m/")
    book = manifest(dst_account, key)

    first = worker(env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and first.poll() is None:
            state = book.load()
            if state is not None and state.pages_listed >= 1 and 0 not in state.open:
                break  # the first page is closed, others are open (pages may close out of order)
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)  # no chance to checkpoint or release anything
    finally:
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    time.sleep(fault_proxy.delay + 0.5)  # writes already inside the proxy still land: let them
    at_kill = book.load()
    assert at_kill is not None and not at_kill.listing_done  # killed mid-listing
    assert 0 not in at_kill.open and at_kill.open  # and mid-copy
    copied = etags(dst_container, "m/")
    assert 10 <= len(copied) < len(names)

    fault_proxy.delay = 0.0
    log_before = len(fault_proxy.log)
    second = worker({**env, "PREVIOUS": json.dumps(merged(reports))})
    assert second.wait(timeout=60) == 0
    again = fault_proxy.log[log_before:]
    # Not listed from the start: every listing of the source continues from a saved marker.
    listings = [p for m, p in again if m == "GET" and "comp=list" in p and src_container.container_name in p]
    assert listings and all("marker=" in p for p in listings)
    # No blob copied twice: only the blobs not copied before the kill were written, the others kept their ETag.
    writes = [p for m, p in again if puts_of("m/")(m, p)]
    assert len(writes) == len(names) - len(copied)
    after = etags(dst_container, "m/")
    assert {name: after[name] for name in copied} == copied
    for name in names:
        assert dst_container.get_blob_client(name).download_blob().readall() == data[name]
    status = merged(reports)
    assert status["copyStatus"] == "success"
    assert status["blobs"] == {"total": 60, "pending": 0, "succeeded": 60, "failed": 0, "skipped": 0}
    final = book.load()
    assert final is not None and final.listing_done and not final.open and final.succeeded == 60


def test_listing_progress_is_reported_until_the_total_is_known(
    src_account, dst_account, src_container, dst_container, reports, make_spec
):
    fill(src_container, [f"p/{i:02d}" for i in range(25)], size=10)
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "p/"},
        destination={"container": dst_container.container_name},
        mode="Stream",
    )
    ep = Endpoints(src_account.connection_string, None, dst_account.connection_string)
    assert run_copy(spec, None, ep, reports, threading.Event(), "listing", page_size=10).succeeded
    during = [p["blobs"] for p in reports.patches if p.get("blobs", {}).get("listing")]
    assert during and all(b["listed"] == b["total"] and b["listed"] < 25 for b in during)
    assert reports.merged()["blobs"] == {"total": 25, "pending": 0, "succeeded": 25, "failed": 0, "skipped": 0}


def test_failures_are_recorded_in_the_manifest_and_listed(
    src_account, dst_account, src_container, dst_container, reports, make_spec, assert_no_secrets
):
    names = [f"f/{i:02d}" for i in range(12)]
    fill(src_container, names, size=100)
    conflicting = [names[i] for i in (0, 2, 3, 5, 7, 9, 11)]
    for name in conflicting:  # another copy's pending Stream copy: these blobs cannot be copied
        dst_container.upload_blob(
            name, b"", metadata={"ferrycopyid": "other", "ferrycopykey": "other", "ferrycopystate": "pending"}
        )
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "f/"},
        destination={"container": dst_container.container_name},
        mode="Stream",
        overwrite="IfSourceNewer",
        parallelism=3,
    )
    ep = Endpoints(src_account.connection_string, None, dst_account.connection_string)
    outcome = run_copy(spec, None, ep, reports, threading.Event(), "failing", page_size=5)
    assert not outcome.succeeded and outcome.failure is not None
    assert outcome.failure.reason == "PendingCopyConflict" and "7 of 12 blobs failed" in outcome.failure.message
    status = reports.merged()
    assert status["blobs"] == {"total": 12, "pending": 0, "succeeded": 5, "failed": 7, "skipped": 0}
    assert len(status["failures"]) == 5 and {f["name"] for f in status["failures"]} <= set(conflicting)
    for name in set(names) - set(conflicting):  # the others were copied all the same
        assert dst_container.get_blob_client(name).get_blob_properties().size == 100

    recorded = list(manifest(dst_account, "failing").failures())
    assert sorted(f.name for f in recorded) == conflicting
    assert {f.reason for f in recorded} == {"PendingCopyConflict"}
    out = io.StringIO()
    assert print_failures(manifest(dst_account, "failing"), Console(file=out, width=200)) == 7
    printed = out.getvalue()
    assert all(name in printed for name in conflicting) and "PendingCopyConflict" in printed
    assert_no_secrets([printed, json.dumps(reports.patches)], src_account.key, dst_account.key)


@pytest.mark.parametrize("mode", ["Stream", "ServerSide"])
def test_blobs_are_copied_concurrently_up_to_parallelism(
    src_account, dst_account, src_container, dst_container, reports, make_spec, fault_proxy, proxied, mode
):
    names = [f"c/{i:02d}" for i in range(30)]
    fill(src_container, names, size=500)
    lock = threading.Lock()
    now, most = [0], [0]

    def hold(method: str, path: str, headers: dict[str, str]) -> None:
        if not puts_of("c/")(method, path):
            return
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.05)  # long enough for the worker's other writes to arrive meanwhile
        with lock:
            now[0] -= 1

    fault_proxy.hook = hold
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "c/"},
        destination={"container": dst_container.container_name},
        mode=mode,
        parallelism=5,
    )
    ep = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    assert run_copy(spec, None, ep, reports, threading.Event(), f"conc-{mode}", page_size=10).succeeded
    assert 1 < most[0] <= 5
    assert len(etags(dst_container, "c/")) == 30


def test_serverside_follows_pending_copies_by_listing(
    azurite, src_account, dst_account, src_container, dst_container, reports, make_spec
):
    names = [f"s/{i:02d}" for i in range(24)]
    data = fill(src_container, names, size=20_000)
    with AsyncCopyService(azurite.accounts, rate=40_000).running() as service:
        spec = make_spec(
            source={"container": src_container.container_name, "prefix": "s/"},
            destination={"container": dst_container.container_name},
            mode="ServerSide",
            parallelism=8,
        )
        ep = Endpoints(src_account.connection_string, None, service.connection_string(dst_account))
        outcome = run_copy(spec, None, ep, reports, threading.Event(), "follow", page_size=10)
        assert outcome.succeeded, outcome.failure
        assert service.copy_requests("/s/") == 24
        # Followed through listings of the destination, not one property read per blob.
        reads = [p for m, p in service.log if m in ("HEAD", "GET") and "/s/" in p]
        assert reads == []
    assert reports.merged()["blobs"]["succeeded"] == 24
    for name in names:
        assert dst_container.get_blob_client(name).download_blob().readall() == data[name]


def test_serverside_restarts_failed_copies_and_a_failed_blob_holds_back_no_other(
    azurite, src_account, dst_account, src_container, dst_container, reports, make_spec
):
    names = [f"r/{i}" for i in range(4)]
    data = fill(src_container, names, size=30_000)
    with AsyncCopyService(azurite.accounts, rate=0).running() as service:  # every copy held pending at first
        spec = make_spec(
            source={"container": src_container.container_name, "prefix": "r/"},
            destination={"container": dst_container.container_name},
            mode="ServerSide",
            maxRetries=1,
        )
        destination = service.connection_string(dst_account)
        ep = Endpoints(src_account.connection_string, None, destination)
        outcomes: list[Any] = []
        runner = threading.Thread(
            target=lambda: outcomes.append(run_copy(spec, None, ep, reports, threading.Event(), "restarts"))
        )
        runner.start()
        deadline = time.monotonic() + 30
        while any(service.copy_of(dst_container.container_name, n) is None for n in names):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        aborted = BlobServiceClient.from_connection_string(destination).get_blob_client(
            dst_container.container_name, "r/0"
        )
        aborted.abort_copy(str(aborted.get_blob_properties().copy.id))  # someone aborts one copy
        service.fail_next(5, lambda name: name == "r/1")  # and the service keeps failing another
        service.rate = 4 * 1024 * 1024
        runner.join(timeout=60)
        assert outcomes and not outcomes[0].succeeded
        assert outcomes[0].failure.reason == "CopyFailed" and "1 of 4 blobs failed" in outcomes[0].failure.message
        assert service.copy_requests("/r/0") == 2 and service.copy_requests("/r/1") == 2
        assert service.copy_requests("/r/2") == service.copy_requests("/r/3") == 1
    status = reports.merged()
    assert status["blobs"] == {"total": 4, "pending": 0, "succeeded": 3, "failed": 1, "skipped": 0}
    assert [f["name"] for f in status["failures"]] == ["r/1"]
    for name in ("r/0", "r/2", "r/3"):
        assert dst_container.get_blob_client(name).download_blob().readall() == data[name]


@pytest.mark.parametrize("mode", ["Stream", "ServerSide"])
def test_a_page_listed_again_keeps_its_blobs_when_its_range_gained_some(src_container, make_spec, mode):
    """A page is listed again after a restart, and by the worker that claims it in a spread copy. Blobs added to its
    range meanwhile must not push its own last blobs out: the next page starts at a fixed marker."""
    fill(src_container, [f"p/{i:02d}" for i in range(30)], size=16)
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "p/"},
        destination={"container": "unused"},
        mode=mode,
    )
    first, marker = list_page(spec, src_container, None, 10)
    assert [s.name for s in first][-1] == "p/09" and marker is not None
    fill(src_container, ["p/03a", "p/07a", "p/10a"], size=16)  # two inside the page's range, one past it

    again = list_again(spec, src_container, None, first[-1].name, 10)

    assert [s.name for s in again] == sorted([s.name for s in first] + ["p/03a", "p/07a"])
    following, _ = list_page(spec, src_container, marker, 10)
    assert following[0].name == "p/10", "the next page starts where it did"
