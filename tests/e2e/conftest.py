"""The local stack shared by the end-to-end tests: the real control plane, a real node (containerd and the
kubelet), the emulators, and Ferry installed with its chart (the operator as the chart's Deployment, workers as
containers of Ferry's image); a kubectl bound to a fresh namespace."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from identity_fixtures import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID
from restore_fixtures import OwnCosmos

from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.controlplane import ISSUER
from ferry_dev.emulators import Azurite, CosmosServer
from ferry_dev.stack import DevStack
from support.entra import EntraStandIn
from support.kubectl import Kubectl

# Small worker-slot limits, so that the tests see objects wait in line (and the machine is not flooded).
MAX_WORKERS = 6
MAX_WORKERS_PER_NAMESPACE = 4


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    directory: Path = tmp_path_factory.mktemp("stack")
    values = {
        "workers": {"maxConcurrent": MAX_WORKERS, "maxConcurrentPerNamespace": MAX_WORKERS_PER_NAMESPACE},
        "backup": {"allowRetentionOverride": True},  # the retention test prunes a window of seconds
        "workerServiceAccount": {
            "annotations": {
                "azure.workload.identity/client-id": DEFAULT_CLIENT_ID,
                "azure.workload.identity/tenant-id": DEFAULT_TENANT_ID,
            }
        },
    }
    with DevStack(directory, values=values) as running:
        yield running


@pytest.fixture
def kubectl(stack: DevStack) -> Iterator[Kubectl]:
    """A kubectl bound to a fresh namespace (restricted Pod Security, the chart's worker account)."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    stack.create_namespace(namespace)
    client = Kubectl(stack, namespace)
    yield client
    client.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def entra(stack: DevStack) -> Iterator[EntraStandIn]:
    """The Entra stand-in on the address the chart's workloadIdentity.authorityHost names."""
    assert stack.control_plane is not None and stack.control_plane.authority is not None
    assert stack.network is not None
    gateway = stack.network.gateway
    pair = stack.control_plane.authority.issue(f"entra-{uuid.uuid4().hex[:6]}", "entra", hosts=(gateway,), server=True)

    def issuer_keys() -> dict[str, Any]:
        done = subprocess.run(
            [kubectl_binary(), "get", "--raw", "/openid/v1/jwks"], env=stack.env(), capture_output=True, check=True
        )
        keys: dict[str, Any] = json.loads(done.stdout)
        return keys

    standin = EntraStandIn(gateway, stack.entra_port, pair.cert, pair.key, ISSUER, issuer_keys).start()
    yield standin
    standin.stop()


@pytest.fixture
def oauth_azurite(stack: DevStack, tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite of the test's own in OAuth mode: HTTPS with a certificate of the stack's CA (which the workers'
    storage clients trust: workers.storageCAFile), accepting the Entra stand-in's tokens."""
    assert stack.control_plane is not None and stack.control_plane.authority is not None
    assert stack.network is not None
    gateway = stack.network.gateway
    name = f"azurite-{uuid.uuid4().hex[:6]}"
    pair = stack.control_plane.authority.issue(name, "azurite", hosts=(gateway,), server=True)
    tls = (pair.cert, pair.key, stack.control_plane.authority.cert)
    with Azurite(tmp_path / "azurite", accounts=("idsrc", "iddst"), host=gateway, tls=tls) as azurite:
        yield azurite


def _own_cosmos(path: Path, all_versions: bool) -> Iterator[OwnCosmos]:
    with CosmosServer(path) as server:
        feed = ChangeFeedProxy(server.endpoint.endpoint, server.endpoint.key, ranges=2, all_versions=all_versions)
        feed.start()
        try:
            yield OwnCosmos(server, feed.endpoint)
        finally:
            feed.stop()


@pytest.fixture
def cosmos(tmp_path: Path) -> Iterator[OwnCosmos]:
    """A cosmosdb-server of the test's own (a backup captures the whole account, and only this test's data),
    through the change feed stand-in, with the all-versions-and-deletes feed."""
    yield from _own_cosmos(tmp_path / "cosmos", all_versions=True)


@pytest.fixture
def swept_cosmos(tmp_path: Path) -> Iterator[OwnCosmos]:
    """The same without the all-versions-and-deletes feed: deletions are swept, and captures that stop for a
    while leave a gap (the latest-version feed keeps only the newest of what changed meanwhile)."""
    yield from _own_cosmos(tmp_path / "cosmos", all_versions=False)


@pytest.fixture(params=[True, False], ids=["deletes-feed", "deletion-sweep"])
def either_cosmos(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OwnCosmos]:
    """The same, with the all-versions-and-deletes feed and without it (deletions swept)."""
    yield from _own_cosmos(tmp_path / "cosmos", all_versions=bool(request.param))
