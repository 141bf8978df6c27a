"""Status patches of a ContainerCopyJob: progress of the whole job, read from the state store.

processedCount is the sum over all work units' checkpoints, so every instance reports the job's
progress, not its own: the units this instance holds count with their latest checkpoint, the others
as last read from the store (re-read every few seconds, so that progress reports do not take
request capacity from the copy). items/s is measured over a sliding window of those sums.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ferry.storage.cosmos import redact, throttled_requests
from ferry.storage.transferstate import StateStore, now_iso

REPORT_INTERVAL = 1.0
RATE_WINDOW = 10.0
UNITS_REFRESH = 5.0


class Reporter:
    def __init__(self, report: Callable[[dict[str, Any]], None], store: StateStore, job_id: str) -> None:
        self._report = report
        self._store = store
        self._job_id = job_id
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._last_sent = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._stored: dict[str, int] = {}
        self._read_at = -UNITS_REFRESH
        self._local: dict[str, int] = {}

    def checkpointed(self, unit_id: str, processed: int) -> None:
        """This instance checkpointed a unit it holds."""
        with self._lock:
            self._local[unit_id] = processed

    def processed(self, fresh: bool = True) -> int:
        """The sum over all units; `fresh` re-reads them all from the store."""
        now = time.monotonic()
        if fresh or now - self._read_at >= UNITS_REFRESH:
            stored = {str(u["id"]): int(u.get("processedCount", 0)) for u in self._store.job_units(self._job_id)}
            with self._lock:
                self._stored, self._read_at = stored, now
                self._local.clear()
        with self._lock:
            return sum({**self._stored, **self._local}.values())

    def _rate(self, now: float, processed: int) -> float | None:
        self._samples.append((now, processed))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_time, first_count = self._samples[0]
        if now - first_time < 0.5:
            return None
        return max(0.0, (processed - first_count) / (now - first_time))

    def send(self, job: dict[str, Any], force: bool = False, extra: dict[str, Any] | None = None) -> None:
        """Report the job's progress: always when forced (state changes), else at most every second."""
        with self._send_lock:
            now = time.monotonic()
            if not force and now - self._last_sent < REPORT_INTERVAL:
                return
            self._last_sent = now
            processed = self.processed(fresh=force)
            total = job.get("totalCount")
            body: dict[str, Any] = {"processedCount": processed, "lastUpdateTime": now_iso()}
            body["throttledRequests"] = throttled_requests()
            if job.get("startTime"):
                body["startTime"] = job["startTime"]
            if total is not None:
                body["totalCount"] = int(total)
                body["percent"] = 100 if int(total) == 0 else min(100, int(processed * 100 / int(total)))
            rate = self._rate(now, processed)
            if rate is not None:
                body["itemsPerSecond"] = round(rate, 1)
                if total is not None and rate > 0:
                    body["estimatedSecondsRemaining"] = int(max(0, int(total) - processed) / rate)
            if extra:
                body.update(extra)
            if isinstance(body.get("failure"), dict):
                body["failure"] = {k: redact(str(v)) for k, v in body["failure"].items()}
            self._report(body)
