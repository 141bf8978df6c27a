"""A local node for tests: the API emulator, a kubeconfig for it and a pod runner serving it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ferry.devstack.kubeapi import run_kubeapi_in_thread, write_kubeconfig
from ferry.devstack.podapi import MERGE_PATCH, PodAPI
from ferry.devstack.podrunner import PodRunner
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
JSON = dict[str, Any]


def wait_for(probe: Callable[[], T | None], timeout: float = 8.0, interval: float = 0.05) -> T:
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


class Kube(PodAPI):
    """Core v1 objects as plain JSON, in the default namespace unless told."""

    @staticmethod
    def _path(plural: str, name: str = "", namespace: str = "default") -> str:
        return f"/api/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def create(self, plural: str, body: JSON, namespace: str = "default") -> JSON:
        return self.request("POST", self._path(plural, namespace=namespace), body=body)

    def get(self, plural: str, name: str, namespace: str = "default") -> JSON | None:
        try:
            return self.request("GET", self._path(plural, name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, body: JSON, namespace: str = "default") -> JSON:
        return self.request("PATCH", self._path(plural, name, namespace), body=body, content_type=MERGE_PATCH)

    def delete(self, plural: str, name: str, namespace: str = "default", grace: int | None = None) -> None:
        options: JSON = {} if grace is None else {"gracePeriodSeconds": grace}
        self.request("DELETE", self._path(plural, name, namespace), body=options or None)

    def pod_status(self, name: str, namespace: str = "default") -> JSON:
        pod = self.get("pods", name, namespace) or {}
        status: JSON = pod.get("status") or {}
        return status

    def phase(self, name: str, namespace: str = "default") -> str | None:
        phase: str | None = self.pod_status(name, namespace).get("phase")
        return phase

    def container_status(self, name: str, namespace: str = "default") -> JSON:
        statuses: list[JSON] = self.pod_status(name, namespace).get("containerStatuses") or [{}]
        return statuses[0]

    def wait_phase(self, name: str, *phases: str, timeout: float = 8.0) -> JSON:
        def reached() -> JSON | None:
            pod = self.get("pods", name)
            return pod if pod and (pod.get("status") or {}).get("phase") in phases else None

        return wait_for(reached, timeout)


@dataclass
class LocalNode:
    kubeconfig: Path
    workdir: Path
    kube: Kube
    runner: PodRunner


def make_pod(
    name: str,
    script: str,
    *,
    restart_policy: str = "Never",
    env: list[JSON] | None = None,
    grace: int | None = None,
    **spec: Any,
) -> JSON:
    """A single-container pod running `sh -c script`."""
    container: JSON = {"name": "main", "image": "ferry:dev", "command": ["sh", "-c", script]}
    if env:
        container["env"] = env
    pod_spec: JSON = {"restartPolicy": restart_policy, "containers": [container], **spec}
    if grace is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


@contextmanager
def kube_api(tmp_path: Path) -> Iterator[tuple[Path, Kube]]:
    url, stop = run_kubeapi_in_thread()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(kubeconfig, url)
    kube = Kube(kubeconfig)
    try:
        yield kubeconfig, kube
    finally:
        kube.close()
        stop()


@contextmanager
def pod_runner(kubeconfig: Path, workdir: Path, **options: Any) -> Iterator[PodRunner]:
    options = {"entrypoint": ("sh",), "max_grace_seconds": 5.0, "restart_backoff_seconds": 0.2, **options}
    runner = PodRunner(kubeconfig, workdir, **options)
    runner.start()
    try:
        assert runner.wait_ready(), "the pod runner never listed the pods"
        yield runner
    finally:
        runner.stop()


@contextmanager
def local_node(tmp_path: Path, **options: Any) -> Iterator[LocalNode]:
    with kube_api(tmp_path) as (kubeconfig, kube), pod_runner(kubeconfig, tmp_path / "node", **options) as runner:
        yield LocalNode(kubeconfig, tmp_path / "node", kube, runner)
