"""A real Kubernetes control plane: etcd (on 127.0.0.1), kube-apiserver (on the stack's bridge address, where
pods reach it) and kube-controller-manager.

The API server runs with TLS and client-certificate authentication, Node and RBAC authorization, the
default admission plugins plus NodeRestriction (PodSecurity among them), and a service-account issuer, as
a cluster's would. The controller manager runs what a one-node stack needs: garbage collection, namespace
deletion, service accounts, the root CA ConfigMap, quotas, and Deployments (the chart's operator).
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from ferry_dev.binaries import Binaries
from ferry_dev.emulators import HttpReady, free_port, wait_until
from ferry_dev.lifecycle import Service
from ferry_dev.network import SERVICE_IP
from ferry_dev.pki import Authority, Pair, signing_key
from ferry_dev.processes import ChildProcess, ProcessRegistry

LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
API_SANS = (
    LOOPBACK,
    "localhost",
    SERVICE_IP,
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",  # quotas refuse pods as on a cluster
    "deployment-controller",
    "replicaset-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",  # lifts the not-ready taint the kubelet registers its node with
)
NODE_NAME = "ferry-local"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """Where a client of the API server finds its certificate (for kubeconfigs and the kubelet)."""

    server: str
    ca: Path
    client: Pair


def write_kubeconfig(
    path: Path, server: str, ca: Path, user: str, auth: dict[str, str], namespace: str | None = None
) -> Path:
    """A kubeconfig for one identity: `auth` is a client certificate and key, or a token."""
    context: dict[str, str] = {"cluster": "ferry-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "ferry-local", "context": context}],
        "current-context": "ferry-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def certificate_kubeconfig(path: Path, credentials: Credentials, user: str) -> Path:
    auth = {"client-certificate": str(credentials.client.cert), "client-key": str(credentials.client.key)}
    return write_kubeconfig(path, credentials.server, credentials.ca, user, auth)


class ControlPlane(Service):
    def __init__(
        self,
        directory: Path,
        binaries: Binaries,
        registry: ProcessRegistry | None = None,
        audit: bool = False,
        host: str = LOOPBACK,
    ) -> None:
        self.dir = directory
        self.host = host
        self.audit = audit
        self.binaries = binaries
        self.registry = registry
        self.pki = self.dir / "pki"
        self.etcd = ChildProcess("etcd", self.dir / "etcd.log", registry)
        self.apiserver = ChildProcess("kube-apiserver", self.dir / "kube-apiserver.log", registry)
        self.controller_manager = ChildProcess(
            "kube-controller-manager", self.dir / "kube-controller-manager.log", registry
        )
        self.port = 0
        self.etcd_port = 0
        self.admin: Credentials | None = None
        self.node: Credentials | None = None
        self.scheduler: Credentials | None = None
        self.kubelet_serving: Pair | None = None
        self.ca: Path | None = None
        self.authority: Authority | None = None

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()

    def _certificates(self) -> None:
        ca = Authority(self.pki)
        self.ca = ca.cert
        self.authority = ca  # issues the certificates of servers pods must trust (they have its ca.crt)
        self.port = self.port or free_port(self.host)
        self.serving = ca.issue("apiserver", "kube-apiserver", hosts=(self.host, *API_SANS), server=True)
        self.kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
        )
        admin = ca.issue("admin", "ferry-admin", organizations=("system:masters",), client=True)
        manager = ca.issue("controller-manager", "system:kube-controller-manager", client=True)
        node = ca.issue("node", f"system:node:{NODE_NAME}", organizations=("system:nodes",), client=True)
        scheduler = ca.issue("scheduler", "system:kube-scheduler", client=True)
        self.kubelet_serving = ca.issue("kubelet", NODE_NAME, hosts=(self.host, LOOPBACK, "localhost"), server=True)
        self.service_account = signing_key(self.pki)
        self.admin = Credentials(self.server, ca.cert, admin)
        self.node = Credentials(self.server, ca.cert, node)
        self.scheduler = Credentials(self.server, ca.cert, scheduler)
        self.manager_kubeconfig = certificate_kubeconfig(
            self.dir / "controller-manager.kubeconfig", Credentials(self.server, ca.cert, manager), "controller-manager"
        )

    def _start_etcd(self) -> None:
        self.etcd_port = free_port(LOOPBACK)
        peer = free_port(LOOPBACK)
        data = self.dir / "etcd-data"
        argv = [
            str(self.binaries.path("etcd")),
            "--name=ferry-local",
            f"--data-dir={data}",
            f"--listen-client-urls=http://{LOOPBACK}:{self.etcd_port}",
            f"--advertise-client-urls=http://{LOOPBACK}:{self.etcd_port}",
            f"--listen-peer-urls=http://{LOOPBACK}:{peer}",
            f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}",
            f"--initial-cluster=ferry-local=http://{LOOPBACK}:{peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",  # a throwaway local store: no fsync on every write
            "--log-level=warn",
        ]
        self.etcd.spawn(argv, os.environ, cwd=self.dir)
        wait_until(HttpReady(f"http://{LOOPBACK}:{self.etcd_port}/health"), self.etcd, "etcd", READY_TIMEOUT)

    def _start_apiserver(self) -> None:
        assert self.admin is not None and self.kubelet_serving is not None
        argv = [
            str(self.binaries.path("kube-apiserver")),
            f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
            f"--client-ca-file={self.admin.ca}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={self.service_account.cert}",
            f"--service-account-signing-key-file={self.service_account.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={self.kubelet_client.cert}",
            f"--kubelet-client-key={self.kubelet_client.key}",
            f"--kubelet-certificate-authority={self.admin.ca}",
            "--kubelet-preferred-address-types=InternalIP",
            "--endpoint-reconciler-type=none",  # the Service's cluster IP is routed by one DNAT rule (network.py)
            "--allow-privileged=false",
            "--profiling=false",
            "--v=1",
        ]
        if self.audit:
            argv += [f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.audit_log}"]
        self.apiserver.spawn(argv, os.environ, cwd=self.dir)
        wait_until(self._api_ready, self.apiserver, "kube-apiserver", READY_TIMEOUT)

    @property
    def audit_log(self) -> Path:
        """One JSON line per request (who, verb, resource), when the stack runs with audit=True."""
        return self.dir / "audit.log"

    def _audit_policy(self) -> Path:
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata"}],
        }
        path = self.dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return path

    def _api_ready(self) -> bool:
        assert self.admin is not None
        context = ssl.create_default_context(cafile=str(self.admin.ca))
        context.load_cert_chain(str(self.admin.client.cert), str(self.admin.client.key))
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=context) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def _start_controller_manager(self) -> None:
        assert self.admin is not None
        kubeconfig = str(self.manager_kubeconfig)
        argv = [
            str(self.binaries.path("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={free_port(LOOPBACK)}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--root-ca-file={self.admin.ca}",
            f"--service-account-private-key-file={self.service_account.key}",
            "--use-service-account-credentials=true",  # each controller as its own account, as kubeadm runs it
            "--leader-elect=false",
            "--v=1",
        ]
        self.controller_manager.spawn(argv, os.environ, cwd=self.dir)
        time.sleep(0.2)
        if not self.controller_manager.running:
            raise RuntimeError(f"kube-controller-manager exited:\n{self.controller_manager.log_tail()}")

    def restart_apiserver(self) -> None:
        """Stop the API server and start it again on the same port (clients see connections refused)."""
        self.apiserver.stop()
        self._start_apiserver()

    def stop(self) -> None:
        for child in (self.controller_manager, self.apiserver, self.etcd):
            child.stop()
