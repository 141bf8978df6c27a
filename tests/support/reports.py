"""Collects the status patches a worker library reports, as the operator's status would receive them."""

from __future__ import annotations

import threading
from typing import Any


class Reports:
    """Every status patch, in order; merged() is the status they add up to."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, patch: dict[str, Any]) -> None:
        with self.lock:
            self.patches.append(patch)

    def merged(self) -> dict[str, Any]:
        status: dict[str, Any] = {}
        with self.lock:
            for patch in self.patches:
                status.update(patch)
        return status
