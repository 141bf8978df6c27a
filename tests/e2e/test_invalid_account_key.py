"""A DatabaseAccount whose Secret holds something that cannot be an account key (not base64): the monitor and
capture pods say so once, as InvalidCredentials naming the Secret and its key, and wait instead of crash-looping;
a corrected key is read by the pods that replace them."""

from __future__ import annotations

import time
from typing import Any

import yaml

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl, with_reasons

GARBAGE_KEY = "not-a-key!"  # what the user trial put in the Secret


def _conditions(kubectl: Kubectl, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kubectl.status("databaseaccount", name).get("conditions") or []}


def _reason(o: dict[str, Any], kind: str) -> str | None:
    found = [c for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0]["reason"] if found else None


def _restarts(kubectl: Kubectl, pod: str) -> int:
    statuses = kubectl.get("pod", pod).get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def test_a_key_that_is_not_base64_is_reported_once_without_a_crash_loop(stack: DevStack, kubectl: Kubectl) -> None:
    assert stack.cosmos is not None and stack.azurite is not None
    kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={GARBAGE_KEY}")
    store = stack.azurite.accounts["ferrysrc"].connection_string
    kubectl("create", "secret", "generic", "store", f"--from-literal=cs={store}")
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": "acct"},
        "spec": {
            "endpoint": stack.cosmos.endpoint.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "cosmos-key", "key": "primaryKey"}},
            "regionPollInterval": "1s",
            "backup": {
                "mode": "Continuous",
                "tier": "Continuous7Days",
                "captureInterval": "2s",
                "location": {"account": {"secretRef": {"name": "store", "key": "cs"}}, "container": "backups"},
            },
        },
    }
    kubectl.apply(yaml.safe_dump(body))
    kubectl.wait_for(
        "databaseaccount",
        "acct",
        lambda o: _reason(o, "Ready") == "InvalidCredentials" and _reason(o, "BackupHealthy") == "InvalidCredentials",
        timeout=90,
    )
    conditions = _conditions(kubectl, "acct")
    for kind in ("Ready", "BackupHealthy"):
        message = conditions[kind]["message"]
        assert conditions[kind]["status"] == "False"
        assert 'key "primaryKey" of Secret cosmos-key' in message and GARBAGE_KEY not in message, message
    assert "acct-monitor-0" in conditions["Ready"]["message"]  # which pod to delete once the Secret is fixed
    assert conditions["Stalled"]["status"] == "True"  # it needs the user; nothing retries it in vain

    # Some poll intervals later: the pods still run, never restarted, and the cause was said once.
    time.sleep(15)
    for pod in ("acct-monitor-0", "acct-backup-0"):
        assert kubectl.get("pod", pod)["status"]["phase"] == "Running"
        assert _restarts(kubectl, pod) == 0, kubectl("describe", "pod", pod)
        assert GARBAGE_KEY not in kubectl("logs", pod)
    assert _reason(kubectl.get("databaseaccount", "acct"), "Ready") == "InvalidCredentials"
    events = kubectl.events("acct", with_reasons("InvalidCredentials", "BackupInvalidCredentials"))
    reasons = [e["reason"] for e in events for _ in range(int(e.get("count") or 1))]
    assert reasons.count("InvalidCredentials") == 1, reasons
    assert reasons.count("BackupInvalidCredentials") == 1, reasons
    assert GARBAGE_KEY not in kubectl("describe", "databaseaccount", "acct")

    # The user does what the message says: the corrected key is read by the monitor's replacement.
    kubectl("delete", "secret", "cosmos-key")
    kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={stack.cosmos.endpoint.key}")
    kubectl("delete", "pod", "acct-monitor-0", "--wait=false")
    kubectl.wait_for("databaseaccount", "acct", lambda o: _reason(o, "Ready") == "Connected", timeout=90)
