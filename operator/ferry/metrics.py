"""Prometheus metrics exposed on the operator's /metrics endpoint."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

BLOBCOPIES = Gauge("ferry_blobcopies", "BlobCopy resources by phase.", ["phase"])
BLOBCOPY_BYTES = Counter("ferry_blobcopy_bytes_copied", "Bytes copied by BlobCopies, as reported by their workers.")
BLOBCOPY_DURATION = Histogram(
    "ferry_blobcopy_duration_seconds",
    "Time from a BlobCopy's start to its completion.",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 14 * 24 * 3600),
)
WORKERS_STARTED = Counter("ferry_worker_pods_started", "Worker pods started, by kind and role.", ["kind", "role"])


class PhaseTracker:
    """Keeps a gauge of resources by phase from the phases seen per object (uid)."""

    def __init__(self, gauge: Gauge, phases: list[str]) -> None:
        self._gauge = gauge
        self._phases = phases
        self._by_uid: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in phases:
            gauge.labels(phase=phase).set(0)

    def observe(self, uid: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._by_uid.pop(uid, None)
            else:
                self._by_uid[uid] = phase
            for name in self._phases:
                self._gauge.labels(phase=name).set(sum(1 for p in self._by_uid.values() if p == name))


class ProgressCounter:
    """Turns per-object running totals (bytes copied so far) into increments of a counter."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, uid: str, total: int | None, finished_before: bool = False) -> None:
        """Record a running total; a copy first seen already finished (after a restart) adds nothing."""
        with self._lock:
            if total is None:
                self._last.pop(uid, None)
                return
            previous = self._last.get(uid, total if finished_before else 0)
            self._last[uid] = max(total, previous)
            if total > previous:
                self._counter.inc(total - previous)


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)


COPY_JOBS = Gauge("ferry_containercopyjobs", "ContainerCopyJob resources by phase.", ["phase"])
ITEMS_COPIED = Counter("ferry_copyjob_items_copied", "Items copied by ContainerCopyJobs, as reported by instances.")
THROTTLED = Counter("ferry_cosmos_throttled_requests", "429 responses met by copy instances (each was retried).")
REGION_CHANGES = Counter("ferry_account_write_region_changes", "Write region changes observed on DatabaseAccounts.")
COPY_INSTANCES = Gauge("ferry_copy_instances", "Copy instance pods per DatabaseAccount.", ["namespace", "account"])
