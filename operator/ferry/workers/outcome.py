"""How every worker ends: its work's outcome as a marked last log line and an exit code (see ferry.api.outcome).

Errors are sorted into permanent ones (bad configuration, refused access, something missing: another
worker would fail the same way) and transient ones (throttling, timeouts, outages: another may succeed).
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import urllib3
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.retry import TRANSIENT_STATUSES
from ferry.storage import mongo
from ferry.storage.blobs import InvalidConnectionString, redact
from ferry.storage.cosmos import is_invalid_resource_name
from ferry.workers.report import ObjectGone

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """A failure another worker would meet the same way: say why and stop."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransientError(Exception):
    """A failure worth another try later (after the operator's backoff)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so work stops at its next checkpoint instead of mid-write."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("asked to stop; finishing at the next checkpoint")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def classify(error: BaseException) -> WorkerOutcome:
    """The outcome an unhandled error means, in words a user can act on."""
    text = redact(f"{error}".splitlines()[0] if f"{error}" else type(error).__name__)[:600]
    if isinstance(error, PermanentError | TransientError):
        result = OutcomeResult.FAILED if isinstance(error, PermanentError) else OutcomeResult.RETRY
        return WorkerOutcome(result=result, reason=error.reason, message=redact(error.message))
    if isinstance(error, ObjectGone):
        return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the object was deleted")
    if isinstance(error, InvalidConnectionString):
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="InvalidConnectionString", message=text)
    if isinstance(error, ValidationError):
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="InvalidSpec", message=text)
    if is_invalid_resource_name(error):
        return WorkerOutcome(
            result=OutcomeResult.FAILED,
            reason="InvalidResourceName",
            message=f"Cosmos DB refuses a database or container name of this job ({text}): ids cannot contain "
            "'/', '\\', '?', '#', a tab or a line break, nor end with a space",
        )
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        if status == 404:
            return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the object was deleted")
        if status in (401, 403):
            return WorkerOutcome(
                result=OutcomeResult.FAILED,
                reason="WorkerForbidden",
                message=f"the worker's service account was refused by the API server ({status} {error.reason}): "
                "check the chart's worker RBAC in this namespace",
            )
        return WorkerOutcome(
            result=OutcomeResult.RETRY, reason="KubernetesAPIError", message=f"{status} {error.reason}"
        )
    if isinstance(error, urllib3.exceptions.HTTPError):
        # Only the Kubernetes client talks urllib3 directly (the Azure SDKs wrap its errors in their own).
        return WorkerOutcome(result=OutcomeResult.RETRY, reason="KubernetesAPIError", message=_unreachable_api(error))
    if isinstance(error, ClientAuthenticationError):
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="AccessDenied", message=text)
    if isinstance(error, ResourceNotFoundError):
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="NotFound", message=text)
    if isinstance(error, ServiceRequestError | ServiceResponseError | ConnectionError | TimeoutError):
        return WorkerOutcome(result=OutcomeResult.RETRY, reason="ServiceUnreachable", message=text)
    if isinstance(error, HttpResponseError):
        status = int(error.status_code or 0)
        if status in (401, 403):
            return WorkerOutcome(result=OutcomeResult.FAILED, reason="AccessDenied", message=text)
        if status in TRANSIENT_STATUSES:
            return WorkerOutcome(result=OutcomeResult.RETRY, reason="ServiceBusy", message=text)
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="ServiceError", message=text)
    if isinstance(error, PyMongoError):
        shown = mongo.describe(error)
        if mongo.is_unauthorized(error):
            return WorkerOutcome(result=OutcomeResult.FAILED, reason="AccessDenied", message=shown)
        if mongo.is_transient(error):
            return WorkerOutcome(result=OutcomeResult.RETRY, reason="ServiceUnreachable", message=shown)
        return WorkerOutcome(result=OutcomeResult.FAILED, reason="MongoError", message=shown)
    return WorkerOutcome(result=OutcomeResult.RETRY, reason="WorkerCrashed", message=f"{type(error).__name__}: {text}")


def _unreachable_api(error: urllib3.exceptions.HTTPError) -> str:
    """Which API server could not be reached, and why, without the URL's path or the exception's nesting."""
    pool = getattr(error, "pool", None)
    server = f"{pool.host}:{pool.port}" if pool is not None and getattr(pool, "host", None) else "the API server"
    cause = getattr(error, "reason", None) or error
    why = f"{cause}".splitlines()[0] if f"{cause}" else type(cause).__name__
    # "HTTPSConnection(host=..., port=...): Failed to establish ...": the server is named already.
    why = re.sub(r"^<?[\w.]*Connection\b[^:]*?[)>]: ", "", why)
    return redact(f"the Kubernetes API server {server} could not be reached: {why}")[:600]


def run_worker(work: Callable[[threading.Event], WorkerOutcome]) -> int:
    """Run a worker's work and end the process the way the operator reads it: last log line, exit code."""
    stop = stop_on_sigterm()
    try:
        outcome = work(stop)
    except Exception as error:  # every cause ends up in the outcome, never only in a traceback
        outcome = classify(error)
        if outcome.reason == "WorkerCrashed":
            log.error("unexpected error: %s", outcome.message)
    if outcome.result == OutcomeResult.FAILED:
        log.error("%s: %s", outcome.reason, outcome.message)
    elif outcome.result == OutcomeResult.RETRY:
        log.warning("%s: %s (another worker will try again)", outcome.reason, outcome.message)
    sys.stderr.flush()
    print(outcome.line(), file=sys.stderr, flush=True)
    return outcome.exit_code
