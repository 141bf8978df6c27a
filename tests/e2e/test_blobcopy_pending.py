"""ServerSide BlobCopies on the service's pending path, through the asynchronous Copy Blob stand-in.

The destination account's blob endpoint is the stand-in (support/asynccopy.py); the source is Azurite
itself, which the stand-in reads through the SAS URL the worker gives it, as the service would.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient
from blobcopy_fixtures import (
    account_secrets,
    blob_bytes,
    blobcopy_manifest,
    new_container,
    scrape_metrics,
    storage_accounts,
)
from prometheus_client.parser import text_string_to_metric_families

from ferry_dev.stack import DevStack
from support.asynccopy import AsyncCopyService
from support.kubectl import Kubectl
from support.monitoring import expressions, metric_names, rendered
from support.sas import read_url

pytestmark = pytest.mark.e2e
KiB = 1024


@pytest.fixture
def service(stack: DevStack) -> Iterator[AsyncCopyService]:
    assert stack.azurite is not None
    with AsyncCopyService(stack.azurite.accounts, rate=256 * KiB).running() as running:
        yield running


def _containers(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> tuple[ContainerClient, ContainerClient]:
    """A source container on Azurite and a destination container seen through the stand-in."""
    src_account, dst_account = storage_accounts(stack)
    src = new_container(src_account)
    dst = new_container(dst_account, service.connection_string(dst_account))
    account_secrets(kubectl, src_account.connection_string, service.connection_string(dst_account))
    return src, dst


def _status_until(kubectl: Kubectl, name: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return kubectl.wait_for("blobcopy", name, lambda o: test(o.get("status") or {}), timeout=60)["status"]


def _midway(status: dict[str, Any]) -> bool:
    copied, _, total = str(status.get("progress") or "0/0").partition("/")
    return status.get("copyStatus") == "pending" and 0 < int(copied) < int(total)


def test_a_pending_copy_shows_progress_refuses_other_writers_and_succeeds(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    data = blob_bytes(1536 * KiB, 11)
    source = src.upload_blob("big.bin", data, metadata={"origin": "src"})
    manifest = blobcopy_manifest("slow", src, dst, source={"blob": "big.bin"}, lockSource=True, lockDestination=True)
    kubectl.apply(manifest)

    status = _status_until(kubectl, "slow", _midway)
    assert kubectl.kstatus("blobcopy", "slow") == "InProgress"
    dest = dst.get_blob_client("big.bin")
    assert dest.get_blob_properties().copy.id == status["copyId"]  # the service's copy id, reported as it is
    table = kubectl("get", "blobcopies")
    assert re.search(r"slow\s+ServerSide\s+Running\s+pending\s+\d+/" + str(len(data)), table), table
    with pytest.raises(HttpResponseError) as refused:  # another writer, while the copy is pending
        dest.upload_blob(b"someone else's", overwrite=True)
    assert refused.value.status_code == 409 and "PendingCopyOperation" in str(refused.value.error_code)
    assert str(dest.get_blob_properties().lease.state) == "leased"  # Ferry's lock, held while the service copies

    status = kubectl.wait_phase("blobcopy", "slow", "Succeeded", timeout=60)["status"]
    assert status["copyStatus"] == "success" and status["progress"] == f"{len(data)}/{len(data)}"
    assert dest.download_blob().readall() == data
    props = dest.get_blob_properties()
    assert props.metadata == {"origin": "src"} and str(props.copy.status) == "success"
    assert str(props.lease.state) == "available" and str(source.get_blob_properties().lease.state) == "available"


def test_failed_and_aborted_copies_of_a_prefix_are_restarted(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    blobs = {f"p/{n}.bin": blob_bytes(96 * KiB, n) for n in range(3)}
    for name, data in blobs.items():
        src.upload_blob(name, data)
    service.rate = 0  # all three held pending until the test has interfered
    kubectl.apply(blobcopy_manifest("restarts", src, dst, source={"prefix": "p/"}, maxRetries=2))
    _status_until(kubectl, "restarts", lambda s: (s.get("blobs") or {}).get("pending") == 3 and bool(s.get("copyId")))
    deadline = time.monotonic() + 30
    while any(service.copy_of(dst.container_name, name) is None for name in blobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    aborted = dst.get_blob_client("p/0.bin")  # someone aborts one copy; the service fails another
    aborted.abort_copy(str(aborted.get_blob_properties().copy.id))
    service.fail_next(1, lambda name: name == "p/1.bin")
    service.rate = 4096 * KiB

    status = kubectl.wait_phase("blobcopy", "restarts", "Succeeded", timeout=90)["status"]
    assert status["blobs"] == {"total": 3, "pending": 0, "succeeded": 3, "failed": 0, "skipped": 0}
    assert "restart 1" in status["statusDescription"]  # the restart and its cause are recorded
    for name, data in blobs.items():
        assert dst.download_blob(name).readall() == data
    assert service.copy_requests("p/0.bin") == service.copy_requests("p/1.bin") == 2  # each restarted once
    assert service.copy_requests("p/2.bin") == 1


def test_a_copy_failing_past_its_retries_fails_the_blobcopy_with_the_service_description(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    src.upload_blob("doomed.bin", blob_bytes(64 * KiB, 2))
    service.fail_next(5, lambda name: name == "doomed.bin")
    kubectl.apply(blobcopy_manifest("doomed", src, dst, source={"blob": "doomed.bin"}, maxRetries=1))
    failure = kubectl.wait_phase("blobcopy", "doomed", "Failed", timeout=60)["status"]["failure"]
    assert failure["reason"] == "CopyFailed"
    assert "after 1 restarts" in failure["message"] and "InternalError" in failure["message"]
    assert service.copy_requests("doomed.bin") == 2


def test_a_source_changed_mid_copy_fails_with_source_changed(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    source = src.upload_blob("moving.bin", blob_bytes(1024 * KiB, 3))
    kubectl.apply(blobcopy_manifest("moving", src, dst, source={"blob": "moving.bin"}))
    _status_until(kubectl, "moving", _midway)
    source.upload_blob(b"a new version", overwrite=True)
    status = kubectl.wait_phase("blobcopy", "moving", "Failed", timeout=60)["status"]
    assert status["failure"]["reason"] == "SourceChanged" and "412" in status["failure"]["message"]
    assert str(dst.get_blob_client("moving.bin").get_blob_properties().copy.status) == "failed"


def test_deleting_a_blobcopy_aborts_its_pending_service_copy(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    src.upload_blob("held.bin", blob_bytes(64 * KiB, 4), metadata={"kept": "yes"})
    service.rate = 0
    kubectl.apply(blobcopy_manifest("held", src, dst, source={"blob": "held.bin"}, lockDestination=True))
    _status_until(kubectl, "held", lambda s: s.get("copyStatus") == "pending" and bool(s.get("copyId")))
    kubectl("delete", "blobcopy", "held", "--wait=false")
    kubectl.wait_gone("blobcopy", "held", timeout=90)
    left = dst.get_blob_client("held.bin").get_blob_properties()
    assert str(left.copy.status) == "aborted" and left.size == 0 and left.metadata == {"kept": "yes"}
    assert str(left.lease.state) == "available"  # the lock is released once the copy is aborted


def test_a_copy_pending_past_max_lifetime_is_aborted(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    src.upload_blob("slow.bin", blob_bytes(64 * KiB, 5))
    service.rate = 0
    kubectl.apply(blobcopy_manifest("expires", src, dst, source={"blob": "slow.bin"}, maxLifetime="3s"))
    failure = kubectl.wait_phase("blobcopy", "expires", "Failed", timeout=60)["status"]["failure"]
    assert failure["reason"] == "MaxLifetimeExceeded" and "3s" in failure["message"]
    left = dst.get_blob_client("slow.bin").get_blob_properties()
    assert str(left.copy.status) == "aborted" and left.size == 0


def test_someone_elses_pending_copy_is_a_conflict_named_by_its_id(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    source = src.upload_blob("theirs.bin", blob_bytes(64 * KiB, 6))
    service.rate = 0
    theirs = BlobClient.from_connection_string(
        service.connection_string(storage_accounts(stack)[1]), dst.container_name, "theirs.bin"
    )
    their_id = theirs.start_copy_from_url(read_url(storage_accounts(stack)[0], source))["copy_id"]
    kubectl.apply(blobcopy_manifest("conflict", src, dst, source={"blob": "theirs.bin"}))
    failure = kubectl.wait_phase("blobcopy", "conflict", "Failed", timeout=60)["status"]["failure"]
    assert failure["reason"] == "PendingCopyConflict" and their_id in failure["message"]
    assert theirs.get_blob_properties().copy.id == their_id  # their copy is left alone


def test_a_killed_worker_adopts_its_pending_copy_instead_of_starting_another(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    data = blob_bytes(1024 * KiB, 7)
    src.upload_blob("long.bin", data)
    kubectl.apply(blobcopy_manifest("adopt", src, dst, source={"blob": "long.bin"}))
    status = _status_until(kubectl, "adopt", _midway)
    service.rate = 0  # the copy stays pending while no worker follows it
    assert stack.kill_pod(kubectl.namespace, status["worker"]["pod"], signal.SIGKILL)
    _status_until(kubectl, "adopt", lambda s: (s.get("worker") or {}).get("attempts") == 2)
    time.sleep(2)  # the replacement worker finds the pending copy
    service.rate = 1024 * KiB
    status = kubectl.wait_phase("blobcopy", "adopt", "Succeeded", timeout=90)["status"]
    assert status["worker"]["restarts"] == 1
    assert dst.download_blob("long.bin").readall() == data
    assert service.copy_requests("long.bin") == 1  # the second worker followed the first one's copy


def test_a_running_copy_is_on_the_metrics_and_every_metric_of_the_dashboard_and_alerts_is_served(
    stack: DevStack, kubectl: Kubectl, service: AsyncCopyService
) -> None:
    src, dst = _containers(stack, kubectl, service)
    src.upload_blob("watched.bin", blob_bytes(1536 * KiB, 8))
    kubectl.apply(blobcopy_manifest("watched", src, dst, source={"blob": "watched.bin"}))
    _status_until(kubectl, "watched", _midway)
    mine = {"kind": "BlobCopy", "namespace": kubectl.namespace, "name": "watched"}
    deadline = time.monotonic() + 30
    while "ferry_job_eta_seconds" not in (found := _samples(stack, mine)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert 0 < found["ferry_job_progress_ratio"] < 1 and found["ferry_job_eta_seconds"] > 0, found

    families = list(text_string_to_metric_families(scrape_metrics(stack)))
    served = {f.name for f in families} | {s.name for f in families for s in f.samples}
    named = metric_names(expressions(*rendered()))
    missing = {n for n in named if n not in served and n.removesuffix("_total") not in served}
    assert len(named) > 10 and not missing, missing
    kubectl.wait_phase("blobcopy", "watched", "Succeeded", timeout=60)


def _samples(stack: DevStack, labels: dict[str, str]) -> dict[str, float]:
    """The operator's samples with exactly these labels, by metric name."""
    families = text_string_to_metric_families(scrape_metrics(stack))
    return {s.name: s.value for f in families for s in f.samples if s.labels == labels}
