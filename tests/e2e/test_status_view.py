"""`ferry status` and `kubectl ferry`: the plain table, JSON, the kubectl plugin, and the live view in a real
terminal (tmux), on the local stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from blobcopy_fixtures import account_secrets, blob_bytes, blobcopy_manifest, new_container, storage_accounts

from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.stack import DevStack, ferry_executable
from support.asynccopy import AsyncCopyService
from support.kubectl import Kubectl

pytestmark = pytest.mark.e2e
KiB = 1024


@pytest.fixture
def objects(stack: DevStack, kubectl: Kubectl) -> Iterator[AsyncCopyService]:
    """Three BlobCopies: one succeeded, one failed, one copying slowly through the asynchronous Copy Blob."""
    assert stack.azurite is not None
    with AsyncCopyService(stack.azurite.accounts, rate=96 * KiB).running() as service:
        src_account, dst_account = storage_accounts(stack)
        src = new_container(src_account)
        dst = new_container(dst_account, service.connection_string(dst_account))
        account_secrets(kubectl, src_account.connection_string, service.connection_string(dst_account))
        src.upload_blob("small.bin", b"small")
        src.upload_blob("large.bin", blob_bytes(3072 * KiB, 9))
        kubectl.apply(blobcopy_manifest("done", src, dst, source={"blob": "small.bin"}))
        kubectl.apply(blobcopy_manifest("missing", src, dst, source={"blob": "absent.bin"}))
        kubectl.apply(blobcopy_manifest("slow", src, dst, source={"blob": "large.bin"}))
        kubectl.wait_phase("blobcopy", "done", "Succeeded")
        kubectl.wait_phase("blobcopy", "missing", "Failed")
        kubectl.wait_for("blobcopy", "slow", lambda o: (o.get("status") or {}).get("bytesCopied", 0) > 0)
        yield service


def test_once_json_and_the_kubectl_plugin(stack: DevStack, kubectl: Kubectl, objects: AsyncCopyService) -> None:
    table = kubectl.ferry("status", "--once")
    assert f"Ferry in {kubectl.namespace}: 3 object(s)" in table
    assert re.search(r"BlobCopy\s+done\s+Succeeded\s+100%", table), table
    assert re.search(r"BlobCopy\s+slow\s+Running\s+\d+%\s+[\d.]+ KiB/3\.0 MiB", table), table
    assert re.search(r"BlobCopy\s+missing\s+Failed\s+.*SourceNotFound", table), table
    assert "failed:\nBlobCopy " + kubectl.namespace + "/missing: SourceNotFound: " in table
    assert "\x1b[" not in table  # plain text for scripts

    rows = {r["name"]: r for r in json.loads(kubectl.ferry("status", "-o", "json"))["items"]}
    assert rows["slow"]["phase"] == "Running" and 0 < rows["slow"]["done"] < rows["slow"]["total"]
    assert rows["missing"]["reason"] == "SourceNotFound" and rows["done"]["phase"] == "Succeeded"

    # kubectl finds `kubectl-ferry` on PATH and runs it as its plugin, with the same commands.
    plugin = subprocess.run(
        [kubectl_binary(), "ferry", "status", "--once", "-n", kubectl.namespace],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plugin.returncode == 0, plugin.stderr
    assert re.search(r"BlobCopy\s+slow\s+Running", plugin.stdout), plugin.stdout
    usage = subprocess.run([kubectl_binary(), "ferry", "--help"], env=stack.env(), capture_output=True, text=True)
    assert usage.stdout.startswith("usage: kubectl ferry") and "restorable" in usage.stdout and "jobs" in usage.stdout


def test_the_live_view_redraws_in_place_in_a_real_terminal(
    stack: DevStack, kubectl: Kubectl, objects: AsyncCopyService
) -> None:
    tmux = shutil.which("tmux")
    assert tmux, "tmux is needed to run the live view in a real terminal"
    session = f"ferry-{uuid.uuid4().hex[:8]}"
    # The program starts once the window has its size (a detached session begins at 80x24 here).
    view = f"{ferry_executable()} status -n {kubectl.namespace} --interval 0.5"
    command = f"sleep 1; exec env KUBECONFIG={stack.kubeconfig} {view}"
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "30", command], check=True)
    subprocess.run([tmux, "resize-window", "-t", session, "-x", "160", "-y", "30"], check=True)
    try:
        first = _pane_until(tmux, session, lambda text: re.search(r"slow\s+Running\s+\S+\s+\d+%", text) is not None)
        time.sleep(3)
        later = _pane_until(tmux, session, lambda text: _percent(text) > _percent(first))
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
    assert later.count("Ferry in ") == 1  # redrawn in place, not printed again below
    assert "━" in later  # a progress bar
    assert re.search(r"slow\s+Running\s+━*\S*\s+\d+%\s+\S+ (KiB|MiB)/3\.0 MiB\s+\S+ KiB/s\s+\S+", later), later
    assert re.search(r"missing\s+Failed", later) and "SourceNotFound" in later
    assert "Ctrl-C to leave" in later


def _percent(text: str) -> int:
    found = re.search(r"slow\s+Running\s+\S+\s+(\d+)%", text)
    return int(found.group(1)) if found else -1


def _pane_until(tmux: str, session: str, test: object, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        if callable(test) and test(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the pane never showed what was expected:\n{text}")
