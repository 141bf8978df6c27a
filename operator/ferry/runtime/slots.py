"""Bounded worker concurrency: at most N worker pods per operator and M per namespace at once.

Objects that want a worker pod wait in one line, in creation order; a free slot goes to the first in
line whose namespace still has room. Slots in use are counted from the pod cache (active pods labelled
as taking a slot), plus pods this process created that the cache has not shown yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

RESERVATION_SECONDS = 30.0  # how long a created pod counts before the cache must show it


@dataclass(frozen=True)
class SlotLimits:
    total: int
    per_namespace: int


@dataclass(frozen=True)
class _Waiter:
    order: tuple[Any, ...]
    namespace: str
    wanted: int


class WorkerSlots:
    def __init__(self, limits: SlotLimits, usage: Callable[[], Mapping[str, int]]) -> None:
        """`usage` counts the active slot-taking pods per namespace, as the cache shows them."""
        self.limits = limits
        self._usage = usage
        self._waiters: dict[Hashable, _Waiter] = {}
        self._line: list[tuple[Hashable, _Waiter]] | None = None  # sorted lazily
        self._reserved: dict[tuple[str, str], float] = {}  # (namespace, pod) -> expiry

    # Counting.

    def in_use(self) -> dict[str, int]:
        now = time.monotonic()
        for key in [k for k, expiry in self._reserved.items() if expiry < now]:
            del self._reserved[key]
        used = dict(self._usage())
        for namespace, _ in self._reserved:
            used[namespace] = used.get(namespace, 0) + 1
        return used

    def reserve(self, namespace: str, pod: str) -> None:
        """A pod was just created: it counts until the cache shows it."""
        self._reserved[(namespace, pod)] = time.monotonic() + RESERVATION_SECONDS

    def seen(self, namespace: str, pod: str) -> None:
        self._reserved.pop((namespace, pod), None)

    # The line.

    def grant(self, key: Hashable, namespace: str, order: tuple[Any, ...], wanted: int = 1) -> int:
        """How many slots `key` would get now if it asked, considering everyone ahead of it in line."""
        if wanted <= 0:
            return 0
        given = self._assign(extra=(key, _Waiter(order, namespace, wanted)))
        return given.get(key, 0)

    def wait(self, key: Hashable, namespace: str, order: tuple[Any, ...], wanted: int = 1) -> None:
        waiter = _Waiter(order, namespace, wanted)
        if self._waiters.get(key) != waiter:
            self._waiters[key] = waiter
            self._line = None

    def leave(self, key: Hashable) -> None:
        if self._waiters.pop(key, None) is not None:
            self._line = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def next_in_line(self) -> list[Hashable]:
        """The waiters that free slots would go to now: wake these."""
        return list(self._assign())

    def _assign(self, extra: tuple[Hashable, _Waiter] | None = None) -> dict[Hashable, int]:
        """Hand the free slots out along the line (with `extra` in its place in it)."""
        used = self.in_use()
        free_total = self.limits.total - sum(used.values())
        given: dict[Hashable, int] = {}
        if free_total <= 0:
            return given
        if self._line is None:
            self._line = sorted(self._waiters.items(), key=lambda item: item[1].order)
        pending = extra
        for key, waiter in self._line:
            if extra is not None and key == extra[0]:
                continue  # stands in line at extra's order instead
            if pending is not None and pending[1].order < waiter.order:
                free_total = self._give(given, used, pending[0], pending[1], free_total)
                pending = None
                if free_total <= 0:
                    return given
            free_total = self._give(given, used, key, waiter, free_total)
            if free_total <= 0:
                return given
        if pending is not None:
            self._give(given, used, pending[0], pending[1], free_total)
        return given

    def _give(
        self, given: dict[Hashable, int], used: dict[str, int], key: Hashable, waiter: _Waiter, free_total: int
    ) -> int:
        room = min(free_total, self.limits.per_namespace - used.get(waiter.namespace, 0), waiter.wanted)
        if room > 0:
            given[key] = room
            used[waiter.namespace] = used.get(waiter.namespace, 0) + room
            free_total -= room
        return free_total
