"""The local stack shared by the end-to-end tests: the real control plane, a real node (containerd and the
kubelet), the emulators, and Ferry installed with its chart (the operator as the chart's Deployment, workers as
containers of Ferry's image); a kubectl bound to a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from restore_fixtures import OwnCosmos

from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.emulators import CosmosServer
from ferry_dev.stack import DevStack
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
