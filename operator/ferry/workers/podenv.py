"""What every worker pod shares: access from its environment, status reports and a graceful stop on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.kube.client import ObjectRef, is_not_found
from ferry.storage.cosmos import CosmosAccess

log = logging.getLogger(__name__)


def cosmos_access_from_env(env: Mapping[str, str] = os.environ) -> CosmosAccess:
    """FERRY_COSMOS_ENDPOINT and FERRY_COSMOS_KEY (a Secret reference in the pod spec)."""
    return CosmosAccess(
        endpoint=env["FERRY_COSMOS_ENDPOINT"],
        key=env["FERRY_COSMOS_KEY"],
        verify_tls=env.get("FERRY_COSMOS_VERIFY_TLS", "true").lower() != "false",
    )


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so work stops at its next checkpoint instead of mid-write."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("asked to stop; finishing at the next checkpoint")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def status_reporter(ref: ObjectRef) -> Callable[[dict[str, Any]], None]:
    """Merge-patches a worker's reports into its resource's status.

    A write that fails is retried briefly; losing one progress report never fails the work, and a resource
    that is gone (deleted, hence cancelled) is left alone: the work notices it at its next check.
    """

    def report(patch: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                ref.patch_status(patch)
                return
            except ApiException as exc:
                if is_not_found(exc):
                    return
                log.warning("status update failed (%s), attempt %d", exc.status, attempt + 1)
                time.sleep(0.2 * 2**attempt)

    return report
