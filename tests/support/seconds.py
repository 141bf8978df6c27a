"""Whole-second moments for backup tests: item _ts, capture read times and restore times are whole seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def tick() -> None:
    """Sleep past the current second."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.05)


def moment() -> datetime:
    """A whole-second time after everything written so far and before anything written next."""
    tick()
    at = datetime.now(UTC).replace(microsecond=0)
    tick()
    return at
