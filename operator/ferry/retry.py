"""Ferry's retry policies, written once: which failures are transient, and how long to wait before trying again.

- TRANSIENT_STATUSES: the HTTP statuses the services ask clients to retry (throttling, busy, timeouts, 5xx;
  449 is Cosmos DB's "retry with").
- backoff(): the exponential delay of a retry that is not a loop here (a requeue, a pod replaced later).
- policy(): a bounded retry loop (tenacity) with exponential waits up to a cap; where a failure carries the
  service's own retry-after (Cosmos DB's x-ms-retry-after-ms, HTTP Retry-After), the wait is at least that,
  within the same cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

__all__ = ["TRANSIENT_STATUSES", "backoff", "policy", "retry_after"]

TRANSIENT_STATUSES = frozenset({408, 429, 449, 500, 502, 503, 504})


def backoff(attempt: int, base: float, cap: float) -> float:
    """The delay before retry number `attempt` (1 is the first): `base`, doubling with each attempt, at most `cap`."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def retry_after(error: BaseException) -> float | None:
    """The seconds the service asked to wait before the next try, when the failure's response says so."""
    response: Any = getattr(error, "response", None)
    headers: Any = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        millis = headers.get("x-ms-retry-after-ms")
        if millis:
            return float(millis) / 1000.0
        seconds = headers.get("Retry-After")
        return float(seconds) if seconds else None
    except (TypeError, ValueError):
        return None


class _Wait(wait_base):
    """backoff(attempt, first, cap), raised to the failure's retry-after (still at most cap)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = backoff(retry_state.attempt_number, self.first, self.cap)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        asked = retry_after(error) if error is not None else None
        return delay if asked is None else min(self.cap, max(delay, asked))


def policy(
    attempts: int,
    retry_on: Callable[[BaseException], bool],
    first: float = 0.0,
    cap: float = math.inf,
    before_sleep: Callable[[BaseException], None] | None = None,
) -> Retrying:
    """At most `attempts` tries of a call while it raises what `retry_on` accepts, waiting `first` seconds after
    the first failure and doubling up to `cap`; the last failure (or any other) is raised as it was.
    `before_sleep` sees each failure that is retried."""

    def noted(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if before_sleep is not None and error is not None:
            before_sleep(error)

    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=_Wait(first, cap),
        retry=retry_if_exception(retry_on),
        before_sleep=noted,
        reraise=True,
    )
