"""Ferry's retry policies: attempts, waits, caps and the service's retry-after."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

from ferry.retry import TRANSIENT_STATUSES, backoff, policy, retry_after


class Busy(Exception):
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__("busy")
        self.response = SimpleNamespace(headers=headers or {})


def failing(times: int, calls: list[int]) -> Callable[[], str]:
    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise Busy()
        return "done"

    return call


def test_backoff_doubles_from_base_up_to_cap() -> None:
    assert [backoff(n, 10.0, 300.0) for n in range(8)] == [10, 10, 20, 40, 80, 160, 300, 300]


def test_a_policy_waits_exponentially_and_raises_the_last_failure_as_it_was() -> None:
    waits: list[float] = []
    calls: list[int] = []
    retries = policy(6, lambda e: isinstance(e, Busy), first=0.5, cap=8.0)
    retries.sleep = waits.append
    with pytest.raises(Busy):
        retries(failing(99, calls))
    assert len(calls) == 6 and waits == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_policy_returns_the_result_once_a_try_succeeds_and_notes_each_retried_failure() -> None:
    noted: list[BaseException] = []
    calls: list[int] = []
    retries = policy(5, lambda e: isinstance(e, Busy), first=0.0, before_sleep=noted.append)
    assert retries(failing(2, calls)) == "done"
    assert len(calls) == 3 and len(noted) == 2


def test_other_failures_are_not_retried() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        policy(5, lambda e: isinstance(e, Busy))(broken)
    assert calls == [1]


def test_the_service_retry_after_lengthens_a_wait_within_the_cap() -> None:
    assert retry_after(Busy({"x-ms-retry-after-ms": "1500"})) == 1.5
    assert retry_after(Busy({"Retry-After": "3"})) == 3.0
    assert retry_after(Busy()) is None and retry_after(KeyError()) is None
    waits: list[float] = []
    answers = iter([Busy({"x-ms-retry-after-ms": "3000"}), Busy({"x-ms-retry-after-ms": "60000"}), Busy()])

    def call() -> None:
        raise next(answers)

    retries = policy(3, lambda e: isinstance(e, Busy), first=0.5, cap=8.0)
    retries.sleep = waits.append
    with pytest.raises(Busy):
        retries(call)
    assert waits == [3.0, 8.0]


def test_the_transient_statuses_include_cosmos_retry_with() -> None:
    assert {408, 429, 449, 500, 502, 503, 504} == TRANSIENT_STATUSES
