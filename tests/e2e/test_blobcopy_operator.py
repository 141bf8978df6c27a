"""BlobCopy end to end: kubectl → API emulator → operator → worker pods (pod runner) → Azurite."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobServiceClient, BlobType, ContainerClient

from ferry_dev.emulators import StorageAccount
from ferry_dev.stack import DevStack
from integration.faultproxy import FaultProxy
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _blob(size: int, seed: int) -> bytes:
    return os.urandom(16)[:0] + bytes((i * 31 + seed) % 251 for i in range(size))


def _accounts(stack: DevStack) -> tuple[StorageAccount, StorageAccount]:
    assert stack.azurite is not None
    return stack.azurite.accounts["ferrysrc"], stack.azurite.accounts["ferrydst"]


def _container(account: StorageAccount, connection_string: str | None = None) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(connection_string or account.connection_string)
    container = service.get_container_client(f"c{uuid.uuid4().hex[:10]}")
    container.create_container()
    return container


def _via(proxy: FaultProxy, account: StorageAccount) -> str:
    """The account's connection string with its blob endpoint behind the fault proxy."""
    return re.sub(r"BlobEndpoint=[^;]+", f"BlobEndpoint={proxy.endpoint(account.name)}", account.connection_string)


def _secrets(kubectl: Kubectl, source: str, destination: str) -> None:
    kubectl("create", "secret", "generic", "src", f"--from-literal=connectionString={source}")
    kubectl("create", "secret", "generic", "dst", f"--from-literal=connectionString={destination}")


def _blobcopy(name: str, src: ContainerClient, dst: ContainerClient, **spec: Any) -> str:
    source: dict[str, Any] = {"account": {"secretRef": {"name": "src", "key": "connectionString"}}}
    source.update({"container": src.container_name, **spec.pop("source", {})})
    destination: dict[str, Any] = {"account": {"secretRef": {"name": "dst", "key": "connectionString"}}}
    destination.update({"container": dst.container_name, **spec.pop("destination", {})})
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BlobCopy",
        "metadata": {"name": name},
        "spec": {"source": source, "destination": destination, **spec},
    }
    return yaml.safe_dump(body)


@pytest.fixture
def slow_destination(stack: DevStack) -> Iterator[FaultProxy]:
    """A proxy in front of Azurite that delays each block written, so copies last long enough to interrupt."""
    _, dst = _accounts(stack)
    proxy = FaultProxy(dst.blob_endpoint).start()
    proxy.delay = 0.25
    proxy.delay_match = lambda method, path: method == "PUT" and "comp=block" in path
    yield proxy
    proxy.stop()


def test_single_blob_serverside_across_accounts(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    data = _blob(3 * MiB + 5, 1)
    src.upload_blob("in/report.pdf", data)
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)

    kubectl.apply(_blobcopy("one", src, dst, source={"blob": "in/report.pdf"}, destination={"blob": "out.pdf"}))
    obj = kubectl.wait_phase("blobcopy", "one", "Succeeded")

    status = obj["status"]
    assert status["copyStatus"] == "success"
    assert status["progress"] == f"{len(data)}/{len(data)}"
    assert status["bytesCopied"] == status["totalBytes"] == len(data)
    assert status["copyId"] and status["sourceETag"] and status["completionTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Complete"] == "True"
    assert dst.download_blob("out.pdf").readall() == data
    assert dst.get_blob_client("out.pdf").get_blob_properties().copy.id == status["copyId"]  # the service's id
    table = kubectl("get", "blobcopies")
    assert re.search(r"one\s+ServerSide\s+Succeeded\s+success\s+" + re.escape(status["progress"]), table), table


def test_prefix_stream_keeps_blob_types(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    blocks = {f"p/{i}.bin": _blob(300_000 + i, i) for i in range(3)}
    for name, data in blocks.items():
        src.upload_blob(name, data)
    page = src.get_blob_client("p/disk.vhd")
    page.create_page_blob(size=2 * MiB)
    page.upload_page(b"\x07" * 4096, offset=MiB, length=4096)
    append = src.get_blob_client("p/log.txt")
    append.create_append_blob()
    append.append_block(b"first\n")
    append.append_block(b"second\n")
    src.upload_blob("other/skip.bin", b"not under the prefix")
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)

    kubectl.apply(
        _blobcopy(
            "many", src, dst, mode="Stream", source={"prefix": "p/"}, destination={"prefix": "q/"}, blockSizeMiB=1
        )
    )
    status = kubectl.wait_phase("blobcopy", "many", "Succeeded")["status"]

    assert status["blobs"]["total"] == 5 and status["blobs"]["succeeded"] == 5
    for name, data in blocks.items():
        assert dst.download_blob("q/" + name[2:]).readall() == data
    disk = dst.get_blob_client("q/disk.vhd")
    assert disk.get_blob_properties().blob_type == BlobType.PAGEBLOB
    assert disk.download_blob().readall() == page.download_blob().readall()
    log = dst.get_blob_client("q/log.txt")
    assert log.get_blob_properties().blob_type == BlobType.APPENDBLOB
    assert log.download_blob().readall() == b"first\nsecond\n"
    assert [b.name for b in dst.list_blobs(name_starts_with="q/other")] == []


def test_invalid_specs_are_refused_by_the_api(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    bad_mode = kubectl.run("apply", "-f", "-", stdin=_blobcopy("bad", src, dst, mode="Fast"), check=False)
    assert bad_mode.returncode != 0
    assert 'Unsupported value: "Fast"' in bad_mode.stderr
    two_sources = _blobcopy("two", src, dst, source={"url": "https://example.org/x"})
    refused = kubectl.run("apply", "-f", "-", stdin=two_sources, check=False)
    assert refused.returncode != 0
    assert "exactly one of url, urlSecretRef or account must be set" in refused.stderr
    assert kubectl.run("get", "blobcopy", "bad", check=False).returncode != 0


def test_spec_is_immutable_except_suspend(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(_blobcopy("frozen", src, dst, source={"blob": "absent"}, suspend=True))
    changed = kubectl.run(
        "patch", "blobcopy", "frozen", "--type=merge", "-p", '{"spec":{"source":{"blob":"other"}}}', check=False
    )
    assert changed.returncode != 0 and "source is immutable" in changed.stderr
    kubectl("patch", "blobcopy", "frozen", "--type=merge", "-p", '{"spec":{"suspend":false}}')


def test_missing_secret_is_reported_then_recovers(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    src.upload_blob("a.bin", b"hello")
    kubectl.apply(_blobcopy("nosecret", src, dst, source={"blob": "a.bin"}))
    obj = kubectl.wait_for(
        "blobcopy", "nosecret", lambda o: "src" in ((o.get("status") or {}).get("statusDescription") or "")
    )
    assert obj["status"]["phase"] == "Pending"
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=nosecret", "-o", "yaml")
    assert "reason: WorkerConfigError" in events
    assert 'secret "src" not found' in kubectl("describe", "blobcopy", "nosecret")
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.wait_phase("blobcopy", "nosecret", "Succeeded")
    assert dst.download_blob("a.bin").readall() == b"hello"


def _wait_bytes(kubectl: Kubectl, name: str, minimum: int = 1) -> dict[str, Any]:
    return kubectl.wait_for(
        "blobcopy", name, lambda o: ((o.get("status") or {}).get("bytesCopied") or 0) >= minimum, timeout=60
    )


def _slow_stream(
    stack: DevStack, kubectl: Kubectl, proxy: FaultProxy, name: str, mib: int, seed: int, **spec: Any
) -> tuple[ContainerClient, bytes]:
    """Start a Stream copy of one blob, one 1 MiB block at a time, into a destination behind the delaying proxy:
    slow enough to interrupt. Returns the destination container and the source bytes."""
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    data = _blob(mib * MiB, seed)
    src.upload_blob("big.bin", data)
    _secrets(kubectl, src_account.connection_string, _via(proxy, dst_account))
    kubectl.apply(
        _blobcopy(name, src, dst, mode="Stream", source={"blob": "big.bin"}, blockSizeMiB=1, parallelism=1, **spec)
    )
    return dst, data


def test_killed_worker_is_replaced_and_the_copy_resumes(
    stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy
) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "resume", 16, 3)
    first = _wait_bytes(kubectl, "resume", 2 * MiB)
    pod = first["status"]["workerPod"]
    assert stack.runner.kill_pod_process(kubectl.namespace, pod, signal.SIGKILL)

    status = kubectl.wait_phase("blobcopy", "resume", "Succeeded", timeout=120)["status"]
    assert status["workerRestarts"] == 1
    assert dst.download_blob("big.bin").readall() == data
    staged = slow_destination.requests("PUT", "comp=block&")
    assert staged <= 16 + 2, f"{staged} blocks sent for 16: staged blocks were sent again"


def test_operator_restart_mid_copy(stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "oprestart", 12, 4)
    _wait_bytes(kubectl, "oprestart", MiB)
    stack.stop_operator(signal.SIGKILL)
    time.sleep(1)
    stack.start_operator()
    status = kubectl.wait_phase("blobcopy", "oprestart", "Succeeded", timeout=120)["status"]
    assert dst.download_blob("big.bin").readall() == data
    assert status["copyStatus"] == "success"


def test_suspend_pauses_and_resume_finishes(stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "pause", 10, 5)
    _wait_bytes(kubectl, "pause", MiB)
    kubectl("patch", "blobcopy", "pause", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    kubectl.wait_phase("blobcopy", "pause", "Paused")
    deadline = time.monotonic() + 30
    while "Running" in kubectl("get", "pods") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "Running" not in kubectl("get", "pods")
    kubectl("patch", "blobcopy", "pause", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    kubectl.wait_phase("blobcopy", "pause", "Succeeded", timeout=120)
    assert dst.download_blob("big.bin").readall() == data


def test_delete_aborts_the_pending_copy(stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy) -> None:
    dst, _ = _slow_stream(stack, kubectl, slow_destination, "gone", 12, 6)
    _wait_bytes(kubectl, "gone", MiB)
    kubectl("delete", "blobcopy", "gone", "--wait=false")
    kubectl.wait_gone("blobcopy", "gone", timeout=90)
    left = dst.get_blob_client("big.bin")
    assert left.get_blob_properties().size == 0
    assert left.get_block_list("uncommitted")[1] == []
    deadline = time.monotonic() + 30
    while kubectl("get", "pods", "-o", "name").strip() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert kubectl("get", "pods", "-o", "name").strip() == ""


def test_secrets_never_leak_and_metrics_are_served(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    src.upload_blob("s.bin", b"secret-free")
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(_blobcopy("leakcheck", src, dst, source={"blob": "s.bin"}))
    kubectl.wait_phase("blobcopy", "leakcheck", "Succeeded")

    texts = [
        kubectl("get", "blobcopies", "-A", "-o", "yaml"),
        kubectl("get", "events", "-A", "-o", "yaml"),
        (stack.logs / "operator.log").read_text(errors="replace"),
    ]
    texts += [p.read_text(errors="replace") for p in (stack.dir / "pods").rglob("*.log")]
    for account in (src_account, dst_account):
        for text in texts:
            assert account.key not in text
            assert "AccountKey=" not in text
            assert "sig=" not in text

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    succeeded = re.search(r'^ferry_blobcopies\{phase="Succeeded"\} (\d+)', metrics, re.M)
    assert succeeded and int(float(succeeded.group(1))) >= 1
    copied = re.search(r"^ferry_blobcopy_bytes_copied_total (\S+)", metrics, re.M)
    assert copied and float(copied.group(1)) > 0
    assert "ferry_blobcopy_duration_seconds_count" in metrics


def test_worker_logs_through_kubectl(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account), _container(dst_account)
    _secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(_blobcopy("nosource", src, dst, source={"blob": "does-not-exist"}))
    status = kubectl.wait_phase("blobcopy", "nosource", "Failed")["status"]
    assert status["failure"]["reason"] == "SourceNotFound"
    assert "blob does-not-exist in container" in status["failure"]["message"]
    pods = kubectl("get", "pods", "-l", "ferry.dev/role=copy", "-o", "name").split()
    assert pods
    assert kubectl("logs", pods[0]) != ""


def test_copy_pending_past_max_lifetime_is_terminated(
    stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy
) -> None:
    dst, _ = _slow_stream(stack, kubectl, slow_destination, "expires", 16, 7, maxLifetime="2s")
    status = kubectl.wait_phase("blobcopy", "expires", "Failed", timeout=60)["status"]
    assert status["failure"]["reason"] == "MaxLifetimeExceeded"
    assert "2s" in status["failure"]["message"]
    left = dst.get_blob_client("big.bin")
    assert left.get_blob_properties().size == 0  # left as the service leaves a terminated copy: empty
    assert left.get_block_list("uncommitted")[1] == []
