"""Installing Ferry into the local cluster as a cluster admin would: `helm install` of the chart with real Helm
(built from its Go module, hack/helm), which installs the CRDs and runs the operator as its Deployment; and
namespaces for Ferry objects, with the worker account the chart renders for `workerNamespaces`.

The operator runs with its ServiceAccount and the chart's least-privilege role, and worker pods under the
chart's worker ServiceAccount: a verb missing from the chart fails the tests.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from ferry_dev.binaries import ensure_tool, kubectl

RELEASE = "ferry"
RELEASE_NAMESPACE = "ferry-system"
OPERATOR_ACCOUNT = f"{RELEASE}-operator"
WORKER_ACCOUNT = f"{RELEASE}-worker"
# Namespaces the demo and the tests use admit only pods that meet the `restricted` Pod Security level.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
INSTALL_TIMEOUT = "180s"


def repository_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "charts" / "ferry" / "Chart.yaml").is_file():
            return folder
    raise FileNotFoundError("charts/ferry not found above the ferry_dev package")


class Installer:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [kubectl(), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def apply(self, objects: Iterable[Mapping[str, Any]], manager: str = "ferry-dev") -> None:
        text = "\n---\n".join(yaml.safe_dump(dict(obj), sort_keys=False) for obj in objects)
        self.kubectl("apply", "--server-side", f"--field-manager={manager}", "-f", "-", stdin=text)

    def helm(self, *args: str) -> str:
        state = self.kubeconfig.parent / "helm"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(state / "cache"),
            "HELM_CONFIG_HOME": str(state / "config"),
            "HELM_DATA_HOME": str(state / "data"),
        }
        done = subprocess.run([str(ensure_tool("helm")), *args], capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def install_chart(self, values: Mapping[str, Any]) -> None:
        """`helm install` of charts/ferry into the release namespace (restricted Pod Security, as the tests'),
        waiting for the operator's Deployment; then until the CRDs' resources answer."""
        self.create_namespace(RELEASE_NAMESPACE, worker_account=False)
        path = self.kubeconfig.parent / "values.yaml"
        path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
        chart = repository_root() / "charts" / "ferry"
        self.helm("install", RELEASE, str(chart), "--namespace", RELEASE_NAMESPACE, "-f", str(path),
                  "--wait", "--timeout", INSTALL_TIMEOUT)  # fmt: skip
        # Established, but the resources' storage may still initialize (429): list until it answers.
        deadline = time.monotonic() + 30
        while self.kubectl("get", "ferry", "-A", check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)

    def create_namespace(self, name: str, worker_account: bool = True) -> None:
        """A namespace that enforces the restricted Pod Security level and has the chart's worker account,
        as `workerNamespaces: [name]` in the chart's values gives it (without: the operator makes it)."""
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
        if not worker_account:
            self.apply([namespace])
            return
        worker = [
            o
            for o in render_chart({"workerNamespaces": [name]})
            if o.get("kind") in ("ServiceAccount", "RoleBinding")
            and o["metadata"].get("namespace") == name
            and o["metadata"]["name"] == WORKER_ACCOUNT
        ]
        self.apply([namespace, *worker])

    def token(self, namespace: str, account: str, hours: int = 24) -> str:
        """A token of the service account (TokenRequest), as a pod of that account would get."""
        return self.kubectl("create", "token", account, "-n", namespace, f"--duration={hours}h").stdout.strip()


def render_chart(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for an install with these values (Helm's own engine)."""
    with helm.Chart.load(repository_root() / "charts" / "ferry") as chart:
        manifests = chart.render(dict(values), name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects
