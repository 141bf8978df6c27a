"""Helpers for the node agent's tests: plain core/v1 objects through the admin's kubeconfig, and pods that the
restricted Pod Security level admits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from ferry_dev.nodeagent.podapi import MERGE_PATCH, PodAPI

T = TypeVar("T")
JSON = dict[str, Any]


def wait_for(probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05) -> T:
    """Polls until the probe returns something truthy; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group: orphans are reaped by init, a bit later."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Kube:
    """Core v1 objects of one namespace as plain JSON, as the cluster admin sees them."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = PodAPI(kubeconfig, kubeconfig)
        self.namespace = namespace

    def _path(self, plural: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def create(self, plural: str, body: JSON) -> JSON:
        return self.api.request("POST", self._path(plural), body=body)

    def get(self, plural: str, name: str) -> JSON | None:
        try:
            return self.api.request("GET", self._path(plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, body: JSON) -> JSON:
        return self.api.request("PATCH", self._path(plural, name), body=body, content_type=MERGE_PATCH)

    def delete(self, plural: str, name: str, grace: int | None = None) -> None:
        options: JSON = {} if grace is None else {"gracePeriodSeconds": grace}
        self.api.request("DELETE", self._path(plural, name), body=options or None)

    def pod_status(self, name: str) -> JSON:
        status: JSON = (self.get("pods", name) or {}).get("status") or {}
        return status

    def phase(self, name: str) -> str | None:
        phase: str | None = self.pod_status(name).get("phase")
        return phase

    def container_status(self, name: str) -> JSON:
        statuses: list[JSON] = self.pod_status(name).get("containerStatuses") or [{}]
        return statuses[0]

    def wait_phase(self, name: str, *phases: str, timeout: float = 15.0) -> JSON:
        def reached() -> JSON | None:
            pod = self.get("pods", name)
            return pod if pod and (pod.get("status") or {}).get("phase") in phases else None

        return wait_for(reached, timeout)


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def make_pod(
    name: str,
    script: str,
    *,
    restart_policy: str = "Never",
    env: list[JSON] | None = None,
    grace: int | None = None,
    **spec: Any,
) -> JSON:
    """A single-container pod running `sh -c script`, within the restricted Pod Security level."""
    container: JSON = {
        "name": "main",
        "image": "ferry:dev",
        "command": ["sh", "-c", script],
        "securityContext": RESTRICTED,
    }
    if env:
        container["env"] = env
    pod_spec: JSON = {
        "restartPolicy": restart_policy,
        "containers": [container],
        "securityContext": {"runAsUser": 65532, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        **spec,
    }
    if grace is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}
