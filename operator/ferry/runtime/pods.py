"""What the runtime keeps of a worker pod: a small projection, so that thousands of pods cost little memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.kube.manifests import LABEL_ROLE, LABEL_TEMPLATE, LABEL_WORKER_INDEX
from ferry.timefmt import parse_time

ACTIVE_PHASES = frozenset({"Pending", "Running", "Unknown"})
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
FAILED_CREATE = "FailedCreate"  # the API server refused the pod (quota, admission): Ferry's own reason
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError", "InvalidImageName", FAILED_CREATE})


@dataclass(frozen=True)
class PodView:
    name: str
    role: str
    phase: str
    deleting: bool = False
    exit_code: int | None = None
    termination_reason: str | None = None
    termination_message: str | None = None
    finished_at: datetime | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    restart_count: int = 0
    last_exit_code: int | None = None
    last_termination_message: str | None = None
    template: str | None = None
    index: int | None = None  # which of its object's several worker pods, where it has several
    unschedulable: str | None = None  # the scheduler's word on why no node takes the pod (too little CPU, a taint)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def active(self) -> bool:
        """Runs, or is about to: it holds a worker slot until it ends."""
        return not self.finished

    @property
    def config_error(self) -> str | None:
        """Why the pod cannot start (a missing Secret or key, or a refused creation), if that is the case."""
        if self.waiting_reason in CONFIG_ERRORS:
            return self.waiting_message or self.waiting_reason
        return None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    view: dict[str, Any] = {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if terminated:
            view.update(
                exit_code=terminated.get("exitCode"),
                termination_reason=terminated.get("reason"),
                termination_message=terminated.get("message"),
                finished_at=parse_time(terminated.get("finishedAt")),
            )
        if waiting:
            view.update(waiting_reason=waiting.get("reason"), waiting_message=waiting.get("message"))
        view.update(
            restart_count=int(container.get("restartCount") or 0),
            last_exit_code=last.get("exitCode"),
            last_termination_message=last.get("message"),
        )
    for condition in status.get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            view["unschedulable"] = str(condition.get("message") or "Unschedulable")
    return PodView(
        name=str(meta.get("name")),
        role=str(labels.get(LABEL_ROLE, "")),
        phase=str(status.get("phase") or "Pending"),
        deleting=meta.get("deletionTimestamp") is not None,
        template=labels.get(LABEL_TEMPLATE),
        index=int(labels[LABEL_WORKER_INDEX]) if str(labels.get(LABEL_WORKER_INDEX, "")).isdigit() else None,
        **view,
    )
