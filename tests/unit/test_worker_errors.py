"""How workers name causes a user can act on: an unreachable API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ferry.api.outcome import OUTCOME_MARKER, OutcomeResult
from ferry_dev.emulators import free_port


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_worker_that_cannot_reach_the_api_server_says_so_and_is_retried(tmp_path: Path) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}"))
    done = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "worker", "blobcopy", "--namespace", "ns", "--name", "n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(OUTCOME_MARKER), done.stderr
    outcome = json.loads(last.removeprefix(OUTCOME_MARKER))
    assert outcome["reason"] == "KubernetesAPIError", outcome  # as docs/blobcopy.md says, not WorkerCrashed
    assert outcome["result"] == OutcomeResult.RETRY and done.returncode == 1
    assert f"127.0.0.1:{port}" in outcome["message"] and "refused" in outcome["message"].lower()
    assert "unexpected error" not in done.stderr and "0x" not in outcome["message"]
