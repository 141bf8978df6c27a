"""The local stack shared by the operator end-to-end tests, and a kubectl that talks to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    directory: Path = tmp_path_factory.mktemp("stack")
    with DevStack(directory) as running:
        yield running


@pytest.fixture
def kubectl(stack: DevStack) -> Iterator[Kubectl]:
    """A kubectl bound to a fresh namespace, so tests do not see each other's objects."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    client = Kubectl(stack, namespace)
    client.run("create", "namespace", namespace)
    yield client
    client.run("delete", "namespace", namespace, "--wait=false", check=False)
