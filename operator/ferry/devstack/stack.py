"""The local stack: Azurite, cosmosdb-server, the Kubernetes API emulator, the pod runner and the operator.

`DevStack` is what `ferry dev up`, `ferry demo` and the end-to-end tests share. Everything listens on
127.0.0.1 and everything started is stopped again by `stop()`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ferry.devstack.emulators import Azurite, CosmosServer, free_port
from ferry.devstack.lifecycle import Service

STORAGE_ACCOUNTS = ("ferrysrc", "ferrydst")
PID_FILE = "stack.pid"
READY_FILE = "ready"


def ferry_executable() -> str:
    """The `ferry` script of this installation: worker pods and the operator run the same code."""
    beside = Path(sys.executable).with_name("ferry")
    return str(beside) if beside.exists() else (shutil.which("ferry") or "ferry")


class DevStack(Service):
    def __init__(self, directory: Path, *, operator: bool = True, restart_backoff_seconds: float = 1.0) -> None:
        self.dir = directory.resolve()
        self.with_operator = operator
        self.restart_backoff_seconds = restart_backoff_seconds
        self.azurite: Azurite | None = None
        self.cosmos: CosmosServer | None = None
        self.kube_url = ""
        self._kube_stop: Any = None
        self.runner: Any = None
        self.operator_proc: subprocess.Popen[bytes] | None = None
        self._operator_log: IO[bytes] | None = None
        self.metrics_port = 0

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def env(self) -> dict[str, str]:
        """The environment for kubectl, the operator and the worker processes."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return env

    def start(self) -> None:
        from ferry.devstack.crds import install_crds
        from ferry.devstack.kubeapi import run_kubeapi_in_thread, write_kubeconfig
        from ferry.devstack.podrunner import PodRunner

        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        (self.dir / READY_FILE).unlink(missing_ok=True)
        try:
            self.azurite = Azurite(self.dir / "azurite", accounts=STORAGE_ACCOUNTS)
            self.azurite.start()
            self.cosmos = CosmosServer(self.dir / "cosmos")
            self.cosmos.start()
            self.kube_url, self._kube_stop = run_kubeapi_in_thread("127.0.0.1", 0, self._pod_log)
            write_kubeconfig(self.kubeconfig, self.kube_url)
            install_crds(self.kubeconfig)
            self.runner = PodRunner(
                self.kubeconfig,
                self.dir / "pods",
                extra_env={k: v for k, v in self.env().items() if k in ("KUBECONFIG", "PATH", "PYTHONUNBUFFERED")},
                entrypoint=(ferry_executable(),),
                max_grace_seconds=10.0,
                restart_backoff_seconds=self.restart_backoff_seconds,
            )
            self.runner.start()
            if self.with_operator:
                self.start_operator()
            self._write_endpoints()
            (self.dir / READY_FILE).write_text(self.kube_url + "\n")
        except BaseException:
            self.stop()
            raise

    def _pod_log(self, namespace: str, pod: str, container: str | None) -> Path | None:
        """`kubectl logs` reads what the pod runner recorded of the pod's process."""
        return self.runner.log_path(namespace, pod, container) if self.runner is not None else None

    def start_operator(self) -> None:
        if self.operator_proc is not None and self.operator_proc.poll() is None:
            return
        self.metrics_port = free_port()
        self._operator_log = open(self.logs / "operator.log", "ab")  # noqa: SIM115 - closed in stop_operator
        cmd = [ferry_executable(), "operator", "--metrics-port", str(self.metrics_port), "--metrics-host", "127.0.0.1"]
        self.operator_proc = subprocess.Popen(
            cmd, env=self.env(), stdout=self._operator_log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop_operator(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        proc, self.operator_proc = self.operator_proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._operator_log is not None:
            self._operator_log.close()
            self._operator_log = None

    def _write_endpoints(self) -> None:
        assert self.azurite is not None and self.cosmos is not None
        data = {
            "kubernetes": {"server": self.kube_url, "kubeconfig": str(self.kubeconfig)},
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
        self.stop_operator()
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self._kube_stop is not None:
            self._kube_stop()
            self._kube_stop = None
        for emulator in (self.cosmos, self.azurite):
            if emulator is not None:
                emulator.stop()
        self.cosmos = self.azurite = None


def up(directory: Path, with_operator: bool = True) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM (or `ferry dev down`)."""
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stack = DevStack(directory, operator=with_operator)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PID_FILE).write_text(f"{os.getpid()}\n")
    try:
        stack.start()
        print(f"local stack ready: KUBECONFIG={stack.kubeconfig}", flush=True)
        print(f"endpoints: {stack.dir / 'endpoints.json'}", flush=True)
        while not stopping:
            time.sleep(0.5)
            if stack.operator_proc is not None and stack.operator_proc.poll() is not None:
                print("the operator exited; restarting it", file=sys.stderr, flush=True)
                stack.start_operator()
    finally:
        stack.stop()
        (directory / PID_FILE).unlink(missing_ok=True)
    return 0


def down(directory: Path, timeout: float = 60.0) -> int:
    pid_file = directory / PID_FILE
    if not pid_file.exists():
        print(f"no local stack is running in {directory}", file=sys.stderr)
        return 1
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.2)
    print(f"the local stack (pid {pid}) did not stop within {timeout:.0f}s", file=sys.stderr)
    return 1
