"""What `ferry status` shows of each Ferry object: a Row from the object as the API returns it (pure), and the
rates and times left from successive looks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ferry.kinds.registry import BY_KIND
from ferry.timefmt import parse_time

FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})


@dataclass
class Row:
    kind: str
    namespace: str
    name: str
    phase: str
    done: int | None = None
    total: int | None = None
    unit: str = ""
    rate: float | None = None  # units per second
    seconds_left: float | None = None
    queue_position: int | None = None
    reason: str = ""  # why it failed, or why it waits
    message: str = ""

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def is_job(self) -> bool:
        """A copy or restore, as opposed to an account: what the summary counts and --once waits for."""
        return BY_KIND[self.kind].runs_like_a_job

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def row_of(kind: str, body: Mapping[str, Any], now: datetime | None = None) -> Row:
    """The row of one object, with a rate and a time left from its own status (its average since it started)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    row = Row(kind=kind, namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), phase="")
    plugin = BY_KIND[kind]
    fields = plugin.kind.progress
    if fields is None:  # not a job: the kind says what its line shows
        summary = plugin.summary(body) if plugin.summary is not None else None
        row.phase = summary.phase if summary is not None else "-"
        if summary is not None:
            row.reason, row.message = summary.reason, summary.message
        return row
    row.phase = str(status.get("phase") or "Pending")
    row.queue_position = status.get("queuePosition")
    row.unit = fields.unit
    if status.get(fields.total) is not None:
        row.done, row.total = int(status.get(fields.done) or 0), int(status[fields.total])
    if (failure := status.get("failure")) is not None:
        row.reason, row.message = str(failure.get("reason", "")), str(failure.get("message", ""))
    elif (waiting := conditions.get("WorkerReady")) is not None and waiting.get("status") == "False":
        row.reason, row.message = str(waiting.get("reason", "")), str(waiting.get("message", ""))
    if row.finished or row.done is None or row.total is None:
        return row
    started = parse_time(status.get("startTime"))
    elapsed = ((now or datetime.now(UTC)) - started).total_seconds() if started else 0.0
    rate = status.get(fields.rate) if fields.rate else None
    row.rate = float(rate) if rate else (row.done / elapsed if elapsed > 0 and row.done else None)
    row.seconds_left = (row.total - row.done) / row.rate if row.rate else None
    return row


class Rates:
    """Rates from what moved between two looks at an object, which follow the copy's pace better than its
    average since the start; smoothed so that a refresh does not make the numbers jump."""

    def __init__(self, smoothing: float = 0.5) -> None:
        self._last: dict[tuple[str, str, str], tuple[float, int, float | None]] = {}
        self._smoothing = smoothing

    def update(self, row: Row, at: float | None = None) -> Row:
        at = time.monotonic() if at is None else at
        key = (row.kind, row.namespace, row.name)
        previous = self._last.get(key)
        if row.done is None or row.finished:
            self._last.pop(key, None)
            return row
        rate = previous[2] if previous else None
        if previous is not None and at > previous[0] and row.done >= previous[1]:
            seen = (row.done - previous[1]) / (at - previous[0])
            rate = seen if rate is None else self._smoothing * seen + (1 - self._smoothing) * rate
        self._last[key] = (at, row.done, rate)
        if rate:
            row.rate = rate
            row.seconds_left = (row.total - row.done) / rate if row.total is not None else None
        return row


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def amount(row: Row, n: float) -> str:
    return human_bytes(n) if row.unit == "B" else f"{n:,.0f}"


def rate_text(row: Row) -> str:
    if not row.rate:
        return ""
    return f"{human_bytes(row.rate)}/s" if row.unit == "B" else f"{row.rate:,.0f} items/s"


def left_text(row: Row) -> str:
    if row.seconds_left is None:
        return ""
    seconds = int(row.seconds_left)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
