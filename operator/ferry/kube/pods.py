"""Reading the worker pods of a resource: which are active, which finished and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.kube import client
from ferry.kube.objects import LABEL_OWNER_UID, LABEL_ROLE


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    deleting: bool
    exit_code: int | None
    waiting_reason: str | None
    waiting_message: str | None

    @property
    def active(self) -> bool:
        return not self.deleting and self.phase in ("Pending", "Running", "Unknown")

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _view(pod: Any) -> PodView:
    exit_code = waiting_reason = waiting_message = None
    for cs in pod.status.container_statuses or [] if pod.status else []:
        if cs.state and cs.state.terminated:
            exit_code = cs.state.terminated.exit_code
        if cs.state and cs.state.waiting:
            waiting_reason = cs.state.waiting.reason
            waiting_message = cs.state.waiting.message
    return PodView(
        name=pod.metadata.name,
        phase=(pod.status.phase if pod.status and pod.status.phase else "Pending"),
        deleting=pod.metadata.deletion_timestamp is not None,
        exit_code=exit_code,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
    )


def owned_pods(namespace: str, owner_uid: str, role: str) -> list[PodView]:
    pods = client.core().list_namespaced_pod(
        namespace, label_selector=f"{LABEL_OWNER_UID}={owner_uid},{LABEL_ROLE}={role}"
    )
    return sorted((_view(p) for p in pods.items), key=lambda p: p.name)


def create_pod(namespace: str, manifest: dict[str, Any]) -> str:
    body: Any = manifest
    created: Any = client.core().create_namespaced_pod(namespace, body)
    return str(created.metadata.name)


def delete_pod(namespace: str, name: str, grace_seconds: int | None = None) -> None:
    try:
        client.core().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
    except ApiException as exc:
        if exc.status != 404:
            raise
