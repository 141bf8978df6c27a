"""Operator settings, read from the command line and the environment (the Helm chart sets the latter)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ferry import __version__


@dataclass
class OperatorSettings:
    worker_image: str = field(default_factory=lambda: os.environ.get("FERRY_WORKER_IMAGE", f"ferry:{__version__}"))
    worker_service_account: str = field(
        default_factory=lambda: os.environ.get("FERRY_WORKER_SERVICE_ACCOUNT", "ferry-worker")
    )
    # How long the operator waits between looks at a resource when nothing wakes it earlier.
    resync_seconds: float = field(default_factory=lambda: float(os.environ.get("FERRY_RESYNC_SECONDS", "5")))


SETTINGS = OperatorSettings()
