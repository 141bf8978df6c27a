"""Operator settings, read from the environment (the Helm chart sets it) and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ferry import __version__


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


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
