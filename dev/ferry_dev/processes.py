"""Child processes of the local stack, and the registry that lets `ferry-dev down` stop them all.

Every process the stack starts (emulators, etcd, the API server, the controller manager, the operator,
the pods' processes) runs in a process group of its own and is recorded in <stack>/procs/ as its pid and
start time. A stack that is stopped normally removes the records; when `ferry-dev up` itself was killed,
`ferry-dev down` signals every recorded group whose leader is still the process it recorded (the start
time rules out a reused pid).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

STOP_TIMEOUT = 5.0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessRegistry:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def record(self, name: str, pid: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / name).write_text(f"{pid} {start_time(pid) or ''}\n")

    def forget(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)

    def alive(self) -> list[tuple[str, int]]:
        """Recorded groups whose leader is still the recorded process."""
        found = []
        for path in sorted(self.dir.glob("*")) if self.dir.is_dir() else []:
            pid_text, _, started = path.read_text().strip().partition(" ")
            pid = int(pid_text)
            if start_time(pid) is not None and start_time(pid) == (started or None):
                found.append((path.name, pid))
            else:
                path.unlink(missing_ok=True)
        return found

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGTERM every recorded group, SIGKILL what is left after `timeout`; returns the names stopped."""
        groups = self.alive()
        for _, pid in groups:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(start_time(pid) is not None for _, pid in groups):
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            time.sleep(0.1)
        for name, pid in groups:
            signal_group(pid, signal.SIGKILL)
            self.forget(name)
        return [name for name, _ in groups]


class ChildProcess:
    """A child in its own process group with its output in a log file, recorded while it runs."""

    def __init__(self, name: str, log_path: Path, registry: ProcessRegistry | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.registry = registry
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.registry is not None:
            self.registry.record(self.name, self._proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def send_signal(self, sig: int) -> None:
        if self._proc is not None:
            signal_group(self._proc.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            signal_group(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            signal_group(proc.pid, signal.SIGKILL)  # whatever the leader left behind goes too
        if self.registry is not None:
            self.registry.forget(self.name)
        if self._log is not None:
            self._log.close()
            self._log = None
