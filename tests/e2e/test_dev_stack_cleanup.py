"""`ferry-dev up` and `ferry-dev down` leave nothing that looks live: no `ready`, `endpoints.json` or `kubeconfig`
of a stack that is gone, no process of a killed `ferry-dev up`, nothing of its node (containers, shims, mounts,
cgroups, network namespaces, the bridge, the DNAT rule); and `ferry-dev down` after a normal run finds
everything stopped by `ferry-dev up` itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ferry_dev.network import Network
from ferry_dev.node import cleanup, leftovers
from ferry_dev.processes import ProcessRegistry, start_time
from ferry_dev.stack import ferry_executable

STATE_FILES = ("ready", "endpoints.json", "kubeconfig")
PARTS = {
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "containerd",
    "azurite",
    "cosmosdb-server",
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _up(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [ferry_executable("ferry-dev"), "up", "--dir", str(directory)],
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(up: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    """Until this `ferry-dev up` says its stack is ready (not until some `ready` file exists)."""
    deadline = time.monotonic() + timeout
    while "local stack ready" not in log.read_text(errors="replace"):
        assert up.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "the stack did not become ready"
        time.sleep(0.2)


def _down(directory: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [ferry_executable("ferry-dev"), "down", "--dir", str(directory)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    return done


def _kill(up: subprocess.Popen[bytes]) -> None:
    os.killpg(up.pid, signal.SIGKILL)  # only `ferry-dev up` itself: its children have groups of their own
    up.wait(10)


def _alive(pids: dict[str, tuple[int, str | None]]) -> list[str]:
    return [name for name, (pid, started) in pids.items() if start_time(pid) is not None and start_time(pid) == started]


def test_dev_up_cleans_after_a_killed_one_refuses_a_live_one_and_dev_down_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    registry = ProcessRegistry(directory / "procs")
    ups: list[subprocess.Popen[bytes]] = []
    try:
        # A killed `ferry-dev up` leaves its parts running and its files behind.
        ups.append(first := _up(directory, tmp_path / "up1.log"))
        _wait_ready(first, tmp_path / "up1.log")
        stale = {name: (directory / name).read_text() for name in STATE_FILES}
        first_network = Network.load(directory / "network.json")
        assert first_network is not None
        _kill(first)
        assert leftovers(directory, first_network)  # the operator's container and its shim, the bridge
        orphans = {name: (pid, start_time(pid)) for name, pid in registry.alive()}
        assert set(orphans) >= PARTS

        # The next `ferry-dev up` in that directory stops them and starts afresh.
        ups.append(second := _up(directory, tmp_path / "up2.log"))
        _wait_ready(second, tmp_path / "up2.log")
        assert _alive(orphans) == []
        second_network = Network.load(directory / "network.json")
        assert second_network is not None
        if second_network.subnet != first_network.subnet:
            # Another subnet (a parallel stack took the first one's meanwhile). The bridge, the DNAT rule's
            # comment, the cgroup root and the node's directories are named after the directory, so they are the
            # second stack's now: what must be gone is the first one's address on the bridge and its DNAT target.
            rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
            target = f"--to-destination {first_network.gateway}:"
            assert not [r for r in rules.splitlines() if first_network.comment in r and target in r]
            shown = subprocess.run(["ip", "-4", "addr", "show", "dev", first_network.bridge], capture_output=True)
            assert f"inet {first_network.gateway}/" not in shown.stdout.decode()
        assert "left running" in (tmp_path / "up2.log").read_text()
        assert (directory / "ready").read_text() != stale["ready"]

        # A third one while the second runs refuses, and touches nothing.
        third = subprocess.run(
            [ferry_executable("ferry-dev"), "up", "--dir", str(directory)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert third.returncode == 1 and "already runs" in third.stderr and str(second.pid) in third.stderr
        assert all((directory / name).exists() for name in STATE_FILES)
        assert {name for name, _ in registry.alive()} >= PARTS

        # `ferry-dev down` after a kill: the parts stopped, and no file says the stack runs.
        _kill(second)
        assert (directory / "ready").exists()
        stopping = time.monotonic()
        down = _down(directory)
        stopped_in = time.monotonic() - stopping
        assert "left running" in down.stderr
        assert stopped_in < 20, stopped_in
        assert registry.alive() == []
        assert leftovers(directory, second_network) == []
        assert [name for name in STATE_FILES if (directory / name).exists()] == []

        # After a normal run, `ferry-dev up` has stopped every part itself when `ferry-dev down` returns.
        ups.append(fourth := _up(directory, tmp_path / "up4.log"))
        _wait_ready(fourth, tmp_path / "up4.log")
        fourth_network = Network.load(directory / "network.json")
        assert fourth_network is not None
        down = _down(directory)
        assert fourth.wait(10) == 0
        assert "left running" not in down.stderr, down.stderr
        assert registry.alive() == []
        assert [name for name in STATE_FILES if (directory / name).exists()] == []
        assert not (directory / "stack.pid").exists()
        assert leftovers(directory, fourth_network) == []
    finally:
        for up in ups:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
        registry.stop_all(timeout=1)
        cleanup(directory)
