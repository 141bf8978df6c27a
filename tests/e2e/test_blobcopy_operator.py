"""BlobCopy end to end: kubectl → kube-apiserver → operator → worker pods (containers on the kubelet) → Azurite."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobSasPermissions, BlobType, ContainerClient, generate_blob_sas
from blobcopy_fixtures import (
    account_secrets,
    blob_bytes,
    blobcopy_manifest,
    new_container,
    scrape_metrics,
    storage_accounts,
    via_proxy,
)
from kubernetes import client, config, watch

from e2e.conftest import MAX_WORKERS_PER_NAMESPACE
from ferry_dev.stack import DevStack
from integration.faultproxy import FaultProxy
from support.kubectl import Kubectl, with_reasons

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
COPIES = 10 * MAX_WORKERS_PER_NAMESPACE  # BlobCopies applied at once


class PodCounter:
    """Watches a namespace's copy worker pods and keeps the largest number running or starting at once."""

    def __init__(self, stack: DevStack, namespace: str) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))
        self.namespace = namespace
        self.peak = 0
        self._active: set[str] = set()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when stop() closes it
            self._follow()

    def _follow(self) -> None:
        for event in self._watch.stream(
            self.api.list_namespaced_pod, self.namespace, label_selector="ferry.dev/role=copy", timeout_seconds=600
        ):
            pod = event["object"]
            finished = pod.status is not None and pod.status.phase in ("Succeeded", "Failed")
            if event["type"] == "DELETED" or finished:
                self._active.discard(pod.metadata.name)
            else:
                self._active.add(pod.metadata.name)
            self.peak = max(self.peak, len(self._active))

    def stop(self) -> int:
        self._watch.stop()
        return self.peak


@pytest.fixture
def slow_destination(stack: DevStack) -> Iterator[FaultProxy]:
    """A proxy in front of Azurite that delays each block written, so copies last long enough to interrupt."""
    _, dst = storage_accounts(stack)
    proxy = FaultProxy(dst.blob_endpoint).start()
    proxy.delay = 0.25
    proxy.delay_match = lambda method, path: method == "PUT" and "comp=block" in path
    yield proxy
    proxy.stop()


def test_single_blob_serverside_across_accounts(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    data = blob_bytes(3 * MiB + 5, 1)
    src.upload_blob("in/report.pdf", data)
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)

    kubectl.apply(blobcopy_manifest("one", src, dst, source={"blob": "in/report.pdf"}, destination={"blob": "out.pdf"}))
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
    kubectl.wait_condition("blobcopy", "one", "Ready")  # as a pipeline waits for it
    assert kubectl.kstatus("blobcopy", "one") == "Current"  # as Flux reads it


def test_prefix_stream_keeps_blob_types(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    blocks = {f"p/{i}.bin": blob_bytes(300_000 + i, i) for i in range(3)}
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
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)

    kubectl.apply(
        blobcopy_manifest(
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
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    bad_mode = kubectl.run("apply", "-f", "-", stdin=blobcopy_manifest("bad", src, dst, mode="Fast"), check=False)
    assert bad_mode.returncode != 0
    assert 'Unsupported value: "Fast"' in bad_mode.stderr
    two_sources = blobcopy_manifest("two", src, dst, source={"url": "https://example.org/x"})
    refused = kubectl.run("apply", "-f", "-", stdin=two_sources, check=False)
    assert refused.returncode != 0
    assert "exactly one of url, urlSecretRef or account must be set" in refused.stderr
    assert kubectl.run("get", "blobcopy", "bad", check=False).returncode != 0


def test_spec_is_immutable_except_suspend(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(blobcopy_manifest("frozen", src, dst, source={"blob": "absent"}, suspend=True))
    changed = kubectl.run(
        "patch", "blobcopy", "frozen", "--type=merge", "-p", '{"spec":{"source":{"blob":"other"}}}', check=False
    )
    assert changed.returncode != 0 and "source is immutable" in changed.stderr
    kubectl("patch", "blobcopy", "frozen", "--type=merge", "-p", '{"spec":{"suspend":false}}')


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}.get(kind) or {}


def test_missing_secret_is_reported_then_recovers(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("a.bin", b"hello")
    kubectl.apply(blobcopy_manifest("nosecret", src, dst, source={"blob": "a.bin"}))
    obj = kubectl.wait_for(
        "blobcopy", "nosecret", lambda o: _condition(o, "WorkerReady").get("reason") == "ConfigError"
    )
    assert obj["status"]["phase"] == "Pending"
    assert 'secret "src" not found' in _condition(obj, "WorkerReady")["message"]
    kubectl.events("nosecret", with_reasons("ConfigError"))
    assert 'secret "src" not found' in kubectl("describe", "blobcopy", "nosecret")
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.wait_phase("blobcopy", "nosecret", "Succeeded")
    assert dst.download_blob("a.bin").readall() == b"hello"


def test_an_object_whose_secret_is_missing_can_be_deleted(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    kubectl.apply(blobcopy_manifest("orphan", src, dst, source={"blob": "a.bin"}))
    kubectl.wait_for("blobcopy", "orphan", lambda o: _condition(o, "WorkerReady").get("reason") == "ConfigError")
    started = time.monotonic()
    kubectl("delete", "blobcopy", "orphan", "--wait=false")
    kubectl.wait_gone("blobcopy", "orphan", timeout=30)
    assert time.monotonic() - started < 20
    assert "cleanup" not in kubectl("get", "pods", "-o", "name")  # nothing was started, nothing to clean up


def _wait_bytes(kubectl: Kubectl, name: str, minimum: int = 1) -> dict[str, Any]:
    return kubectl.wait_for(
        "blobcopy", name, lambda o: ((o.get("status") or {}).get("bytesCopied") or 0) >= minimum, timeout=60
    )


def _slow_stream(
    stack: DevStack, kubectl: Kubectl, proxy: FaultProxy, name: str, mib: int, seed: int, **spec: Any
) -> tuple[ContainerClient, bytes]:
    """Start a Stream copy of one blob, one 1 MiB block at a time, into a destination behind the delaying proxy:
    slow enough to interrupt. Returns the destination container and the source bytes."""
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    data = blob_bytes(mib * MiB, seed)
    src.upload_blob("big.bin", data)
    account_secrets(kubectl, src_account.connection_string, via_proxy(proxy, dst_account))
    kubectl.apply(
        blobcopy_manifest(
            name, src, dst, mode="Stream", source={"blob": "big.bin"}, blockSizeMiB=1, parallelism=1, **spec
        )
    )
    return dst, data


def test_killed_worker_is_replaced_and_the_copy_resumes(
    stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy
) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "resume", 16, 3)
    first = _wait_bytes(kubectl, "resume", 2 * MiB)
    pod = first["status"]["worker"]["pod"]
    assert stack.kill_pod(kubectl.namespace, pod, signal.SIGKILL)

    status = kubectl.wait_phase("blobcopy", "resume", "Succeeded", timeout=120)["status"]
    assert status["worker"]["restarts"] == 1 and status["worker"]["attempts"] == 2
    assert dst.download_blob("big.bin").readall() == data
    staged = slow_destination.requests("PUT", "comp=block&")
    assert staged <= 16 + 2, f"{staged} blocks sent for 16: staged blocks were sent again"


def test_operator_restart_mid_copy(stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "oprestart", 12, 4)
    _wait_bytes(kubectl, "oprestart", MiB)
    stack.restart_operator(signal.SIGKILL)
    status = kubectl.wait_phase("blobcopy", "oprestart", "Succeeded", timeout=120)["status"]
    assert dst.download_blob("big.bin").readall() == data
    assert status["copyStatus"] == "success"


def test_suspend_pauses_and_resume_finishes(stack: DevStack, kubectl: Kubectl, slow_destination: FaultProxy) -> None:
    dst, data = _slow_stream(stack, kubectl, slow_destination, "pause", 10, 5)
    _wait_bytes(kubectl, "pause", MiB)
    assert kubectl.kstatus("blobcopy", "pause") == "InProgress"
    kubectl("patch", "blobcopy", "pause", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    kubectl.wait_phase("blobcopy", "pause", "Pausing", timeout=10)  # the worker is still checkpointing
    kubectl.wait_phase("blobcopy", "pause", "Paused")
    pods = json.loads(kubectl("get", "pods", "-o", "json"))["items"]
    running = [p for p in pods for s in p["status"].get("containerStatuses") or [] if "running" in s.get("state", {})]
    assert running == []  # Paused only once the worker has stopped
    assert kubectl.kstatus("blobcopy", "pause") == "Current", kubectl.kstatus_message  # paused on purpose
    paused = _wait_bytes(kubectl, "pause", MiB)["status"]["bytesCopied"]
    time.sleep(2)
    assert kubectl.get("blobcopy", "pause")["status"]["bytesCopied"] == paused  # nothing moves while paused
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
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("s.bin", b"secret-free")
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(blobcopy_manifest("leakcheck", src, dst, source={"blob": "s.bin"}))
    kubectl.wait_phase("blobcopy", "leakcheck", "Succeeded")

    texts = [
        kubectl("get", "blobcopies", "-A", "-o", "yaml"),
        kubectl("get", "events", "-A", "-o", "yaml"),
        stack.operator_log(),
    ]
    texts += [p.read_text(errors="replace") for p in (stack.dir / "node" / "pod-logs").rglob("*.log")]
    for account in (src_account, dst_account):
        for text in texts:
            assert account.key not in text
            assert "AccountKey=" not in text
            assert "sig=" not in text

    metrics = scrape_metrics(stack)
    succeeded = re.search(r'^ferry_objects\{kind="BlobCopy",phase="Succeeded"\} (\S+)', metrics, re.M)
    assert succeeded and int(float(succeeded.group(1))) >= 1
    copied = re.search(r"^ferry_blobcopy_bytes_copied_total (\S+)", metrics, re.M)
    assert copied and float(copied.group(1)) > 0
    assert "ferry_blobcopy_duration_seconds_count" in metrics


def test_a_permanent_error_is_reported_with_its_cause_and_not_retried(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(blobcopy_manifest("nosource", src, dst, source={"blob": "does-not-exist"}))
    status = kubectl.wait_phase("blobcopy", "nosource", "Failed")["status"]
    assert status["failure"]["reason"] == "SourceNotFound"
    assert "blob does-not-exist in container" in status["failure"]["message"]
    assert status["worker"] == {"attempts": 1, "restarts": 0}  # one worker, no retry
    assert kubectl.kstatus("blobcopy", "nosource") == "Failed"  # a GitOps tool fails instead of waiting
    pods = kubectl("get", "pods", "-l", "ferry.dev/role=copy", "-o", "name").split()
    assert pods == ["pod/nosource-copy-1"]  # kept for its log, which `kubectl logs` reaches through the node
    assert "SourceNotFound" in kubectl("logs", pods[0])


def test_bidirectional_characters_of_a_name_are_escaped_in_status_and_events(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    # The name shows as "invoiceexe.pdf".
    kubectl.apply(blobcopy_manifest("sneaky", src, dst, source={"blob": "invoice\u202efdp.exe"}))
    message = kubectl.wait_phase("blobcopy", "sneaky", "Failed")["status"]["failure"]["message"]
    assert "invoice\\u202efdp.exe" in message and "\u202e" not in message
    events = kubectl.events("sneaky", lambda events: any("\\u202e" in e["message"] for e in events))
    shown = [e["message"] for e in events]
    assert any("\\u202e" in m for m in shown) and not any("\u202e" in m for m in shown)


def test_a_copy_onto_itself_through_two_secrets_fails_with_a_reason_that_says_so(
    stack: DevStack, kubectl: Kubectl
) -> None:
    src_account, _ = storage_accounts(stack)
    src = new_container(src_account)
    src.upload_blob("same.bin", b"x" * 1000)
    account_secrets(kubectl, src_account.connection_string, src_account.connection_string)  # one account, two Secrets
    kubectl.apply(blobcopy_manifest("itself", src, src, source={"blob": "same.bin"}, lockSource=True))
    failure = kubectl.wait_phase("blobcopy", "itself", "Failed")["status"]["failure"]
    assert failure["reason"] == "DestinationIsSource" and "same.bin" in failure["message"]
    assert src.get_blob_client("same.bin").download_blob().readall() == b"x" * 1000


def test_a_namespace_without_the_worker_account_gets_it_from_the_operator(stack: DevStack) -> None:
    """No workerNamespaces entry for it: the operator makes the worker account, bound to the chart's worker role,
    and the copy runs under it (the operator itself runs under the chart's RBAC)."""
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("anywhere.bin", b"y" * 2048)
    namespace = f"bare-{uuid.uuid4().hex[:8]}"
    stack.create_namespace(namespace, worker_account=False)
    kubectl = Kubectl(stack, namespace)
    try:
        assert kubectl.run("get", "serviceaccount", "ferry-worker", check=False).returncode != 0
        account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
        kubectl.apply(blobcopy_manifest("anywhere", src, dst, source={"blob": "anywhere.bin"}))
        kubectl.wait_phase("blobcopy", "anywhere", "Succeeded", timeout=90)
        assert dst.get_blob_client("anywhere.bin").download_blob().readall() == b"y" * 2048
        account = kubectl.get("serviceaccount", "ferry-worker")
        assert account["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ferry"
        binding = kubectl.get("rolebinding", "ferry-worker")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ferry-worker",
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-worker", "namespace": namespace}]
        again = blobcopy_manifest("again", src, dst, source={"blob": "anywhere.bin"}, destination={"blob": "2.bin"})
        kubectl.apply(again)
        kubectl.wait_phase("blobcopy", "again", "Succeeded", timeout=90)  # the account exists: nothing to make
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_worker_pod_the_api_server_refuses_is_reported_then_started(stack: DevStack, kubectl: Kubectl) -> None:
    """A namespace quota of no pods: the refusal reaches the status and Events; lifting it lets the copy run."""
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("q.bin", b"after the quota")
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    kubectl.apply(yaml.safe_dump(quota))
    kubectl.wait_for("resourcequota", "no-pods", lambda o: bool((o.get("status") or {}).get("hard")), timeout=30)
    kubectl.apply(blobcopy_manifest("quota", src, dst, source={"blob": "q.bin"}))

    refused = kubectl.wait_for(
        "blobcopy", "quota", lambda o: "exceeded quota" in _condition(o, "WorkerReady").get("message", ""), timeout=60
    )
    ready = _condition(refused, "WorkerReady")
    assert ready["status"] == "False" and "refused to create pod" in ready["message"] and "no-pods" in ready["message"]
    kubectl.events("quota", lambda events: any("exceeded quota" in e["message"] for e in events), "type=Warning")
    kubectl("delete", "resourcequota", "no-pods")
    kubectl.wait_phase("blobcopy", "quota", "Succeeded", timeout=60)
    assert dst.download_blob("q.bin").readall() == b"after the quota"


def test_a_missing_url_source_fails_like_a_missing_blob(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    token = generate_blob_sas(
        src_account.name,
        src.container_name,
        "absent.bin",
        account_key=src_account.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    sas = f"{src.url}/absent.bin?{token}"  # a SAS URL to a blob that is not there (deleted, or a typo)
    kubectl("create", "secret", "generic", "dst", f"--from-literal=connectionString={dst_account.connection_string}")
    kubectl("create", "secret", "generic", "sas", f"--from-literal=url={sas}")
    body = yaml.safe_load(blobcopy_manifest("nourl", src, dst, destination={"blob": "x.bin"}))
    body["spec"]["source"] = {"urlSecretRef": {"name": "sas", "key": "url"}}
    kubectl.apply(yaml.safe_dump(body))
    status = kubectl.wait_phase("blobcopy", "nourl", "Failed")["status"]
    assert status["failure"]["reason"] == "SourceNotFound" and "404" in status["failure"]["message"]
    assert "sig=" not in status["failure"]["message"]  # the SAS stays secret
    assert status["worker"]["restarts"] == 0


def test_a_transient_failure_is_retried_with_its_cause_shown(stack: DevStack, kubectl: Kubectl) -> None:
    """The destination refuses every request (503) for a while: the status says why the worker is replaced."""
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("t.bin", b"later")
    proxy = FaultProxy(dst_account.blob_endpoint).start()
    try:
        proxy.fail_next(1_000_000, lambda method, path: True)
        account_secrets(kubectl, src_account.connection_string, via_proxy(proxy, dst_account))
        kubectl.apply(blobcopy_manifest("flaky", src, dst, mode="Stream", source={"blob": "t.bin"}))
        retrying = kubectl.wait_for(
            "blobcopy", "flaky", lambda o: _condition(o, "WorkerReady").get("reason") == "Retrying", timeout=90
        )
        assert "503" in _condition(retrying, "WorkerReady")["message"]
        proxy.fail_next(0, lambda method, path: True)
        status = kubectl.wait_phase("blobcopy", "flaky", "Succeeded", timeout=120)["status"]
        assert status["worker"]["restarts"] >= 1
    finally:
        proxy.stop()
    assert dst.download_blob("t.bin").readall() == b"later"


def test_forty_copies_at_once_all_succeed_within_the_worker_limit(stack: DevStack, kubectl: Kubectl) -> None:
    """Ten times the namespace's worker limit (the operator's scale to 1,000 objects is bench/operator_scale.py)."""
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    for i in range(COPIES):
        src.upload_blob(f"b{i}.bin", f"blob {i}".encode())
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    manifests = [blobcopy_manifest(f"c{i}", src, dst, source={"blob": f"b{i}.bin"}) for i in range(COPIES)]
    watcher = PodCounter(stack, kubectl.namespace)
    try:
        kubectl.apply("---\n".join(manifests))
        waiting = kubectl.wait_for(
            "blobcopy", f"c{COPIES - 1}", lambda o: _condition(o, "WorkerReady").get("reason") == "WaitingForWorkerSlot"
        )
        assert "worker slot" in _condition(waiting, "WorkerReady")["message"]
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            listed = json.loads(kubectl("get", "blobcopies", "-o", "json"))["items"]
            if all((b.get("status") or {}).get("phase") == "Succeeded" for b in listed):
                break
            time.sleep(2)
        phases = Counter((b.get("status") or {}).get("phase") for b in listed)
        assert phases == {"Succeeded": COPIES}, phases
    finally:
        peak = watcher.stop()
    assert 1 < peak <= MAX_WORKERS_PER_NAMESPACE, peak
    for i in (0, COPIES // 2, COPIES - 1):
        assert dst.download_blob(f"b{i}.bin").readall() == f"blob {i}".encode()


def test_an_operator_restart_does_not_count_finished_work_again(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("m.bin", b"m" * 4096)
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    kubectl.apply(blobcopy_manifest("counted", src, dst, source={"blob": "m.bin"}))
    kubectl.wait_phase("blobcopy", "counted", "Succeeded")
    stack.restart_operator(signal.SIGTERM)
    deadline = time.monotonic() + 60
    metrics = ""
    while time.monotonic() < deadline:  # until the new operator has looked at every object
        with contextlib.suppress(OSError):
            metrics = scrape_metrics(stack)
            if re.search(r'^ferry_objects\{kind="BlobCopy",phase="Succeeded"\} [1-9]', metrics, re.M):
                break
        time.sleep(0.5)
    copied = re.search(r"^ferry_blobcopy_bytes_copied_total (\S+)", metrics, re.M)
    durations = re.search(r"^ferry_blobcopy_duration_seconds_count (\S+)", metrics, re.M)
    assert copied and float(copied.group(1)) == 0.0, "finished copies were counted again after the restart"
    assert durations and float(durations.group(1)) == 0.0


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


def test_a_long_name_still_gets_its_worker_and_events(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    src.upload_blob("l.bin", b"long")
    account_secrets(kubectl, src_account.connection_string, dst_account.connection_string)
    name = ("a" * 62 + ".") * 4 + "b"  # 253 characters, the longest name Kubernetes allows
    assert len(name) == 253
    kubectl.apply(blobcopy_manifest(name, src, dst, source={"blob": "l.bin"}))
    kubectl.wait_phase("blobcopy", name, "Succeeded")
    kubectl.events(name, with_reasons("Copied"))
    assert dst.download_blob("l.bin").readall() == b"long"
