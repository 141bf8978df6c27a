"""Every Ferry object shown in the docs and the README is one the API server accepts as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            if "apiVersion: ferry.dev/" in block:
                found.append((page.name, block))
    return found


def test_every_example_in_the_docs_applies_cleanly(stack: DevStack, kubectl: Kubectl) -> None:
    blocks = examples()
    kinds = {doc["kind"] for _, block in blocks for doc in yaml.safe_load_all(block) if doc}
    assert kinds == {"BlobCopy", "DatabaseAccount", "ContainerCopyJob", "InAccountRestore"}, kinds
    for page, block in blocks:
        done = kubectl.run("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=block, check=False)
        assert done.returncode == 0, f"{page}:\n{block}\n{done.stderr}"
