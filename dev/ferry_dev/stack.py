"""The local stack: a real control plane, a real node (containerd and the kubelet), the emulators, and Ferry
installed with its chart: the operator runs as the chart's Deployment and every worker as a container of
Ferry's image, built from operator/Dockerfile.

`DevStack` is what `ferry-dev up`, `ferry-dev demo` and the end-to-end tests share. Everything started is
recorded in <dir>/procs and stopped by `stop()`, or by `ferry-dev down` when `ferry-dev up` was killed; the
node's leftovers (containers, mounts, network namespaces, cgroups, the bridge) are found from <dir> too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ferry_dev import network as net
from ferry_dev.binaries import ensure_binaries
from ferry_dev.controlplane import NODE_NAME, ControlPlane, certificate_kubeconfig
from ferry_dev.emulators import Azurite, CosmosWithChangeFeed, FerretDB, free_port
from ferry_dev.images import Image, ferry_image, pause_image
from ferry_dev.install import RELEASE, RELEASE_NAMESPACE, Installer
from ferry_dev.lifecycle import Service
from ferry_dev.node import NODE_DIR, Node, cleanup
from ferry_dev.processes import ProcessRegistry, start_time

STORAGE_ACCOUNTS = ("ferrysrc", "ferrydst")
PID_FILE = "stack.pid"
READY_FILE = "ready"
ENDPOINTS_FILE = "endpoints.json"
SERVICE_ACCOUNT_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
KUBECONFIG_FILE = "kubeconfig"
# What a running stack leaves for scripts and users; none of it may outlive the stack, or it would be taken as live.
STATE_FILES = (READY_FILE, ENDPOINTS_FILE, KUBECONFIG_FILE)
# How long `ferry-dev down` waits for `ferry-dev up` to stop its parts itself before it stops what is left.
STOP_TIMEOUT = 90.0
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
METRICS_PORT = 8080  # the chart's default


def clear_state(directory: Path) -> None:
    """Remove the files that say a stack runs in `directory` (ready, endpoints.json, kubeconfig)."""
    for name in STATE_FILES:
        (directory / name).unlink(missing_ok=True)


def running_up(directory: Path) -> int | None:
    """The pid of the `ferry-dev up` that runs the stack in `directory`, if it still runs."""
    try:
        pid_text, _, started = (directory / PID_FILE).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = start_time(pid)
    return pid if now is not None and (not started or now == started) else None


def ferry_executable(name: str = "ferry") -> str:
    """A script of this installation (`ferry`: worker pods and the operator run the same code; `ferry-dev`)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def bin_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def values_for(image: Image, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """The chart's values for this stack: its image, as imported into the node (never pulled), and each of
    `layers` over the ones before (top-level sections merged key by key)."""
    repository, _, tag = image.reference.rpartition(":")
    merged: dict[str, Any] = {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}
    for values in layers:
        for key, value in values.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


class DevStack(Service):
    def __init__(self, directory: Path, *, values: Mapping[str, Any] | None = None, audit: bool = False) -> None:
        self.dir = directory.resolve()
        self.values = dict(values or {})
        self.audit = audit
        self.registry = ProcessRegistry(self.dir / "procs")
        self.network: net.Network | None = None
        self.azurite: Azurite | None = None
        self.cosmos: CosmosWithChangeFeed | None = None
        self.mongo: FerretDB | None = None  # a MongoDB API account
        self.control_plane: ControlPlane | None = None
        self.installer: Installer | None = None
        self.node: Node | None = None
        self.image: Image | None = None
        self.timings: dict[str, float] = {}
        self.entra_port = 0  # where workload identity's authority is expected (a test's stand-in)

    @property
    def kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig (what `ferry-dev up` tells users to export)."""
        return self.dir / KUBECONFIG_FILE

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def env(self) -> dict[str, str]:
        """The environment for kubectl and the tests: the admin kubeconfig and this installation first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = bin_path()
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return env

    def start(self) -> None:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        clear_state(self.dir)
        # A stack starts afresh: no cluster state (etcd's data, the release) or node state of an earlier one.
        cleanup(self.dir)
        for stale in ("kube", NODE_DIR):
            shutil.rmtree(self.dir / stale, ignore_errors=True)
        try:
            binaries = ensure_binaries()
            images: dict[str, Image] = {}
            build = threading.Thread(target=lambda: images.update(ferry=ferry_image(), pause=pause_image()))
            build.start()  # cached after the first run; meanwhile the control plane starts
            self.network = net.create(self.dir)
            # Servers this process starts from now on (emulators, the tests' stand-ins) listen where pods reach them.
            os.environ[net.HOST_VARIABLE] = self.network.gateway
            self.azurite = Azurite(self.dir / "azurite", accounts=STORAGE_ACCOUNTS, registry=self.registry)
            # Every Cosmos client of the stack goes through the change feed stand-in: copy jobs read the change feed.
            self.cosmos = CosmosWithChangeFeed(self.dir / "cosmos", registry=self.registry)
            self.mongo = FerretDB(self.dir / "mongo", registry=self.registry)
            failures: list[BaseException] = []
            servers = (self.azurite, self.cosmos, self.mongo)
            emulators = [threading.Thread(target=_starter(e, failures)) for e in servers]
            for thread in emulators:
                thread.start()
            self.control_plane = ControlPlane(
                self.dir / "kube", binaries, self.registry, audit=self.audit, host=self.network.gateway
            )
            self.control_plane.start()
            net.route_service(self.network, self.control_plane.port)
            assert self.control_plane.admin is not None
            certificate_kubeconfig(self.kubeconfig, self.control_plane.admin, "ferry-admin")
            self.installer = Installer(self.kubeconfig)
            build.join()
            if "ferry" not in images:
                raise RuntimeError(f"the images were not built; see the output above (and {self.logs})")
            self.image = images["ferry"]
            self.timings["control plane"] = time.monotonic() - started
            self._start_node(binaries, images)
            self.timings["node"] = time.monotonic() - started
            for thread in emulators:
                thread.join()
            if failures:
                raise RuntimeError(f"an emulator did not start: {failures[0]}") from failures[0]
            self.installer.install_chart(values_for(self.image, self._identity_values(), self.values))
            self.timings["chart"] = time.monotonic() - started
            self._write_endpoints()
            (self.dir / READY_FILE).write_text(f"{self.control_plane.server}\n{time.monotonic() - started:.1f}\n")
        except BaseException:
            self.stop()
            raise

    def _identity_values(self) -> dict[str, Any]:
        """Workload identity's authority: the address a test's Entra stand-in listens on (a port reserved on the
        bridge), trusted through the stack's CA, which every pod has as its service account's ca.crt. The workers'
        storage clients trust that CA too: a test's Azurite in OAuth mode serves HTTPS with a certificate of it."""
        assert self.network is not None
        self.entra_port = self.entra_port or free_port(self.network.gateway)
        authority = {"authorityHost": self.entra_authority, "authorityCAFile": SERVICE_ACCOUNT_CA}
        return {"workloadIdentity": authority, "workers": {"storageCAFile": SERVICE_ACCOUNT_CA}}

    @property
    def entra_authority(self) -> str:
        assert self.network is not None
        return f"https://{self.network.gateway}:{self.entra_port}/"

    def _start_node(self, binaries: Any, images: dict[str, Image]) -> None:
        assert self.control_plane is not None and self.network is not None
        assert self.control_plane.node is not None and self.control_plane.scheduler is not None
        assert self.control_plane.kubelet_serving is not None and self.control_plane.ca is not None
        node_kubeconfig = certificate_kubeconfig(
            self.dir / "kube" / "node.kubeconfig", self.control_plane.node, f"system:node:{NODE_NAME}"
        )
        scheduler = certificate_kubeconfig(
            self.dir / "kube" / "scheduler.kubeconfig", self.control_plane.scheduler, "system:kube-scheduler"
        )
        self.node = Node(
            self.dir / NODE_DIR,
            binaries,
            self.network,
            node_name=NODE_NAME,
            kubeconfig=node_kubeconfig,
            scheduler_kubeconfig=scheduler,
            ca=self.control_plane.ca,
            serving=self.control_plane.kubelet_serving,
            images=[images["ferry"], images["pause"]],
            sandbox_image=images["pause"].reference,
            registry=self.registry,
        )
        self.node.start()
        self.node.wait_ready(self.kubeconfig)

    def create_namespace(self, name: str, worker_account: bool = True) -> None:
        """A namespace for Ferry objects: restricted Pod Security, and the chart's worker service account
        (without it, the operator makes it when it first starts a worker there)."""
        assert self.installer is not None
        self.installer.create_namespace(name, worker_account)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.installer is not None
        return self.installer.kubectl(*args, check=check)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
        return found

    def operator_pod(self) -> dict[str, Any]:
        """The operator's pod (the chart's Deployment runs one)."""
        listed = self.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json").stdout
        pods = [p for p in json.loads(listed)["items"] if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != 1:
            raise RuntimeError(f"{len(pods)} operator pods in {RELEASE_NAMESPACE}")
        pod: dict[str, Any] = pods[0]
        return pod

    @property
    def operator_metrics(self) -> str:
        """The operator's Prometheus endpoint, at its pod's address on the stack's bridge."""
        return f"http://{self.operator_pod()['status']['podIP']}:{METRICS_PORT}/metrics"

    def kill_pod(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> bool:
        """Signal the main process of the pod's first container, as the kernel's OOM killer or a crash would end
        it; False when it has none running. The kubelet then does what the pod's restart policy says."""
        assert self.node is not None
        with contextlib.suppress(RuntimeError):
            statuses = self.pod(namespace, name).get("status", {}).get("containerStatuses") or []
            running = [s for s in statuses if "running" in (s.get("state") or {}) and s.get("containerID")]
            if running:
                return self.node.kill_container(running[0]["containerID"], sig)
        return False

    def operator_log(self) -> str:
        """Everything the operator's containers wrote, across restarts and pods, oldest first (the kubelet's
        files, as `kubectl logs` reads them one container at a time)."""
        folders = (self.dir / NODE_DIR / "pod-logs").glob(f"{RELEASE_NAMESPACE}_{RELEASE}-operator-*")
        files = sorted((f for d in folders for f in d.glob("operator/*.log")), key=lambda f: f.stat().st_mtime)
        # A CRI log line is "<time> <stream> <P|F> <text>".
        return "".join(
            line.split(" ", 3)[3] + "\n"
            for f in files
            for line in f.read_text(errors="replace").splitlines()
            if line.count(" ") >= 3
        )

    def operator_pid(self) -> int:
        """The host's pid of the operator's process (its container's main process)."""
        assert self.node is not None
        statuses = self.operator_pod()["status"].get("containerStatuses") or [{}]
        pid = self.node.task_pid(statuses[0].get("containerID", ""))
        if pid is None:
            raise RuntimeError("the operator's container does not run")
        return pid

    def restart_operator(self, sig: int = signal.SIGKILL, timeout: float = 90.0) -> None:
        """End the operator's process with `sig`; the kubelet starts it again (restartPolicy Always). Returns when
        the new process runs."""
        before = self.operator_pod()
        name = before["metadata"]["name"]
        restarts = (before["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0)
        if not self.kill_pod(RELEASE_NAMESPACE, name, sig):
            raise RuntimeError(f"the operator pod {name} has no running container to stop")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = (self.pod(RELEASE_NAMESPACE, name)["status"].get("containerStatuses") or [{}])[0]
            if status.get("restartCount", 0) > restarts and "running" in (status.get("state") or {}):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the operator pod {name} did not run again within {timeout:.0f}s")

    def _write_endpoints(self) -> None:
        assert self.azurite is not None and self.cosmos is not None and self.control_plane is not None
        data = {
            "kubernetes": {"server": self.control_plane.server, "kubeconfig": str(self.kubeconfig)},
            "storageAccounts": {
                name: {
                    "name": acct.name,
                    "key": acct.key,
                    "blobEndpoint": acct.blob_endpoint,
                    "connectionString": acct.connection_string,
                }
                for name, acct in self.azurite.accounts.items()
            },
            "cosmos": {"endpoint": self.cosmos.endpoint.endpoint, "key": self.cosmos.endpoint.key},
            "image": self.image.reference if self.image else None,
        }
        if self.entra_port:
            data["entra"] = {"authorityHost": self.entra_authority}
        if self.mongo is not None:
            data["mongo"] = {"endpoint": self.mongo.endpoint.endpoint, "key": self.mongo.endpoint.key}
        (self.dir / ENDPOINTS_FILE).write_text(json.dumps(data, indent=2) + "\n")

    def stop(self) -> None:
        (self.dir / READY_FILE).unlink(missing_ok=True)
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        for emulator in (self.cosmos, self.azurite, self.mongo):
            if emulator is not None:
                emulator.stop()
        self.cosmos = self.azurite = self.mongo = None
        self.registry.stop_all(timeout=2.0)  # anything a part failed to stop
        cleanup(self.dir)
        if os.environ.get(net.HOST_VARIABLE) == (self.network.gateway if self.network else None):
            os.environ.pop(net.HOST_VARIABLE, None)
        clear_state(self.dir)  # the kubeconfig and endpoints name servers that are gone now


def _starter(service: Service, failures: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            service.start()
        except BaseException as exc:  # reported by the thread that waits for it
            failures.append(exc)

    return run


def up(directory: Path) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM (or `ferry-dev down`)."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stopping.set()

    running = running_up(directory)
    if running is not None:
        print(
            f"a local stack already runs in {directory} (`ferry-dev up`, pid {running}): "
            f"stop it with `ferry-dev down --dir {directory}` or use another --dir",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stack = DevStack(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(directory)  # an earlier `ferry-dev up` was killed: its files and processes are stale
    (directory / PID_FILE).write_text(f"{os.getpid()} {start_time(os.getpid()) or ''}\n")
    try:
        stack.start()
        print(f"local stack ready: export KUBECONFIG={stack.kubeconfig}", flush=True)
        print(f"endpoints: {stack.dir / ENDPOINTS_FILE}", flush=True)
        while not stopping.wait(0.5):  # a bounded wait: the signal handler runs between waits
            pass
    finally:
        stack.stop()
        (directory / PID_FILE).unlink(missing_ok=True)
    return 0


def _stop_leftovers(directory: Path) -> list[str]:
    """Stop what a killed `ferry-dev up` left running in `directory` and remove its files; the names stopped."""
    left = ProcessRegistry(directory.resolve() / "procs").stop_all()
    cleanup(directory)
    if left:
        print(f"stopped what an earlier `ferry-dev up` left running: {', '.join(left)}", file=sys.stderr)
    clear_state(directory)
    (directory / PID_FILE).unlink(missing_ok=True)
    return left


def down(directory: Path, timeout: float = STOP_TIMEOUT) -> int:
    """Stop the stack in `directory`: ask `ferry-dev up` to stop and wait until it has, then stop whatever a
    killed one left behind; the files that say a stack runs (ready, endpoints.json, kubeconfig) go too."""
    had_state = (directory / PID_FILE).exists() or (directory / "procs").exists()
    pid = running_up(directory)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running_up(directory) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_up(directory) == pid:
            print(f"`ferry-dev up` (pid {pid}) did not stop within {timeout:.0f}s; stopping its parts", file=sys.stderr)
    left = _stop_leftovers(directory)
    if pid is None and not left and not had_state:
        print(f"no local stack is running in {directory}", file=sys.stderr)
    return 0
