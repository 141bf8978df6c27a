"""ServerSide mode against Azurite, with the fault proxy in front where the service must misbehave.

Azurite completes Copy Blob synchronously; where a test needs the service's pending path it puts the
asynchronous Copy Blob stand-in (support/asynccopy.py) in front of the destination account, as the
end-to-end tests of that path do (e2e/test_blobcopy_pending.py).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobSasPermissions, generate_blob_sas

from ferry.api.blobcopy import BlobCopyStatus
from ferry.kinds.blobcopy.engine import CopyStopped, Endpoints, cleanup, run_copy
from ferry_dev.emulators import Azurite, StorageAccount
from support.asynccopy import AsyncCopyService
from support.sas import read_url

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def endpoints(src: StorageAccount | None, dst: StorageAccount, url: str | None = None) -> Endpoints:
    return Endpoints(src.connection_string if src else None, url, dst.connection_string)


def spec_for(make_spec: Any, src: Any, dst: Any, source: dict[str, Any] | None = None, **extra: Any) -> Any:
    destination = {"container": dst.container_name, **extra.pop("destination", {})}
    return make_spec(
        source={"container": src.container_name, **(source or {})}, destination=destination, mode="ServerSide", **extra
    )


def is_copy_blob(method: str, headers: dict[str, str]) -> bool:
    return method == "PUT" and "x-ms-copy-source" in headers


def test_single_blob_by_connection_string(
    src_account, dst_account, src_container, dst_container, reports, make_spec, assert_no_secrets
):
    data = os.urandom(MiB + 3)
    src_container.upload_blob("one.bin", data, metadata={"origin": "src"})
    spec = spec_for(make_spec, src_container, dst_container, {"blob": "one.bin"}, verifyContentMD5=True)
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "s1")
    assert outcome.succeeded, outcome.failure
    blob = dst_container.get_blob_client("one.bin")
    assert blob.download_blob().readall() == data
    props = blob.get_blob_properties()
    assert props.metadata == {"origin": "src"}
    status = reports.merged()
    assert status["copyStatus"] == "success" and status["progress"] == f"{len(data)}/{len(data)}"
    assert status["copyId"] and str(props.copy.status) == "success"
    assert status["sourceETag"] == src_container.get_blob_client("one.bin").get_blob_properties().etag
    assert_no_secrets([str(p) for p in reports.patches], src_account.key, dst_account.key)


def test_single_blob_by_sas_url(src_account, dst_account, src_container, dst_container, reports, make_spec):
    data = os.urandom(200_000)
    src_container.upload_blob("sas.bin", data)
    sas = generate_blob_sas(
        src_account.name,
        src_container.container_name,
        "sas.bin",
        account_key=src_account.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    url = f"{src_container.get_blob_client('sas.bin').url}?{sas}"
    spec = make_spec(
        source={"urlSecretRef": {"name": "u", "key": "url"}},
        destination={"container": dst_container.container_name},
        mode="ServerSide",
    )
    outcome = run_copy(spec, None, endpoints(None, dst_account, url), reports, threading.Event(), "s2")
    assert outcome.succeeded, outcome.failure
    assert dst_container.get_blob_client("sas.bin").download_blob().readall() == data
    assert all(sas not in str(p) for p in reports.patches)


def test_prefix_preserves_blob_types(src_account, dst_account, src_container, dst_container, reports, make_spec):
    src_container.upload_blob("t/block.bin", os.urandom(300_000))
    page = src_container.get_blob_client("t/disk.vhd")
    page.create_page_blob(2 * MiB)
    page.upload_page(b"\x07" * 4096, offset=8192, length=4096)
    append = src_container.get_blob_client("t/log.txt")
    append.create_append_blob()
    append.append_block(b"first\n")
    append.append_block(b"second\n")
    spec = spec_for(make_spec, src_container, dst_container, {"prefix": "t/"}, destination={"prefix": "u/"})
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "s3")
    assert outcome.succeeded, outcome.failure
    for name, kind in (("block.bin", "blockblob"), ("disk.vhd", "pageblob"), ("log.txt", "appendblob")):
        copied = dst_container.get_blob_client(f"u/{name}")
        assert str(copied.get_blob_properties().blob_type).lower().endswith(kind)
        original = src_container.get_blob_client(f"t/{name}").download_blob().readall()
        assert copied.download_blob().readall() == original
    assert reports.merged()["blobs"] == {"total": 3, "pending": 0, "succeeded": 3, "failed": 0, "skipped": 0}


def test_source_changed_between_listing_and_copy(
    src_account, dst_account, src_container, dst_container, reports, make_spec, fault_proxy, proxied
):
    src_container.upload_blob("moving.bin", b"version one")
    source = src_container.get_blob_client("moving.bin")

    def rewrite_source_first(method: str, path: str, headers: dict[str, str]) -> None:
        if is_copy_blob(method, headers):  # Ferry has listed the source and pinned its ETag already
            source.upload_blob(b"version two", overwrite=True)

    fault_proxy.hook = rewrite_source_first
    # Both accounts behind the proxy: Azurite copies across accounts only when the hosts agree.
    ep = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    spec = spec_for(make_spec, src_container, dst_container, {"blob": "moving.bin"})
    outcome = run_copy(spec, None, ep, reports, threading.Event(), "s4")
    assert outcome.failure is not None and outcome.failure.reason == "SourceChanged"
    assert "412" in outcome.failure.message and "precondition failed" in outcome.failure.message
    assert reports.merged()["copyStatus"] == "failed"
    assert not dst_container.get_blob_client("moving.bin").exists()


def test_transient_errors_are_retried_and_recorded(
    src_account, dst_account, src_container, dst_container, reports, make_spec, fault_proxy, proxied
):
    data = os.urandom(50_000)
    src_container.upload_blob("busy.bin", data)
    dst_path = f"/{dst_account.name}/{dst_container.container_name}/"
    fault_proxy.fail_next(2, lambda method, path: method == "PUT" and dst_path in path and "comp=" not in path)
    ep = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    spec = spec_for(make_spec, src_container, dst_container, {"blob": "busy.bin"})
    outcome = run_copy(spec, None, ep, reports, threading.Event(), "s5")
    assert outcome.succeeded, outcome.failure
    assert dst_container.get_blob_client("busy.bin").download_blob().readall() == data
    assert fault_proxy.busy_left == 0
    description = reports.merged()["statusDescription"]
    assert "503" in description and "ServerBusy" in description and "2 retried" in description
    assert "sig=" not in description and "?" not in description


def test_leases_taken_and_released(
    src_account, dst_account, src_container, dst_container, reports, make_spec, fault_proxy, proxied
):
    src_container.upload_blob("locked.bin", b"z" * 5000)
    source = src_container.get_blob_client("locked.bin")
    dest = dst_container.get_blob_client("locked.bin")
    seen: list[tuple[str, str]] = []

    def lease_states_at_copy(method: str, path: str, headers: dict[str, str]) -> None:
        if is_copy_blob(method, headers):
            seen.append((str(source.get_blob_properties().lease.state), str(dest.get_blob_properties().lease.state)))

    fault_proxy.hook = lease_states_at_copy
    ep = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    spec = spec_for(
        make_spec, src_container, dst_container, {"blob": "locked.bin"}, lockSource=True, lockDestination=True
    )
    outcome = run_copy(spec, None, ep, reports, threading.Event(), "s6")
    assert outcome.succeeded, outcome.failure
    assert seen == [("leased", "leased")]  # both held while the service copied
    assert str(source.get_blob_properties().lease.state) == "available"
    assert str(dest.get_blob_properties().lease.state) == "available"
    assert dest.download_blob().readall() == b"z" * 5000


@pytest.mark.parametrize("lock_destination", [True, False])
def test_foreign_destination_lease_conflicts(
    src_account, dst_account, src_container, dst_container, reports, make_spec, lock_destination
):
    src_container.upload_blob("x.bin", b"source")
    dest = dst_container.upload_blob("x.bin", b"theirs")
    foreign = BlobLeaseClient(dest)
    foreign.acquire(lease_duration=-1)
    try:
        spec = spec_for(make_spec, src_container, dst_container, {"blob": "x.bin"}, lockDestination=lock_destination)
        outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "s7")
        assert outcome.failure is not None and outcome.failure.reason == "LeaseConflict"
        assert reports.merged()["copyStatus"] == "failed"
        assert dest.download_blob().readall() == b"theirs"
    finally:
        foreign.release()


def test_overwrite_policies(src_account, dst_account, src_container, dst_container, new_reports, make_spec):
    src_container.upload_blob("a.txt", b"source")
    dst_container.upload_blob("a.txt", b"destination, newer")
    ep = endpoints(src_account, dst_account)
    for mode in ("Never", "IfSourceNewer"):
        reports = new_reports()
        spec = spec_for(make_spec, src_container, dst_container, {"blob": "a.txt"}, overwrite=mode)
        assert run_copy(spec, None, ep, reports, threading.Event(), f"o-{mode}").succeeded
        assert reports.merged()["statusDescription"].startswith("skipped")
        assert reports.merged()["progress"] == "0/0"
        assert dst_container.get_blob_client("a.txt").download_blob().readall() == b"destination, newer"
    time.sleep(1.1)  # Last-Modified has one-second resolution
    src_container.upload_blob("a.txt", b"source, newest", overwrite=True)
    spec = spec_for(make_spec, src_container, dst_container, {"blob": "a.txt"}, overwrite="IfSourceNewer")
    assert run_copy(spec, None, ep, new_reports(), threading.Event(), "o-3").succeeded
    assert dst_container.get_blob_client("a.txt").download_blob().readall() == b"source, newest"
    spec = spec_for(make_spec, src_container, dst_container, {"blob": "a.txt"}, overwrite="Never")
    assert run_copy(spec, None, ep, new_reports(), threading.Event(), "o-4").succeeded
    assert dst_container.get_blob_client("a.txt").download_blob().readall() == b"source, newest"


def test_cleanup_releases_leases_and_is_idempotent(
    src_account, dst_account, src_container, dst_container, reports, make_spec, fault_proxy, proxied
):
    for name in ("c/1.bin", "c/2.bin"):
        src_container.upload_blob(name, os.urandom(10_000))
    stop = threading.Event()

    def stop_at_first_copy(method: str, path: str, headers: dict[str, str]) -> None:
        if is_copy_blob(method, headers):
            stop.set()  # the worker is told to stop while its first copy is being scheduled

    fault_proxy.hook = stop_at_first_copy
    ep = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    spec = spec_for(
        make_spec, src_container, dst_container, {"prefix": "c/"}, lockSource=True, lockDestination=True, parallelism=1
    )
    with pytest.raises(CopyStopped):
        run_copy(spec, None, ep, reports, stop, "s8")
    held = [
        blob
        for blob in (src_container.get_blob_client("c/1.bin"), dst_container.get_blob_client("c/1.bin"))
        if str(blob.get_blob_properties().lease.state) == "leased"
    ]
    assert len(held) == 2  # a stopped worker keeps its leases for the next run
    previous = BlobCopyStatus.model_validate(reports.merged())
    direct = endpoints(src_account, dst_account)
    cleanup(spec, previous, direct, reports, "s8")
    for blob in held:
        assert str(blob.get_blob_properties().lease.state) == "available"
    assert reports.patches[-1]["copyStatus"] == "aborted"  # nothing pending any more: no cleanup is needed again
    again = BlobCopyStatus.model_validate(reports.merged())
    cleanup(spec, again, direct, reports, "s8")  # idempotent: nothing left to release or abort
    assert reports.patches[-1]["copyStatus"] == "aborted"


def test_a_replaced_worker_takes_over_the_copy_its_predecessor_started(
    azurite: Azurite, src_account, dst_account, src_container, dst_container, reports, make_spec
):
    """The predecessor scheduled the copy, reported its id and was killed; the service went on and finished it."""
    data = os.urandom(300_000)
    source = src_container.upload_blob("done.bin", data)
    began = datetime.now(UTC) - timedelta(seconds=1)
    with AsyncCopyService(azurite.accounts).running() as service:
        destination = service.connection_string(dst_account)
        dest = BlobClient.from_connection_string(destination, dst_container.container_name, "done.bin")
        copy_id = dest.start_copy_from_url(read_url(src_account, source))["copy_id"]
        deadline = time.monotonic() + 30
        while str(dest.get_blob_properties().copy.status) != "success" and time.monotonic() < deadline:
            time.sleep(0.1)
        previous = BlobCopyStatus.model_validate({"copyId": copy_id, "copyStatus": "pending", "startTime": began})
        spec = spec_for(make_spec, src_container, dst_container, {"blob": "done.bin"})
        ep = Endpoints(src_account.connection_string, None, destination)
        outcome = run_copy(spec, previous, ep, reports, threading.Event(), "s9")
        assert outcome.succeeded, outcome.failure
        assert service.copy_requests("done.bin") == 1  # followed, not copied again
        assert reports.merged()["copyStatus"] == "success"
    assert dst_container.get_blob_client("done.bin").download_blob().readall() == data
