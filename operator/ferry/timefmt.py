"""Times as Ferry writes and reads them: ISO 8601 in UTC with a Z, as Kubernetes and Azure show them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def when(t: datetime, timespec: str = "auto") -> str:
    """`t` in ISO 8601, in UTC written as Z (2024-05-01T12:00:00Z), whatever zone it was given in."""
    zoned = t.astimezone(UTC) if t.tzinfo is not None else t
    return zoned.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (a trailing Z is UTC), a datetime as it is, or None for nothing."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
