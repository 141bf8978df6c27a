"""One pod's life on the local node: bind, start containers, restart them, report, terminate."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry_dev.nodeagent.podapi import PodAPI
from ferry_dev.nodeagent.podenv import ContainerConfigError, EnvResolver, command_line
from ferry_dev.nodeagent.podstatus import (
    TERMINAL_PHASES,
    Conditions,
    ContainerRecord,
    exit_code,
    now_iso,
    pod_status,
    terminated,
)
from ferry_dev.nodeagent.sandbox import sandboxed
from ferry_dev.nodeagent.volumes import PodVolumes
from ferry_dev.processes import ProcessRegistry

JSON = dict[str, Any]
log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
DEFAULT_GRACE_SECONDS = 30.0
# The kubelet gives even a forced deletion (grace 0) this long before SIGKILL.
MINIMUM_GRACE_SECONDS = 2.0
# The kubelet starts restart back-off at 10 s and caps it at 5 min: the cap keeps that ratio.
BACKOFF_CAP_FACTOR = 30.0
LOST_MESSAGE = "The container could not be located when the pod was terminated"
# The kubelet's FallbackToLogsOnError takes at most this much of a failed container's log.
TERMINATION_MESSAGE_BYTES = 2048
TERMINATION_MESSAGE_LINES = 80


@dataclass(frozen=True)
class NodeSettings:
    node_name: str
    workdir: Path
    base_env: Mapping[str, str]
    entrypoint: Sequence[str]
    max_grace_seconds: float
    restart_backoff_seconds: float
    registry: ProcessRegistry | None = None
    keep_visible: tuple[str, ...] = ()  # host paths the processes need whatever volumes cover (the "image")


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}_{name}_{uid}"


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ContainerRun(ContainerRecord):
    """A container's record plus the local process currently standing for it."""

    def __init__(self, spec: JSON, *, init: bool) -> None:
        super().__init__(spec)
        self.init = init
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: str | None = None
        self.started_mono = 0.0
        self.ever_ran = False
        self.finished = False
        self.next_start = 0.0
        self.backoff = 0.0

    @property
    def exited_ok(self) -> bool:
        return self.finished and self.state.get("terminated", {}).get("exitCode") == 0


class PodWorker:
    def __init__(self, api: PodAPI, pod: JSON, node: NodeSettings) -> None:
        meta = pod["metadata"]
        self.namespace: str = meta.get("namespace") or "default"
        self.name: str = meta["name"]
        self.uid: str = meta.get("uid") or f"{self.namespace}.{self.name}"
        self.dir = node.workdir / pod_dir_name(self.namespace, self.name, self.uid)
        self._api = api
        self._node = node
        self._pod = pod
        spec = pod.get("spec") or {}
        self._policy: str = spec.get("restartPolicy") or "Always"
        self.init = [ContainerRun(c, init=True) for c in spec.get("initContainers") or []]
        self.main = [ContainerRun(c, init=False) for c in spec.get("containers") or []]
        self._init_index = 0
        self._phase = "Pending"
        self._start_time: str | None = None
        self._conditions = Conditions()
        self._published: JSON | None = None
        self._publish_after = 0.0
        self._deleted = False
        self._stopping = False
        self._shutdown_grace: float | None = None
        self._wake = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True)
        self.volumes = PodVolumes(
            pod,
            self.dir / "volumes",
            read_secret=api.read_secret,
            read_config_map=api.read_config_map,
            request_token=api.request_token,
        )

    # Called from the watch thread.
    def start(self) -> None:
        self._thread.start()

    def update(self, pod: JSON) -> None:
        self._pod = pod
        self._wake.set()

    def mark_deleted(self, pod: JSON | None = None) -> None:
        if pod is not None:
            self._pod = pod
        self._deleted = True
        self._wake.set()

    def stop(self, grace: float | None = None) -> None:
        """Stop the pod's processes (the node shuts down): SIGTERM, SIGKILL after `grace` or the pod's own."""
        self._shutdown_grace = grace
        self._stopping = True
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def containers(self) -> list[ContainerRun]:
        return [*self.init, *self.main]

    def live_processes(self) -> list[subprocess.Popen[bytes]]:
        processes = [c.proc for c in self.containers()]  # read once: the pod's thread may clear them
        return [p for p in processes if p is not None and p.poll() is None]

    def kill_now(self) -> None:
        for container in self.containers():
            if container.proc is not None:
                _kill_group(container.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.proc.wait(1.0)

    # The pod's own thread.
    def _run(self) -> None:
        try:
            if not self._bind():
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            self._adopt(self._pod)
            while not self._stopping:
                self._wake.clear()
                if self._deleted or self._pod["metadata"].get("deletionTimestamp"):
                    self._terminate_for_deletion()
                    return
                if self._phase not in TERMINAL_PHASES:
                    self._step()
                self._publish()
                active = self.live_processes() or any(not c.finished for c in self.containers())
                self._wake.wait(POLL_SECONDS if active and self._phase not in TERMINAL_PHASES else 5.0)
            grace = self._grace() if self._shutdown_grace is None else min(self._grace(), self._shutdown_grace)
            self._terminate(grace, report=False)
        except Exception:
            log.exception("pod %s/%s: runner failure", self.namespace, self.name)
            self.kill_now()
        finally:
            self.done.set()

    def _event(self, reason: str, message: str, container: ContainerRun | None = None, kind: str = "Normal") -> None:
        """Records what happened for `kubectl describe`, as the kubelet does; losing one is harmless."""
        involved: JSON = {"apiVersion": "v1", "kind": "Pod", "namespace": self.namespace, "name": self.name}
        involved["uid"] = self.uid
        if container is not None:
            section = "initContainers" if container.init else "containers"
            involved["fieldPath"] = f"spec.{section}{{{container.name}}}"
        stamp = now_iso()
        event: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{self.name}.{time.time_ns():x}", "namespace": self.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self._node.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self._node.node_name,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._api.create_event(self.namespace, event)
        except Exception as exc:
            log.debug("pod %s/%s: event %s not recorded: %s", self.namespace, self.name, reason, exc)

    def _bind(self) -> bool:
        while not (self._stopping or self._deleted):
            if (self._pod.get("spec") or {}).get("nodeName"):
                return True
            try:
                self._api.bind_pod(self.namespace, self.name, self._node.node_name)
                self._event(
                    "Scheduled", f"Successfully assigned {self.namespace}/{self.name} to {self._node.node_name}"
                )
                return True
            except Exception as exc:
                log.warning("pod %s/%s: binding failed: %s", self.namespace, self.name, exc)
                self._wake.wait(1.0)
        return self._deleted

    def _adopt(self, pod: JSON) -> None:
        """Takes over the status an earlier runner wrote. Its processes died with it, as containers
        do when a node reboots: running ones are reported lost (exit 137, ContainerStatusUnknown) and
        restarted or not per restartPolicy, like the kubelet after a restart."""
        status = pod.get("status") or {}
        self._start_time = status.get("startTime") or now_iso()
        self._conditions.load(status.get("conditions") or [])
        previous = {s.get("name"): s for s in status.get("containerStatuses") or []}
        for container in self.main:
            old = previous.get(container.name)
            if not old:
                continue
            container.restart_count = int(old.get("restartCount") or 0)
            container.last_state = old.get("lastState") or {}
            state = old.get("state") or {}
            if "running" in state:
                lost = terminated(137, state["running"].get("startedAt"), reason="ContainerStatusUnknown")
                lost["message"] = LOST_MESSAGE
                container.ever_ran = True
                self._after_exit(container, lost)
            elif "terminated" in state:
                container.ever_ran = True
                self._after_exit(container, state["terminated"])
            else:
                container.ever_ran = bool(container.restart_count or container.last_state)
        if status.get("phase") in TERMINAL_PHASES:
            self._phase = status["phase"]
            for container in self.containers():
                container.finished = True
        if any(c.ever_ran for c in self.main):
            self._init_index = len(self.init)  # Initialized before: the main containers ran.

    def _step(self) -> None:
        now = time.monotonic()
        while self._init_index < len(self.init):
            container = self.init[self._init_index]
            self._drive(container, now)
            if not container.finished:
                break
            if not container.exited_ok:
                self._phase = "Failed"
                return
            self._init_index += 1
        if self._init_index < len(self.init):
            self._phase = "Pending"
            return
        for container in self.main:
            self._drive(container, now)
        if all(c.finished for c in self.main):
            self._phase = "Succeeded" if all(c.exited_ok for c in self.main) else "Failed"
        elif any(c.ever_ran for c in self.main):
            self._phase = "Running"

    def _drive(self, container: ContainerRun, now: float) -> None:
        if container.proc is not None:
            returncode = container.proc.poll()
            if returncode is None:
                return
            self._reap(container, returncode)
        if not container.finished and container.proc is None and now >= container.next_start:
            self._start(container)

    def _process_name(self, container: ContainerRun) -> str:
        return f"pod_{self.namespace}_{self.name}_{container.name}"

    def _reap(self, container: ContainerRun, returncode: int) -> None:
        assert container.proc is not None
        # When a container's main process ends, the runtime kills whatever it left behind.
        _kill_group(container.proc.pid, signal.SIGKILL)
        container.proc = None
        if self._node.registry is not None:
            self._node.registry.forget(self._process_name(container))
        code = exit_code(returncode)
        self._after_exit(
            container, terminated(code, container.started_at, message=self._termination_message(container, code))
        )

    def _termination_message(self, container: ContainerRun, code: int) -> str:
        """FallbackToLogsOnError: a failed container's message is the tail of its log, as the kubelet takes it."""
        if code == 0 or container.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        try:
            with open(self.dir / f"{container.name}.log", "rb") as log_file:
                log_file.seek(0, os.SEEK_END)
                log_file.seek(max(0, log_file.tell() - TERMINATION_MESSAGE_BYTES))
                tail = log_file.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(tail.splitlines()[-TERMINATION_MESSAGE_LINES:])

    def _restarts(self, container: ContainerRun, code: int) -> bool:
        if container.init:
            return self._policy != "Never" and code != 0
        return self._policy == "Always" or (self._policy == "OnFailure" and code != 0)

    def _after_exit(self, container: ContainerRun, state: JSON) -> None:
        code = int(state.get("exitCode", 1))
        if not self._restarts(container, code):
            container.state = {"terminated": state}
            container.finished = True
            return
        initial = self._node.restart_backoff_seconds
        cap = initial * BACKOFF_CAP_FACTOR
        if container.started_mono and time.monotonic() - container.started_mono > 2 * cap:
            container.backoff = 0.0  # a container that ran long enough starts over, as the kubelet's
        delay = container.backoff
        container.backoff = min(cap, max(initial, 2 * container.backoff))
        container.next_start = time.monotonic() + delay
        container.last_state = {"terminated": state}
        if delay > 0:
            message = f"back-off {delay:g}s restarting failed container={container.name} pod={self.name}"
            container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self._event("BackOff", f"Back-off restarting failed container {container.name}", container, "Warning")
        else:
            container.state = {"terminated": state}

    def _start(self, container: ContainerRun) -> None:
        try:
            self.volumes.prepare()
            env = EnvResolver(self._pod, self._api.read_secret, self._api.read_config_map).resolve(
                container.spec, {**self._node.base_env, "HOSTNAME": self.name}
            )
            mounts = self.volumes.mounts(container.spec)
        except Exception as exc:
            reason = "CreateContainerConfigError" if isinstance(exc, ContainerConfigError) else "CreateContainerError"
            if container.state.get("waiting", {}).get("message") != str(exc):
                self._event("Failed", f"Error: {exc}", container, "Warning")
            container.state = {"waiting": {"reason": reason, "message": str(exc)}}
            # No watch on Secrets here: retry on a short period so a late Secret is picked up soon.
            container.next_start = time.monotonic() + min(self._node.restart_backoff_seconds, 2.0)
            return
        argv = command_line(container.spec, self._node.entrypoint, env)
        executable = shutil.which(argv[0], path=env.get("PATH")) if argv else None
        if container.ever_ran:
            container.restart_count += 1
        container.ever_ran = True
        container.started_at = now_iso()
        container.started_mono = time.monotonic()
        if executable is None:
            missing = argv[0] if argv else "<no command>"
            message = f'exec: "{missing}": executable file not found in $PATH'
            self._after_exit(container, terminated(128, container.started_at, reason="StartError", message=message))
            return
        with open(self.dir / f"{container.name}.log", "ab") as output:
            container.proc = subprocess.Popen(
                sandboxed([executable, *argv[1:]], mounts, keep=self._node.keep_visible),
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so the whole tree can be signalled
            )
        if self._node.registry is not None:
            self._node.registry.record(self._process_name(container), container.proc.pid)
        container.container_id = f"ferry://{self._node.node_name}/{container.proc.pid}"
        container.state = {"running": {"startedAt": container.started_at}}
        self._event("Started", f"Started container {container.name}", container)

    def _publish(self, *, now: bool = False) -> None:
        status = pod_status(
            phase=self._phase,
            start_time=self._start_time,
            conditions=self._conditions,
            init=self.init,
            main=self.main,
            init_done=self._init_index >= len(self.init),
        )
        if status == self._published or (time.monotonic() < self._publish_after and not now):
            return
        try:
            self._api.patch_pod_status(self.namespace, self.name, status)
            self._published = status
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                self._deleted = True
            else:
                # Retried on a later pass with the then current status; spaced out not to flood the log.
                self._publish_after = time.monotonic() + 1.0
                log.warning("pod %s/%s: status write failed: %s", self.namespace, self.name, exc)

    def _grace(self) -> float:
        meta, spec = self._pod["metadata"], self._pod.get("spec") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        grace = max(float(DEFAULT_GRACE_SECONDS if grace is None else grace), MINIMUM_GRACE_SECONDS)
        return min(grace, self._node.max_grace_seconds)

    def _terminate(self, grace: float, *, report: bool) -> None:
        """SIGTERM every container's process group, SIGKILL what is left after the grace period."""
        running = [c for c in self.containers() if c.proc is not None]
        for container in running:
            assert container.proc is not None
            _kill_group(container.proc.pid, signal.SIGTERM)
            if report:
                self._event("Killing", f"Stopping container {container.name}", container)
        deadline = time.monotonic() + grace
        while any(c.proc is not None and c.proc.poll() is None for c in running) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        for container in running:
            assert container.proc is not None
            _kill_group(container.proc.pid, signal.SIGKILL)
            returncode = container.proc.wait()
            container.proc = None
            if self._node.registry is not None:
                self._node.registry.forget(self._process_name(container))
            if report:
                container.state = {"terminated": terminated(exit_code(returncode), container.started_at)}
                container.finished = True
        if report:
            for container in self.containers():
                container.finished = True
            if self._phase not in TERMINAL_PHASES:
                self._phase = "Succeeded" if all(c.exited_ok for c in self.main) else "Failed"

    def _terminate_for_deletion(self) -> None:
        self._terminate(self._grace(), report=True)
        if self._deleted:
            return
        self._publish(now=True)
        try:
            # The containers are gone: complete the graceful deletion, as the kubelet does.
            self._api.delete_pod_now(self.namespace, self.name, self.uid)
        except Exception as exc:
            log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)
