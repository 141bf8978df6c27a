"""A keyed work queue for level-based reconciliation, in the manner of client-go's workqueue.

- A key waits in the queue at most once however often it is added (events coalesce).
- A key is handed to one worker at a time; added while being processed, it is queued again when done.
- add_after() schedules a later look (backoff, timeouts) with one timer for the whole queue, not one per key.
- failed() reschedules a key with exponential backoff per key; forget() resets it after a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from ferry.retry import backoff

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._ready: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()  # added while processing
        self._later: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # the earliest scheduled time per key
        self._failures: dict[K, int] = {}
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._timer_changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def scheduled(self) -> int:
        return len(self._due)

    def add(self, key: K) -> None:
        if self._closed:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._ready.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        when = asyncio.get_running_loop().time() + delay
        if self._due.get(key, float("inf")) <= when:
            return
        self._due[key] = when
        heapq.heappush(self._later, (when, next(self._seq), key))
        self._timer_changed.set()

    async def get(self) -> K:
        while True:
            if self._closed:
                raise asyncio.CancelledError
            if self._ready:
                key = self._ready.popleft()
                self._queued.discard(key)
                self._processing.add(key)
                return key
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def failed(self, key: K) -> float:
        """Schedule the key again after its backoff; returns the delay."""
        attempts = self._failures.get(key, 0)
        self._failures[key] = attempts + 1
        delay = backoff(attempts + 1, self.base_delay, self.max_delay)
        self.done(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts the backoff over."""
        self._failures.pop(key, None)

    def drop(self, key: K) -> None:
        """The object is gone: no retries or timers for it."""
        self._failures.pop(key, None)
        self._due.pop(key, None)

    async def run_timer(self) -> None:
        """Moves scheduled keys into the queue when they are due (one task for the whole queue)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._timer_changed.clear()
            now = loop.time()
            while self._later and self._later[0][0] <= now:
                when, _, key = heapq.heappop(self._later)
                if self._due.get(key) == when:
                    del self._due[key]
                    self.add(key)
            timeout = self._later[0][0] - now if self._later else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), timeout)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._timer_changed.set()
