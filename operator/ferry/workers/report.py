"""The one way workers write to the API: their own typed part of an object's status, by server-side apply.

Each worker role is a field manager of its own (ferry-worker, ferry-copy-instance, ferry-account-monitor)
and owns exactly the fields of its model; the operator owns the rest. Every apply carries the whole part,
since server-side apply drops the fields a manager leaves out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from ferry.api.common import FerryModel
from ferry.api.kinds import Kind
from ferry.kube.status_apply import apply_status
from ferry.retry import policy
from ferry.storage.blobs import redact

log = logging.getLogger(__name__)

M = TypeVar("M", bound=FerryModel)
ATTEMPTS = 5


class ObjectGone(Exception):
    """The object this worker reports into was deleted."""


class StatusReporter(Generic[M]):
    def __init__(self, kind: Kind, namespace: str, name: str, manager: str, interval: float = 1.0) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.manager = manager
        self.interval = interval
        self.gone = False
        self._lock = threading.Lock()
        self._last_sent = 0.0
        self._unsent: M | None = None

    def report(self, part: M, force: bool = False) -> None:
        """Apply `part`; unforced reports closer than `interval` wait for the next one (or flush())."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_sent < self.interval:
                self._unsent = part
                return
            self._last_sent = now
            self._unsent = None
            self._apply(part)

    def flush(self) -> None:
        with self._lock:
            if self._unsent is not None:
                part, self._unsent = self._unsent, None
                self._apply(part)

    def _apply(self, part: M) -> None:
        if self.gone:
            return
        status = _redacted(part.wire())
        try:
            REPORT_RETRIES(apply_status, self.kind, self.namespace, self.name, status, self.manager)
        except ApiException as exc:
            if exc.status == 404:
                self.gone = True  # deleted: the work notices and stops at its next check
                return
            log.warning("status report failed (%s); the next report retries", exc.status)
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # the API server is unreachable for now
            log.warning("status report failed (%s); the next report retries", type(exc).__name__)


def _retried(exc: BaseException) -> bool:
    """Any refusal but 404 (the object is gone), and an unreachable API server, are tried again."""
    if isinstance(exc, ApiException):
        return bool(exc.status != 404)
    return isinstance(exc, OSError | urllib3.exceptions.HTTPError)


# Five tries, 0.2s after the first failure and doubling.
REPORT_RETRIES = policy(ATTEMPTS, _retried, first=0.2)


def _redacted(value: Any) -> Any:
    """Every text of a report passes redact(): no key or SAS token reaches the status."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
