"""Collects what a worker library reports (its whole typed part of the status, each time), as the status
would receive it."""

from __future__ import annotations

import threading
from typing import Any

from ferry.api.common import FerryModel


class Reports:
    """Every report, in order, as wire dicts; merged() is the status they add up to."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, part: FerryModel, force: bool = False) -> None:
        with self.lock:
            self.patches.append(part.wire())

    def merged(self) -> dict[str, Any]:
        status: dict[str, Any] = {}
        with self.lock:
            for patch in self.patches:
                status.update(patch)
        return status
