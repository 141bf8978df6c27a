"""Installing Ferry into the local control plane as a cluster admin would: the CRDs with
`kubectl apply --server-side`, and the chart's service accounts and RBAC rendered by real Helm.

The operator then runs with its ServiceAccount's token and the chart's least-privilege role, and worker
pods run under the chart's worker ServiceAccount: a verb missing from the chart fails the tests.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from ferry_dev.binaries import kubectl

RELEASE = "ferry"
RELEASE_NAMESPACE = "ferry-system"
OPERATOR_ACCOUNT = f"{RELEASE}-operator"
WORKER_ACCOUNT = f"{RELEASE}-worker"
RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
# Namespaces the demo and the tests use admit only pods that meet the `restricted` Pod Security level.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
# The node agent is also the stack's scheduler: under a scheduler identity of its own it sees every pod
# and binds the unscheduled ones; its kubelet part is authorized by the Node authorizer like any kubelet's.
SCHEDULER_USER = "ferry-dev:scheduler"
SCHEDULER_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": SCHEDULER_USER},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": SCHEDULER_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SCHEDULER_USER},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": SCHEDULER_USER}],
    },
]


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

    def install_crds(self) -> None:
        crds = repository_root() / "crds"
        self.kubectl("apply", "--server-side", "--field-manager=ferry-dev", "-f", str(crds))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        # Established, but the resources' storage may still initialize (429): list until it answers.
        deadline = time.monotonic() + 30
        while self.kubectl("get", "ferry", "-A", check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)

    def install_rbac(self) -> None:
        """The chart's service accounts and RBAC in the release namespace, and the node agent's role."""
        self.create_namespace(RELEASE_NAMESPACE)
        objects = [o for o in render_chart({}) if o.get("kind") in RBAC_KINDS]
        self.apply([*objects, *SCHEDULER_RBAC])

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
