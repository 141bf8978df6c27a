"""The local stack: a real control plane, the node agent, the emulators and the operator, on 127.0.0.1.

`DevStack` is what `ferry-dev up`, `ferry-dev demo` and the end-to-end tests share. Everything started is
recorded in <dir>/procs and stopped by `stop()`, or by `ferry-dev down` when `ferry-dev up` was killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from ferry_dev.binaries import ensure_binaries
from ferry_dev.controlplane import NODE_NAME, ControlPlane, certificate_kubeconfig, write_kubeconfig
from ferry_dev.emulators import Azurite, CosmosServer, free_port
from ferry_dev.install import OPERATOR_ACCOUNT, RELEASE_NAMESPACE, WORKER_ACCOUNT, Installer
from ferry_dev.lifecycle import Service
from ferry_dev.nodeagent.podrunner import PodRunner
from ferry_dev.processes import ChildProcess, ProcessRegistry

STORAGE_ACCOUNTS = ("ferrysrc", "ferrydst")
PID_FILE = "stack.pid"
READY_FILE = "ready"
STOP_TIMEOUT = 8.0


def ferry_executable(name: str = "ferry") -> str:
    """A script of this installation (`ferry`: worker pods and the operator run the same code; `ferry-dev`)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def installation_paths() -> list[str]:
    """What a Ferry image would hold: the Python installation and Ferry's own source (installed editable)."""
    import ferry

    source = Path(ferry.__file__).resolve().parents[2]
    paths = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)} | {str(source)}
    return sorted(paths)


def bin_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


class DevStack(Service):
    def __init__(
        self,
        directory: Path,
        *,
        operator: bool = True,
        restart_backoff_seconds: float = 1.0,
        operator_env: Mapping[str, str] | None = None,
        audit: bool = False,
    ) -> None:
        self.dir = directory.resolve()
        self.with_operator = operator
        self.restart_backoff_seconds = restart_backoff_seconds
        self.operator_env = dict(operator_env or {})
        self.audit = audit
        self.registry = ProcessRegistry(self.dir / "procs")
        self.azurite: Azurite | None = None
        self.cosmos: CosmosServer | None = None
        self.control_plane: ControlPlane | None = None
        self.installer: Installer | None = None
        self.runner: PodRunner | None = None
        self.operator = ChildProcess("operator", self.dir / "logs" / "operator.log", self.registry)
        self.metrics_port = 0

    @property
    def kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig (what `ferry-dev up` tells users to export)."""
        return self.dir / "kubeconfig"

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
        (self.dir / READY_FILE).unlink(missing_ok=True)
        try:
            binaries = ensure_binaries()
            self.azurite = Azurite(self.dir / "azurite", accounts=STORAGE_ACCOUNTS, registry=self.registry)
            self.cosmos = CosmosServer(self.dir / "cosmos", registry=self.registry)
            emulators = [threading.Thread(target=e.start) for e in (self.azurite, self.cosmos)]
            for thread in emulators:
                thread.start()
            self.control_plane = ControlPlane(self.dir / "kube", binaries, self.registry, audit=self.audit)
            self.control_plane.start()
            assert self.control_plane.admin is not None and self.control_plane.node is not None
            certificate_kubeconfig(self.kubeconfig, self.control_plane.admin, "ferry-admin")
            self.installer = Installer(self.kubeconfig)
            self.installer.install_crds()
            self.installer.install_rbac()
            self._start_node_agent()
            for thread in emulators:
                thread.join()
            if not (self.azurite.accounts and self.cosmos.endpoint.endpoint):
                raise RuntimeError(f"an emulator did not start; see {self.dir}/azurite and {self.dir}/cosmos")
            if self.with_operator:
                self.start_operator()
            self._write_endpoints()
            (self.dir / READY_FILE).write_text(f"{self.control_plane.server}\n{time.monotonic() - started:.1f}\n")
        except BaseException:
            self.stop()
            raise

    def _start_node_agent(self) -> None:
        assert self.control_plane is not None and self.control_plane.node is not None
        assert self.control_plane.kubelet_serving is not None and self.control_plane.ca is not None
        assert self.control_plane.scheduler is not None
        node_kubeconfig = certificate_kubeconfig(
            self.dir / "kube" / "node.kubeconfig", self.control_plane.node, NODE_NAME
        )
        scheduler = certificate_kubeconfig(
            self.dir / "kube" / "scheduler.kubeconfig", self.control_plane.scheduler, "scheduler"
        )
        self.runner = PodRunner(
            node_kubeconfig,
            self.dir / "pods",
            scheduler_kubeconfig=scheduler,
            api_server=self.control_plane.server,
            serving=self.control_plane.kubelet_serving,
            ca=self.control_plane.ca,
            entrypoint=(ferry_executable(),),
            max_grace_seconds=10.0,
            restart_backoff_seconds=self.restart_backoff_seconds,
            registry=self.registry,
            keep_visible=installation_paths(),
        )
        self.runner.start()
        self.runner.wait_ready()

    def restart_node_agent(self) -> None:
        """Stop the node agent (its pods' processes die with it, as on a node reboot) and start it again."""
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self._start_node_agent()

    def create_namespace(self, name: str, worker_account: bool = True) -> None:
        """A namespace for Ferry objects: restricted Pod Security, and the chart's worker service account
        (without it, the operator makes it when it first starts a worker there)."""
        assert self.installer is not None
        self.installer.create_namespace(name, worker_account)

    def start_operator(self, env: Mapping[str, str] | None = None) -> None:
        """The operator as its ServiceAccount (the chart's RBAC), watching all namespaces."""
        assert self.installer is not None and self.control_plane is not None and self.control_plane.ca is not None
        if self.operator.running:
            return
        token = self.installer.token(RELEASE_NAMESPACE, OPERATOR_ACCOUNT)
        kubeconfig = write_kubeconfig(
            self.dir / "kube" / "operator.kubeconfig",
            self.control_plane.server,
            self.control_plane.ca,
            f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_ACCOUNT}",
            {"token": token},
            RELEASE_NAMESPACE,
        )
        self.metrics_port = self.metrics_port or free_port()
        operator_env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PATH": bin_path(),
            "PYTHONUNBUFFERED": "1",
            "FERRY_WORKER_SERVICE_ACCOUNT": WORKER_ACCOUNT,
            "FERRY_WORKER_CLUSTER_ROLE": WORKER_ACCOUNT,  # the chart's worker ClusterRole has the account's name
            **self.operator_env,
            **(env or {}),
        }
        operator_env.pop("KUBERNETES_SERVICE_HOST", None)
        argv = [ferry_executable(), "operator", "--metrics-port", str(self.metrics_port), "--metrics-host", "127.0.0.1"]
        self.operator.spawn(argv, operator_env, cwd=self.dir)

    def stop_operator(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        self.operator.stop(timeout=timeout, sig=sig)

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
            "operatorMetrics": f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None,
        }
        (self.dir / "endpoints.json").write_text(json.dumps(data, indent=2) + "\n")

    def stop(self) -> None:
        (self.dir / READY_FILE).unlink(missing_ok=True)
        self.operator.stop()
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        for emulator in (self.cosmos, self.azurite):
            if emulator is not None:
                emulator.stop()
        self.cosmos = self.azurite = None
        self.registry.stop_all(timeout=2.0)  # anything a part failed to stop


def up(directory: Path, with_operator: bool = True) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM (or `ferry-dev down`)."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stack = DevStack(directory, operator=with_operator)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PID_FILE).write_text(f"{os.getpid()}\n")
    try:
        stack.start()
        print(f"local stack ready: export KUBECONFIG={stack.kubeconfig}", flush=True)
        print(f"endpoints: {stack.dir / 'endpoints.json'}", flush=True)
        while not stopping.wait(0.5):
            if with_operator and not stack.operator.running:
                print("the operator exited; restarting it", file=sys.stderr, flush=True)
                stack.operator.stop()
                stack.start_operator()
    finally:
        stack.stop()
        (directory / PID_FILE).unlink(missing_ok=True)
    return 0


def down(directory: Path, timeout: float = STOP_TIMEOUT) -> int:
    """Stop the stack in `directory`: ask `ferry-dev up` to stop, then stop whatever it left behind."""
    pid_file = directory / PID_FILE
    registry = ProcessRegistry(directory.resolve() / "procs")
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
    left = registry.stop_all()
    if left:
        print(f"stopped what an earlier `ferry-dev up` left running: {', '.join(left)}", file=sys.stderr)
    elif not pid_file.exists() and not (directory / "procs").exists():
        print(f"no local stack is running in {directory}", file=sys.stderr)
    return 0
