"""A BlobCopy spread over several worker pods (spec.workers), end to end: a helper's pod and then the coordinator's
force-deleted mid-copy, every blob copied, counts exact, the failures listed by `ferry blobcopy failures`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.storage.blob import ContainerClient
from blobcopy_fixtures import account_secrets, blob_bytes, blobcopy_manifest, new_container, storage_accounts, via_proxy

from ferry_dev.stack import DevStack
from integration.faultproxy import FaultProxy
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e

BLOBS = 2000
FAILING = {f"many/{i:04d}" for i in (7, 640, 1333, 1998)}


def _fill(container: ContainerClient, names: list[str]) -> dict[str, bytes]:
    data = {name: blob_bytes(64 + i % 50, i) for i, name in enumerate(names)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: container.upload_blob(name, data[name]), names))
    return data


def _copied(container: ContainerClient) -> int:
    return sum(1 for _ in container.list_blobs(name_starts_with="many/"))


def _story(kubectl: Kubectl, pods: list[str]) -> str:
    """What the copy and its workers said, for a failed assertion."""
    logs = [kubectl.run("logs", pod, "--tail", "20", check=False).stdout for pod in pods]
    return "\n".join([kubectl("get", "blobcopy", "spread", "-o", "yaml"), *logs])


def test_three_workers_helper_and_coordinator_force_deleted_copy_every_blob_once(
    stack: DevStack, kubectl: Kubectl
) -> None:
    src_account, dst_account = storage_accounts(stack)
    src, dst = new_container(src_account), new_container(dst_account)
    names = [f"many/{i:04d}" for i in range(BLOBS)]
    data = _fill(src, names)
    for name in FAILING:  # another copy's pending copy holds these destinations: they fail, the others go on
        dst.upload_blob(name, b"", metadata={"ferrycopyid": "other", "ferrycopykey": "o", "ferrycopystate": "pending"})
    proxy = FaultProxy(dst_account.blob_endpoint).start()
    try:
        # Each blob written takes a little while, so that the copy is caught in the middle.
        proxy.delay = 0.04
        proxy.delay_match = lambda method, path: method == "PUT" and "/many/" in path and "comp=" not in path
        account_secrets(kubectl, src_account.connection_string, via_proxy(proxy, dst_account))
        kubectl.apply(
            blobcopy_manifest(
                "spread",
                src,
                dst,
                mode="Stream",
                source={"prefix": "many/"},
                overwrite="IfSourceNewer",
                parallelism=4,
                workers=3,
            )
        )
        running = kubectl.wait_for(
            "blobcopy",
            "spread",
            lambda o: len([h for h in (o.get("status") or {}).get("helpers") or [] if h.get("pod")]) == 2,
        )
        pods = kubectl("get", "pods", "-l", "ferry.dev/role=copy", "-o", "name").split()
        assert len(pods) == 3, pods  # the coordinator and two helpers, each a worker slot
        deadline = time.monotonic() + 60
        while _copied(dst) < 400:
            assert time.monotonic() < deadline, _story(kubectl, pods)
            time.sleep(0.2)
        victim = running["status"]["helpers"][0]["pod"]
        kubectl("delete", "pod", victim, "--grace-period=0", "--force")
        assert _copied(dst) < BLOBS, "the copy finished before a worker could be deleted"
        # Then the coordinator, which lists the source and keeps the counts: its replacement resumes from the manifest.
        while _copied(dst) < 900:
            assert time.monotonic() < deadline, _story(kubectl, pods)
            time.sleep(0.2)
        coordinator = running["status"]["worker"]["pod"]
        kubectl("delete", "pod", coordinator, "--grace-period=0", "--force")
        assert _copied(dst) < BLOBS, "the copy finished before its coordinator could be deleted"

        status = kubectl.wait_phase("blobcopy", "spread", "Failed", timeout=110)["status"]
        # Read through the destination Secret, which names the proxy.
        printed = kubectl.ferry("blobcopy", "failures", "spread")
    finally:
        proxy.stop()
    assert status["blobs"] == {"total": BLOBS, "pending": 0, "succeeded": BLOBS - 4, "failed": 4, "skipped": 0}
    assert status["failure"]["reason"] == "PendingCopyConflict"
    assert status["failure"]["message"].startswith(f"4 of {BLOBS} blobs failed")
    with ThreadPoolExecutor(16) as pool:
        copied = dict(zip(names, pool.map(lambda name: dst.download_blob(name).readall(), names), strict=True))
    assert [n for n in names if n not in FAILING and copied[n] != data[n]] == []
    helper = next(h for h in status["helpers"] if h["index"] == 1)
    assert helper["restarts"] == 1, helper  # its vanishing was noticed (and it was replaced if still needed)
    assert status["worker"]["restarts"] == 1, status["worker"]
    assert all(name in printed for name in FAILING), printed
    assert printed.count("PendingCopyConflict") == 4, printed
