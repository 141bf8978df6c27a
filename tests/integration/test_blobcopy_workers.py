"""A multi-blob copy spread over several workers (spec.workers) against Azurite: pages handed out by leases, a
killed worker's page taken over, counts exact and the same as with one worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from ferry.kinds.blobcopy.claims import CLAIM_SECONDS
from ferry.kinds.blobcopy.engine import CopyOutcome, Endpoints, run_copy
from ferry.kinds.blobcopy.manifest import Manifest
from ferry_dev.emulators import StorageAccount
from support.blobcopy_worker import merged, worker
from support.reports import Reports

pytestmark = pytest.mark.integration


def fill(container: ContainerClient, names: list[str], size: int = 300) -> dict[str, bytes]:
    data = {name: os.urandom(size) for name in names}
    for name, body in data.items():
        container.upload_blob(name, body)
    return data


def book(account: StorageAccount, key: str) -> Manifest:
    return Manifest(BlobServiceClient.from_connection_string(account.connection_string), key)


def new_container(account: StorageAccount) -> ContainerClient:
    container = BlobServiceClient.from_connection_string(account.connection_string).get_container_client(
        f"dst{uuid.uuid4().hex[:10]}"
    )
    container.create_container()
    return container


def leased_claims(manifest: Manifest) -> int:
    claims = manifest.container.list_blobs(name_starts_with=manifest.prefix + "claims/")
    return sum(1 for c in claims if str(c.lease.state) == "leased")


def test_a_killed_worker_s_page_is_taken_over_and_every_blob_counted_once(
    src_account, dst_account, src_container, dst_container, make_spec, fault_proxy, proxied, tmp_path
):
    names = [f"w/{i:03d}" for i in range(90)]
    data = fill(src_container, names)
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "w/"},
        destination={"container": dst_container.container_name},
        mode="Stream",
        parallelism=2,
        workers=3,
    )
    key = "spread-kill"
    env = {
        "SPEC": json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
        "KEY": key,
        "PAGE_SIZE": "10",
        "FERRY_SOURCE_CONNECTION_STRING": src_account.connection_string,
        "FERRY_DESTINATION_CONNECTION_STRING": proxied(dst_account, fault_proxy),
    }
    # Slow Put Blob of the copied blobs, so that the copy is caught in the middle.
    fault_proxy.delay = 0.1
    fault_proxy.delay_match = lambda method, path: method == "PUT" and "/w/" in path and "comp=" not in path
    reports = [tmp_path / f"reports-{i}.jsonl" for i in range(3)]
    workers = [worker({**env, "REPORTS": str(reports[i]), "FERRY_WORKER_INDEX": str(i)}) for i in range(3)]
    manifest = book(dst_account, key)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = manifest.read()
            if state is not None and state.succeeded >= 20 and leased_claims(manifest) >= 3:
                break  # pages closed, and each worker holding one
            time.sleep(0.05)
        os.kill(workers[1].pid, signal.SIGKILL)  # no chance to release its claim
        killed_at = time.monotonic()
        at_kill = manifest.read()
        assert at_kill is not None and at_kill.open and at_kill.succeeded < len(names)
        assert workers[0].wait(timeout=90) == 0 and workers[2].wait(timeout=30) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
    assert workers[1].returncode == -signal.SIGKILL
    # Its page waited for its claim to expire, then another worker took it.
    assert time.monotonic() - killed_at >= CLAIM_SECONDS - 1
    for name in names:
        assert dst_container.get_blob_client(name).download_blob().readall() == data[name]
    status = merged(reports[0])
    assert status["copyStatus"] == "success"
    assert status["blobs"] == {"total": 90, "pending": 0, "succeeded": 90, "failed": 0, "skipped": 0}
    assert status["progress"] == f"{90 * 300}/{90 * 300}"
    final = manifest.read()
    assert final is not None and final.listing_done and not final.open
    assert (final.succeeded, final.failed, final.skipped, final.listed) == (90, 0, 0, 90)
    # One writer of the status: the helpers reported nothing.
    assert not reports[1].exists() or reports[1].read_text() == ""
    assert reports[2].read_text() == ""


def _copy(spec: Any, ep: Endpoints, key: str, workers: int) -> tuple[list[CopyOutcome], Reports]:
    reports = Reports()
    outcomes: list[CopyOutcome] = [CopyOutcome(succeeded=False)] * workers

    def one(index: int) -> None:
        outcomes[index] = run_copy(spec, None, ep, reports, threading.Event(), key, page_size=5, worker_index=index)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes, reports


@pytest.mark.parametrize("mode", ["Stream", "ServerSide"])
def test_three_workers_copy_and_count_as_one_does_failures_included(
    src_account, dst_account, src_container, make_spec, mode
):
    names = [f"s/{i:02d}" for i in range(37)]
    data = fill(src_container, names, size=100)
    conflicting = {names[i] for i in (1, 6, 17, 30)}
    results = {}
    for workers in (1, 3):
        dst = new_container(dst_account)
        for name in conflicting:  # another copy's pending Stream copy: these blobs cannot be copied
            dst.upload_blob(
                name, b"", metadata={"ferrycopyid": "other", "ferrycopykey": "o", "ferrycopystate": "pending"}
            )
        spec = make_spec(
            source={"container": src_container.container_name, "prefix": "s/"},
            destination={"container": dst.container_name},
            mode=mode,
            overwrite="IfSourceNewer",
            parallelism=3,
            workers=workers,
        )
        ep = Endpoints(src_account.connection_string, None, dst_account.connection_string)
        key = f"same-{mode}-{workers}"
        outcomes, reports = _copy(spec, ep, key, workers)
        coordinator, helpers = outcomes[0], outcomes[1:]
        assert coordinator.failure is not None and coordinator.failure.reason == "PendingCopyConflict"
        assert all(h.succeeded for h in helpers)  # their part is done; the coordinator tells the outcome
        recorded = sorted(f.name for f in book(dst_account, key).failures())
        copied = {n: dst.get_blob_client(n).download_blob().readall() for n in names if n not in conflicting}
        status = reports.merged()
        assert coordinator.failure.message.startswith("4 of 37 blobs failed; first, s/")
        assert {f["name"] for f in status["failures"]} <= conflicting  # the first ones, in whichever page order
        results[workers] = (status["blobs"], recorded, copied)
    assert results[1] == results[3]
    blobs, recorded, copied = results[3]
    assert blobs == {"total": 37, "pending": 0, "succeeded": 33, "failed": 4, "skipped": 0}
    assert recorded == sorted(conflicting)
    assert copied == {n: data[n] for n in names if n not in conflicting}
