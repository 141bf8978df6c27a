"""Progress of a job in `__datatransferstate` (a copy job or a restore), as its instances report it.

The processed count is the sum over all work units' checkpoints, so every instance reports the job's
progress, not its own: the units this instance holds count with their latest checkpoint, the others
as last read from the store (re-read every few seconds, so that progress reports do not take
request capacity from the copy). items/s is measured over a sliding window of those sums.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ferry.api.common import Failure, FerryModel
from ferry.api.transfer import TransferRecord, TransferState, Verification
from ferry.storage.cosmos import redact
from ferry.transfer.state import JobStore

M = TypeVar("M", bound=FerryModel)


@dataclass(frozen=True)
class GroupCount:
    """The units of one part of a job (a copy job's task): items processed, units done of all."""

    processed: int = 0
    units: int = 0
    done: int = 0


@dataclass(frozen=True)
class Totals:
    processed: int
    total: int | None
    percent: int | None
    items_per_second: float | None
    estimated_seconds_remaining: int | None
    # Online copies: source changes not yet applied, and how old the oldest of them is (None: not streaming).
    pending_changes: int | None = None
    seconds_behind: int | None = None
    throttled: int = 0  # 429 responses met on the job's units, by every instance
    groups: dict[int, GroupCount] | None = None  # by the units' `task` (absent: 0)


# Receives the instances' whole part of the job's status; True forces it out now (a state change).
ReportFn = Callable[[M, bool], None]
# Builds that part from the job document and the totals.
PartBuilder = Callable[[dict[str, Any], Totals], M]

REPORT_INTERVAL = 1.0
RATE_WINDOW = 10.0
UNITS_REFRESH = 5.0


class Reporter(Generic[M]):
    def __init__(
        self,
        report: ReportFn[M],
        build: PartBuilder[M],
        store: JobStore,
        job_id: str,
        previous_rate: tuple[float | None, int | None] = (None, None),
    ) -> None:
        self._report = report
        self._build = build
        self._store = store
        self._job_id = job_id
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._last_sent = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._stored: dict[str, int] = {}
        self._throttled = 0
        self._read_at = -UNITS_REFRESH
        self._local: dict[str, int] = {}
        self._group_of: dict[str, int] = {}
        self._done: set[str] = set()  # units done, as stored or checkpointed here
        self._stored_lag: dict[str, tuple[int, float]] = {}
        self._local_lag: dict[str, tuple[int, float]] = {}
        # The rate and time left last reported (by any instance) stand until this one has measured its own:
        # every report carries the whole part, and a field left out would vanish from the status.
        self._items_per_second, self._eta = previous_rate

    def checkpointed(self, unit_id: str, processed: int, done: bool = False) -> None:
        """This instance checkpointed a unit it holds."""
        with self._lock:
            self._local[unit_id] = processed
            if done:
                self._done.add(unit_id)

    def lagged(self, unit_id: str, pending: int, seconds_behind: float) -> None:
        """This instance applied a streaming unit's changes up to `pending` left, `seconds_behind` old."""
        with self._lock:
            self._local_lag[unit_id] = (pending, seconds_behind)

    def lag(self) -> tuple[int | None, int | None]:
        """Pending changes and seconds behind over the units, as last found; None until every unit streams."""
        with self._lock:
            lags = {**self._stored_lag, **self._local_lag}
            units = len(self._stored)
        if not lags or len(lags) < units:
            return None, None
        return sum(p for p, _ in lags.values()), int(max(b for _, b in lags.values()))

    def processed(self, fresh: bool = True) -> int:
        """The sum over all units; `fresh` re-reads them all from the store."""
        now = time.monotonic()
        if fresh or now - self._read_at >= UNITS_REFRESH:
            units = self._store.job_units(self._job_id)
            # The final units (the verification) copy nothing and never stream.
            stored = {str(u["id"]): int(u.get("processedCount", 0)) for u in units if not u.get("final")}
            throttled = sum(int(u.get("throttledRequests") or 0) for u in units)
            lags = {
                str(u["id"]): (int(u["pendingChanges"]), float(u.get("secondsBehind") or 0))
                for u in units
                if u.get("pendingChanges") is not None
            }
            groups = {str(u["id"]): int(u.get("task") or 0) for u in units if not u.get("final")}
            done = {str(u["id"]) for u in units if u.get("done") and not u.get("final")}
            with self._lock:
                self._stored, self._read_at, self._throttled = stored, now, throttled
                self._stored_lag = lags
                self._group_of, self._done = groups, done
                self._local.clear()
                self._local_lag.clear()
        with self._lock:
            return sum({**self._stored, **self._local}.values())

    def groups(self) -> dict[int, GroupCount]:
        """Processed items and done units per group (task), as last read and checkpointed here."""
        with self._lock:
            counts = {**self._stored, **self._local}
            found: dict[int, GroupCount] = {}
            for unit, group in self._group_of.items():
                was = found.get(group, GroupCount())
                found[group] = GroupCount(
                    was.processed + counts.get(unit, 0), was.units + 1, was.done + (unit in self._done)
                )
            return found

    def _rate(self, now: float, processed: int) -> float | None:
        self._samples.append((now, processed))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_time, first_count = self._samples[0]
        if now - first_time < 0.5:
            return None
        return max(0.0, (processed - first_count) / (now - first_time))

    def send(self, job: dict[str, Any], force: bool = False) -> None:
        """Report the job's progress and record: always when forced (state changes), else at most every second."""
        with self._send_lock:
            now = time.monotonic()
            if not force and now - self._last_sent < REPORT_INTERVAL:
                return
            self._last_sent = now
            processed = self.processed(fresh=force)
            total = job.get("totalCount")
            rate = self._rate(now, processed)
            if rate is not None:
                self._items_per_second = round(rate, 1)
                if total is not None and rate > 0:
                    self._eta = int(max(0, int(total) - processed) / rate)
            totals = Totals(
                processed=processed,
                total=int(total) if total is not None else None,
                percent=(100 if int(total) == 0 else min(100, int(processed * 100 / int(total))))
                if total is not None
                else None,
                items_per_second=self._items_per_second,
                estimated_seconds_remaining=self._eta,
                pending_changes=self.lag()[0],
                seconds_behind=self.lag()[1],
                throttled=self._throttled,
                groups=self.groups(),
            )
            part = self._build(job, totals)
            self._report(part, force)


def transfer_record(job: dict[str, Any]) -> TransferRecord | None:
    """The job document of `__datatransferstate` as the status shows it (failures redacted)."""
    if not job.get("state"):
        return None
    failure = job.get("failure")
    return TransferRecord(
        state=TransferState(job["state"]),
        start_time=job.get("startTime"),
        completion_time=job.get("completionTime"),
        failure=Failure(reason=str(failure.get("reason")), message=redact(str(failure.get("message"))))
        if isinstance(failure, dict)
        else None,
        attempt=job.get("attempt"),
    )


def verification_of(job: dict[str, Any]) -> Verification | None:
    """The job's verification as the status shows it, once it ran."""
    found = job.get("verification")
    return Verification.model_validate(found) if isinstance(found, dict) else None
