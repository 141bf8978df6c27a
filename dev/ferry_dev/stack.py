"""The local stack: a real control plane, the node agent, the emulators and the operator, on 127.0.0.1.

`DevStack` is what `ferry-dev up`, `ferry-dev demo` and the end-to-end tests share. Everything started is
recorded in <dir>/procs and stopped by `stop()`, or by `ferry-dev down` when `ferry-dev up` was killed.
"""

from __future__ import annotations

import contextlib
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
from ferry_dev.emulators import Azurite, CosmosWithChangeFeed, free_port
from ferry_dev.install import OPERATOR_ACCOUNT, RELEASE, RELEASE_NAMESPACE, WORKER_ACCOUNT, Installer
from ferry_dev.lifecycle import Service
from ferry_dev.nodeagent.podrunner import PodRunner
from ferry_dev.processes import ChildProcess, ProcessRegistry, start_time

STORAGE_ACCOUNTS = ("ferrysrc", "ferrydst")
PID_FILE = "stack.pid"
READY_FILE = "ready"
ENDPOINTS_FILE = "endpoints.json"
KUBECONFIG_FILE = "kubeconfig"
# What a running stack leaves for scripts and users; none of it may outlive the stack, or it would be taken as live.
STATE_FILES = (READY_FILE, ENDPOINTS_FILE, KUBECONFIG_FILE)
# How long `ferry-dev down` waits for `ferry-dev up` to stop its parts itself (the operator, the node agent's
# pods with their grace periods, the control plane, the emulators) before it stops what is left.
STOP_TIMEOUT = 90.0


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
        self.cosmos: CosmosWithChangeFeed | None = None
        self.control_plane: ControlPlane | None = None
        self.installer: Installer | None = None
        self.runner: PodRunner | None = None
        self.operator = ChildProcess("operator", self.dir / "logs" / "operator.log", self.registry)
        self.metrics_port = 0

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
        try:
            binaries = ensure_binaries()
            self.azurite = Azurite(self.dir / "azurite", accounts=STORAGE_ACCOUNTS, registry=self.registry)
            # Every Cosmos client of the stack goes through the change feed stand-in: copy jobs read the change feed.
            self.cosmos = CosmosWithChangeFeed(self.dir / "cosmos", registry=self.registry)
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
            "FERRY_INSTANCE": RELEASE,  # as the chart sets it: the worker pods' app.kubernetes.io/instance
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
        (self.dir / ENDPOINTS_FILE).write_text(json.dumps(data, indent=2) + "\n")

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
        clear_state(self.dir)  # the kubeconfig and endpoints name servers that are gone now


def up(directory: Path, with_operator: bool = True) -> int:
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
    stack = DevStack(directory, operator=with_operator)
    directory.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(directory)  # an earlier `ferry-dev up` was killed: its files and processes are stale
    (directory / PID_FILE).write_text(f"{os.getpid()} {start_time(os.getpid()) or ''}\n")
    try:
        stack.start()
        print(f"local stack ready: export KUBECONFIG={stack.kubeconfig}", flush=True)
        print(f"endpoints: {stack.dir / ENDPOINTS_FILE}", flush=True)
        while not stopping.wait(0.5):
            if with_operator and not stack.operator.running:
                print("the operator exited; restarting it", file=sys.stderr, flush=True)
                stack.operator.stop()
                stack.start_operator()
    finally:
        stack.stop()
        (directory / PID_FILE).unlink(missing_ok=True)
    return 0


def _stop_leftovers(directory: Path) -> list[str]:
    """Stop what a killed `ferry-dev up` left running in `directory` and remove its files; the names stopped."""
    left = ProcessRegistry(directory.resolve() / "procs").stop_all()
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
