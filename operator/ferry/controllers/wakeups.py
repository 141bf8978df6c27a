"""Wakes the per-resource reconcile loops early when something they depend on (a worker pod) changes."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _event(self, key: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())

    def wake(self, key: str) -> None:
        self._event(key).set()

    def wait(self, key: str, timeout: float, stopped: Callable[[], bool], step: float = 0.5) -> None:
        """Sleep until woken, the timeout passes, or the loop is told to stop."""
        event = self._event(key)
        remaining = timeout
        while remaining > 0 and not stopped():
            if event.wait(min(step, remaining)):
                break
            remaining -= step
        event.clear()

    def forget(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


WAKEUPS = Wakeups()
