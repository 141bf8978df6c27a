"""What every worker pod shares: its Cosmos access from the environment and a graceful stop on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from types import FrameType

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
