"""What only a real control plane shows: the chart's RBAC is enough and no more, field ownership under
server-side apply, watches that expire, and an API server restart mid-copy. (The stack's own start and stop:
test_dev_stack_cleanup.py.)"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

from ferry_dev.install import OPERATOR_ACCOUNT, RELEASE_NAMESPACE, WORKER_ACCOUNT
from ferry_dev.stack import DevStack
from integration.faultproxy import FaultProxy
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024


def _can(kubectl: Kubectl, user: str, *request: str) -> bool:
    done = kubectl.run("auth", "can-i", *request, f"--as={user}", check=False)
    return done.stdout.strip() == "yes"


def test_the_chart_rbac_is_enough_and_no_more(kubectl: Kubectl) -> None:
    operator = f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_ACCOUNT}"
    worker = f"system:serviceaccount:{kubectl.namespace}:{WORKER_ACCOUNT}"
    # What the operator does (the suite passing shows it is enough), and what it must not do.
    assert _can(kubectl, operator, "create", "pods")
    assert _can(kubectl, operator, "patch", "blobcopies.ferry.dev", "--subresource=status")
    assert not _can(kubectl, operator, "get", "secrets")
    assert not _can(kubectl, operator, "list", "secrets")
    assert not _can(kubectl, operator, "update", "blobcopies.ferry.dev")
    assert not _can(kubectl, operator, "create", "blobcopies.ferry.dev")
    # Workers read their object and apply their part of its status: no Secrets, no pods, no specs.
    assert _can(kubectl, worker, "patch", "containercopyjobs.ferry.dev", "--subresource=status")
    assert not _can(kubectl, worker, "update", "containercopyjobs.ferry.dev", "--subresource=status")
    assert _can(kubectl, worker, "watch", "databaseaccounts.ferry.dev")
    assert not _can(kubectl, worker, "get", "secrets")
    assert not _can(kubectl, worker, "list", "pods")
    assert not _can(kubectl, worker, "patch", "blobcopies.ferry.dev")


def test_the_operator_reads_no_secret_with_its_own_token(stack: DevStack, kubectl: Kubectl) -> None:
    """From inside the operator's container, with the token the kubelet projected into it."""
    kubectl("create", "secret", "generic", "private", "--from-literal=k=v")
    program = (
        "from kubernetes import client, config; from kubernetes.client.exceptions import ApiException; "
        "config.load_incluster_config(); api = client.CoreV1Api()\n"
        f"try: api.read_namespaced_secret('private', {kubectl.namespace!r}); print('read')\n"
        "except ApiException as e: print(e.status)"
    )
    pod = stack.operator_pod()["metadata"]["name"]
    done = kubectl.run("exec", "-n", "ferry-system", pod, "--", "python", "-c", program, check=False)
    assert done.stdout.strip() == "403", done.stderr


def _accounts(stack: DevStack) -> tuple[Any, Any]:
    assert stack.azurite is not None
    return stack.azurite.accounts["ferrysrc"], stack.azurite.accounts["ferrydst"]


def _container(connection_string: str) -> ContainerClient:
    container = BlobServiceClient.from_connection_string(connection_string).get_container_client(
        f"c{uuid.uuid4().hex[:10]}"
    )
    container.create_container()
    return container


def _copy(
    kubectl: Kubectl,
    name: str,
    src: ContainerClient,
    dst: ContainerClient,
    blob: str,
    dst_secret: str = "dst",
    **spec: Any,
) -> None:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BlobCopy",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "account": {"secretRef": {"name": "src", "key": "cs"}},
                "container": src.container_name,
                "blob": blob,
            },
            "destination": {
                "account": {"secretRef": {"name": dst_secret, "key": "cs"}},
                "container": dst.container_name,
            },
            **spec,
        },
    }
    kubectl.apply(yaml.safe_dump(body))


def test_each_part_of_the_status_has_one_field_manager(stack: DevStack, kubectl: Kubectl) -> None:
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account.connection_string), _container(dst_account.connection_string)
    src.upload_blob("o.bin", b"owned")
    kubectl("create", "secret", "generic", "src", f"--from-literal=cs={src_account.connection_string}")
    kubectl("create", "secret", "generic", "dst", f"--from-literal=cs={dst_account.connection_string}")
    _copy(kubectl, "owned", src, dst, "o.bin")
    kubectl.wait_phase("blobcopy", "owned", "Succeeded")
    managed = json.loads(kubectl("get", "blobcopy", "owned", "-o", "json", "--show-managed-fields"))
    owners: dict[str, set[str]] = {}
    for entry in managed["metadata"]["managedFields"]:
        if entry.get("subresource") == "status":
            fields = entry["fieldsV1"].get("f:status", {})
            owners[entry["manager"]] = {key.removeprefix("f:") for key in fields if key.startswith("f:")}
    assert {"phase", "conditions", "completionTime", "worker"} <= owners["ferry-operator"]
    assert {"copyStatus", "progress", "bytesCopied"} <= owners["ferry-worker"]
    assert not owners["ferry-operator"] & owners["ferry-worker"]  # one owner per field


def _compact_etcd(stack: DevStack) -> int:
    """Compact etcd's history to now, so that every older resource version is gone for good."""
    assert stack.control_plane is not None
    base = f"http://127.0.0.1:{stack.control_plane.etcd_port}/v3/kv"
    with urllib.request.urlopen(urllib.request.Request(f"{base}/range", data=b'{"key":"AA=="}'), timeout=10) as r:
        revision = int(json.loads(r.read())["header"]["revision"])
    body = json.dumps({"revision": str(revision), "physical": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/compaction", data=body), timeout=30):
        pass
    return revision


def test_an_api_server_restart_and_expired_watches_mid_copy(stack: DevStack, kubectl: Kubectl) -> None:
    """The API server goes away for a few seconds mid-copy, and comes back with its history compacted: every
    watch resuming from before the compaction gets 410 Gone. The copy still finishes with the right data, and
    a copy created afterwards is still seen (the operator's watches started over)."""
    src_account, dst_account = _accounts(stack)
    src, dst = _container(src_account.connection_string), _container(dst_account.connection_string)
    data = os.urandom(10 * MiB)
    src.upload_blob("big.bin", data)
    src.upload_blob("after.bin", b"after")
    proxy = FaultProxy(dst_account.blob_endpoint).start()
    proxy.delay = 0.25  # slow enough to be mid-copy when the API server goes
    proxy.delay_match = lambda method, path: method == "PUT" and "comp=block" in path
    try:
        slow = dst_account.connection_string.replace(dst_account.blob_endpoint, proxy.endpoint(dst_account.name))
        kubectl("create", "secret", "generic", "src", f"--from-literal=cs={src_account.connection_string}")
        kubectl("create", "secret", "generic", "slow", f"--from-literal=cs={slow}")
        kubectl("create", "secret", "generic", "dst", f"--from-literal=cs={dst_account.connection_string}")
        _copy(kubectl, "through", src, dst, "big.bin", dst_secret="slow", mode="Stream", blockSizeMiB=1, parallelism=1)
        kubectl.wait_for(
            "blobcopy", "through", lambda o: ((o.get("status") or {}).get("bytesCopied") or 0) >= MiB, timeout=60
        )
        assert stack.control_plane is not None
        _compact_etcd(stack)
        stack.control_plane.restart_apiserver()
        kubectl.wait_phase("blobcopy", "through", "Succeeded", timeout=180)
        assert dst.download_blob("big.bin").readall() == data
        _copy(kubectl, "after", src, dst, "after.bin")
        kubectl.wait_phase("blobcopy", "after", "Succeeded", timeout=60)
        assert dst.download_blob("after.bin").readall() == b"after"
        # The outage is a few lines in the operator's log (one per watch and retry), never a traceback.
        assert "Traceback" not in stack.operator_log()
    finally:
        proxy.stop()
