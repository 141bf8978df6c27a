"""Pod and container status documents shaped as the kubelet writes them."""

from __future__ import annotations

import datetime
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

TERMINAL_PHASES = ("Succeeded", "Failed")
LOCAL_IP = "127.0.0.1"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """A process killed by signal N reports 128+N, as a container runtime does (SIGKILL: 137)."""
    return 128 - returncode if returncode < 0 else returncode


def terminated(code: int, started_at: str | None, *, reason: str | None = None, message: str = "") -> JSON:
    state: JSON = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": started_at,
        "finishedAt": now_iso(),
    }
    if code > 128 and code - 128 in signal.valid_signals():
        state["signal"] = code - 128
    if message:
        state["message"] = message
    return state


@dataclass
class ContainerRecord:
    """What the status reports about one container across its restarts."""

    spec: JSON
    restart_count: int = 0
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    container_id: str | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return "running" in self.state

    def to_status(self, *, ready: bool) -> JSON:
        status: JSON = {
            "name": self.name,
            "image": self.spec.get("image") or "",
            "imageID": "",
            "ready": ready,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


class Conditions:
    """Pod conditions keeping lastTransitionTime until a condition's status really changes."""

    def __init__(self) -> None:
        self._current: dict[str, JSON] = {}

    def set(self, kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> None:
        status = "True" if ok else "False"
        previous = self._current.get(kind)
        changed_at = previous["lastTransitionTime"] if previous and previous["status"] == status else now_iso()
        condition: JSON = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": changed_at}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        self._current[kind] = condition

    def load(self, conditions: list[JSON]) -> None:
        self._current = {c["type"]: dict(c) for c in conditions if "type" in c and "status" in c}

    def to_list(self) -> list[JSON]:
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        return sorted(self._current.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 99)


def pod_status(
    *,
    phase: str,
    start_time: str | None,
    conditions: Conditions,
    init: Sequence[ContainerRecord],
    main: Sequence[ContainerRecord],
    init_done: bool,
) -> JSON:
    terminal = phase in TERMINAL_PHASES
    unready = [c.name for c in main if not c.running]
    conditions.set("PodScheduled", True)
    conditions.set("PodReadyToStartContainers", not terminal)
    if init_done:
        conditions.set("Initialized", True)
    else:
        pending = [c.name for c in init if "terminated" not in c.state or c.state["terminated"]["exitCode"]]
        conditions.set(
            "Initialized",
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending)}]",
        )
    for kind in ("ContainersReady", "Ready"):
        if terminal:
            conditions.set(kind, False, "PodCompleted")
        elif unready:
            conditions.set(kind, False, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        else:
            conditions.set(kind, True)
    status: JSON = {
        "phase": phase,
        "conditions": conditions.to_list(),
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": LOCAL_IP,
        "podIPs": [{"ip": LOCAL_IP}],
        "startTime": start_time,
        "containerStatuses": [c.to_status(ready=c.running and not terminal) for c in main],
    }
    if init:
        status["initContainerStatuses"] = [c.to_status(ready="terminated" in c.state) for c in init]
    return status
