"""How workers name causes a user can act on: an unreachable API server, an account key that cannot be one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.api.databaseaccount import KEY_SECRET_ENV, KEY_SECRET_KEY_ENV, SOURCE_ACCOUNT_ENV_PREFIX
from ferry.api.outcome import OUTCOME_MARKER, OutcomeResult
from ferry.storage.cosmos import CosmosAccess, InvalidAccountKey
from ferry.workers.outcome import PermanentError, classify
from ferry.workers.podenv import cosmos_access_from_env
from ferry_dev.emulators import COSMOS_EMULATOR_KEY, free_port

GARBAGE_KEY = "not-a-key!"  # what the user trial put in the Secret: not base64


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
    port = free_port("127.0.0.1")  # bound and closed again: nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}"))
    done = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "worker", "blobcopy", "copy", "--namespace", "ns", "--name", "n"],
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


def _pod_env(key: str) -> dict[str, str]:
    return {
        "FERRY_COSMOS_ENDPOINT": "https://127.0.0.1:8081/",
        "FERRY_COSMOS_KEY": key,
        KEY_SECRET_ENV: "cosmos-credentials",
        KEY_SECRET_KEY_ENV: "primaryKey",
    }


def test_a_cross_account_copys_source_key_is_read_and_checked_under_its_own_prefix() -> None:
    """The copy instances of a cross-account job have both accounts' variables: each is read apart, and a bad
    source key names the source account's Secret."""
    env = {
        **_pod_env(COSMOS_EMULATOR_KEY),
        "FERRY_SOURCE_COSMOS_ENDPOINT": "https://10.0.0.7:8081/",
        "FERRY_SOURCE_COSMOS_KEY": GARBAGE_KEY,
        "FERRY_SOURCE_COSMOS_KEY_SECRET": "legacy-credentials",
        "FERRY_SOURCE_COSMOS_KEY_SECRET_KEY": "readKey",
        "FERRY_SOURCE_COSMOS_VERIFY_TLS": "false",
    }
    assert cosmos_access_from_env(env).endpoint == "https://127.0.0.1:8081/"
    with pytest.raises(PermanentError) as raised:
        cosmos_access_from_env(env, prefix=SOURCE_ACCOUNT_ENV_PREFIX)
    assert 'key "readKey" of Secret legacy-credentials' in raised.value.message
    env["FERRY_SOURCE_COSMOS_KEY"] = COSMOS_EMULATOR_KEY
    source = cosmos_access_from_env(env, prefix=SOURCE_ACCOUNT_ENV_PREFIX)
    assert (source.endpoint, source.verify_tls) == ("https://10.0.0.7:8081/", False)


@pytest.mark.parametrize("key", [GARBAGE_KEY, "abcde", "schlüssel==", " "])
def test_a_key_that_is_not_base64_is_a_permanent_error_naming_its_secret(key: str) -> None:
    with pytest.raises(PermanentError) as raised:
        cosmos_access_from_env(_pod_env(key))
    error = raised.value
    assert error.reason == "InvalidCredentials"
    assert 'key "primaryKey" of Secret cosmos-credentials' in error.message
    if key.strip():
        assert key not in error.message
    outcome = classify(error)
    assert outcome.result == OutcomeResult.FAILED and outcome.reason == "InvalidCredentials"
    assert key.strip() == "" or key not in outcome.line()


def test_a_key_the_sdk_accepts_is_accepted() -> None:
    # Secrets made with `echo key | base64` carry a newline, which the SDK's decoding skips as well.
    for key in (COSMOS_EMULATOR_KEY, COSMOS_EMULATOR_KEY + "\n"):
        assert cosmos_access_from_env(_pod_env(key)).key == key
    with pytest.raises(InvalidAccountKey, match="not valid base64") as raised:
        CosmosAccess("https://127.0.0.1:8081/", GARBAGE_KEY)
    assert GARBAGE_KEY not in str(raised.value)


def test_the_jobs_command_says_the_key_is_unusable_without_a_traceback() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.cli",
            "jobs",
            "list",
            "--endpoint",
            f"https://127.0.0.1:{free_port('127.0.0.1')}/",
        ],
        env={**os.environ, "FERRY_COSMOS_KEY": GARBAGE_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "FERRY_COSMOS_KEY" in done.stderr and "not valid base64" in done.stderr
    assert "Traceback" not in done.stderr and GARBAGE_KEY not in done.stderr + done.stdout
