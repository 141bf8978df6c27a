"""Operator settings, read from the environment (the Helm chart sets it) and the command line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ferry import __version__


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _pull_secrets(name: str) -> list[str]:
    """The chart's imagePullSecrets ([{name: ...}]) as names."""
    found = json.loads(os.environ.get(name) or "[]")
    return [str(s["name"]) if isinstance(s, dict) else str(s) for s in found]


@dataclass
class OperatorSettings:
    worker_image: str = field(default_factory=lambda: os.environ.get("FERRY_WORKER_IMAGE", f"ferry:{__version__}"))
    worker_service_account: str = field(
        default_factory=lambda: os.environ.get("FERRY_WORKER_SERVICE_ACCOUNT", "ferry-worker")
    )
    # Worker pods (copies, cleanups, copy instances) running at once; account monitors do not count.
    max_workers: int = field(default_factory=lambda: _int("FERRY_MAX_WORKERS", 50))
    max_workers_per_namespace: int = field(default_factory=lambda: _int("FERRY_MAX_WORKERS_PER_NAMESPACE", 20))
    # Reconcile passes in flight at once (each borrows an API thread only while it waits for a call).
    reconcilers: int = field(default_factory=lambda: _int("FERRY_RECONCILERS", 8))
    # The worker service account is made in each namespace on first use, bound to this ClusterRole.
    worker_cluster_role: str = field(default_factory=lambda: os.environ.get("FERRY_WORKER_CLUSTER_ROLE", ""))
    # Annotations of those service accounts (workload identity) and their image pull secrets, as JSON.
    worker_service_account_annotations: dict[str, str] = field(
        default_factory=lambda: json.loads(os.environ.get("FERRY_WORKER_SERVICE_ACCOUNT_ANNOTATIONS") or "{}")
    )
    image_pull_secrets: list[str] = field(default_factory=lambda: _pull_secrets("FERRY_IMAGE_PULL_SECRETS"))
    # The Helm release the operator belongs to: its worker pods' app.kubernetes.io/instance label.
    instance: str = field(default_factory=lambda: os.environ.get("FERRY_INSTANCE") or "ferry")
    # Stream workers refuse source URLs whose host is link-local (the cloud metadata service) unless allowed.
    allow_link_local_sources: bool = field(
        default_factory=lambda: os.environ.get("FERRY_ALLOW_LINK_LOCAL_SOURCES", "").lower() == "true"
    )
