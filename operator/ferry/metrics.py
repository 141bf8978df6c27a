"""Prometheus metrics exposed on the operator's /metrics endpoint.

Nothing here remembers counts across restarts, and nothing has to: gauges are computed from the
objects at scrape time, counters move only when a status recording their cause is written (a phase
change happens once), and progress counters start each object from what it had when first seen.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BLOBCOPY_BYTES_METRIC = "ferry_blobcopy_bytes_copied"
BLOBCOPY_DURATION_METRIC = "ferry_blobcopy_duration_seconds"
COPYJOB_ITEMS_METRIC = "ferry_copyjob_items_copied"
THROTTLED_METRIC = "ferry_cosmos_throttled_requests"
REGION_CHANGES_METRIC = "ferry_account_write_region_changes"
RESTORE_ITEMS_METRIC = "ferry_restore_items_restored"
BACKUP_VERSIONS_METRIC = "ferry_backup_versions_captured"
JOBS_FAILED_METRIC = "ferry_jobs_failed"

COUNTERS: dict[str, Counter] = {
    BLOBCOPY_BYTES_METRIC: Counter(BLOBCOPY_BYTES_METRIC, "Bytes copied by BlobCopies, as their workers report them."),
    COPYJOB_ITEMS_METRIC: Counter(COPYJOB_ITEMS_METRIC, "Items copied by ContainerCopyJobs, as instances report them."),
    THROTTLED_METRIC: Counter(THROTTLED_METRIC, "429 responses met by copy instances (each was retried)."),
    REGION_CHANGES_METRIC: Counter(REGION_CHANGES_METRIC, "Write region changes observed on DatabaseAccounts."),
    RESTORE_ITEMS_METRIC: Counter(
        RESTORE_ITEMS_METRIC, "Items restored by InAccountRestores, as instances report them."
    ),
    BACKUP_VERSIONS_METRIC: Counter(
        BACKUP_VERSIONS_METRIC,
        "Item versions and deletions recorded by continuous backups, as capture pods report them.",
    ),
    JOBS_FAILED_METRIC: Counter(
        JOBS_FAILED_METRIC, "Copies and restores that failed, by kind and reason.", ["kind", "reason"]
    ),
}
HISTOGRAMS: dict[str, Histogram] = {
    BLOBCOPY_DURATION_METRIC: Histogram(
        BLOBCOPY_DURATION_METRIC,
        "Time from a BlobCopy's start to its completion.",
        buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 14 * 24 * 3600),
    ),
}
WORKERS_STARTED = Counter("ferry_worker_pods_started", "Worker pods started, by kind and role.", ["kind", "role"])
WORKER_RESTARTS = Counter(
    "ferry_worker_restarts",
    "Worker pods that failed or were restarted by the kubelet, by kind and role.",
    ["kind", "role"],
)
RECONCILES = Counter("ferry_reconciles", "Reconcile passes, by kind and result (ok, error).", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "ferry_reconcile_duration_seconds",
    "Time a reconcile pass takes, API calls included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter("ferry_api_writes", "Writes the operator sends to the API server, by verb.", ["verb"])
QUEUE_DEPTH = Gauge("ferry_workqueue_depth", "Objects waiting for a reconcile pass.")
SLOTS_IN_USE = Gauge("ferry_worker_slots_in_use", "Worker pods running or starting under the slot limits.")
SLOTS_WAITING = Gauge("ferry_worker_slots_waiting", "Objects waiting in line for a worker slot.")


def count(metric: str, amount: float, labels: Iterable[tuple[str, str]] = ()) -> None:
    if metric in HISTOGRAMS:
        HISTOGRAMS[metric].observe(amount)
        return
    counter = COUNTERS[metric]
    named = dict(labels)
    (counter.labels(**named) if named else counter).inc(amount)


class ProgressMeter:
    """Turns running totals that objects report (bytes copied so far) into counter increments.

    An object's first total seen by this process is its baseline and adds nothing: work done before
    the operator (re)started was counted by the process that saw it, or by none.
    """

    def __init__(self) -> None:
        self._last: dict[str, dict[str, int]] = {}

    def observe(self, uid: str, totals: dict[str, int]) -> None:
        last = self._last.setdefault(uid, {})
        for metric, total in totals.items():
            previous = last.get(metric)
            last[metric] = total if previous is None else max(previous, total)
            if previous is not None and total > previous:
                count(metric, total - previous)

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)


@dataclass(frozen=True)
class BackupFigures:
    """What one account's capture pod last reported."""

    namespace: str
    account: str
    capture_seconds: float | None
    lag_seconds: float | None
    gaps: int
    failing: bool
    interval_seconds: float | None = None


@dataclass(frozen=True)
class JobFigures:
    """How far one running copy or restore is: done and total in its unit (bytes or items), and its start."""

    kind: str
    namespace: str
    name: str
    done: float
    total: float
    started: datetime | None

    def eta_seconds(self, now: datetime) -> float | None:
        """The time left at the average rate since the start; None before there is a rate."""
        if self.started is None or self.done <= 0 or self.total <= self.done:
            return None
        elapsed = (now - self.started).total_seconds()
        return (self.total - self.done) * elapsed / self.done if elapsed > 0 else None


_BACKUP_GAUGES = {
    "ferry_backup_capture_seconds": "How long the account's last capture took.",
    "ferry_backup_lag_seconds": "How far the latest restorable time was behind the capture's end.",
    "ferry_backup_gaps": "Gaps in the account's restorable window.",
    "ferry_backup_failing": "1 while the account's captures fail.",
    "ferry_backup_capture_interval_seconds": "The account's spec.backup.captureInterval.",
}
_JOB_GAUGES = {
    "ferry_job_progress_ratio": "Done over total of a running copy or restore (bytes for BlobCopies, else items).",
    "ferry_job_eta_seconds": "Time left of a running copy or restore, at its average rate since it started.",
    "ferry_job_start_time_seconds": "When a running copy or restore started (Unix time).",
}
JOB_LABELS = ["kind", "namespace", "name"]


class ObjectsCollector(Collector):
    """ferry_objects{kind,phase}, ferry_copy_instances and the backups' figures, from the caches at scrape time."""

    def __init__(
        self,
        phases: Callable[[], Iterable[tuple[str, str | None]]],
        instances: Callable[[], int],
        backups: Callable[[], Iterable[BackupFigures]] = lambda: (),
        jobs: Callable[[], Iterable[JobFigures]] = lambda: (),
    ) -> None:
        self._phases = phases
        self._instances = instances
        self._backups = backups
        self._jobs = jobs

    def describe(self) -> Iterator[Any]:
        yield GaugeMetricFamily("ferry_objects", "Ferry objects by kind and phase.", labels=["kind", "phase"])
        yield GaugeMetricFamily("ferry_copy_instances", "Copy instance pods of all DatabaseAccounts.")
        for name, text in _BACKUP_GAUGES.items():
            yield GaugeMetricFamily(name, text, labels=["namespace", "account"])
        for name, text in _JOB_GAUGES.items():
            yield GaugeMetricFamily(name, text, labels=JOB_LABELS)

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("ferry_objects", "Ferry objects by kind and phase.", labels=["kind", "phase"])
        for (kind, phase), n in sorted(Tally((k, p or "None") for k, p in self._phases()).items()):
            family.add_metric([kind, phase], n)
        yield family
        yield GaugeMetricFamily(
            "ferry_copy_instances", "Copy instance pods of all DatabaseAccounts.", value=self._instances()
        )
        families = {
            name: GaugeMetricFamily(name, text, labels=["namespace", "account"])
            for name, text in _BACKUP_GAUGES.items()
        }
        for b in self._backups():
            labels = [b.namespace, b.account]
            if b.capture_seconds is not None:
                families["ferry_backup_capture_seconds"].add_metric(labels, b.capture_seconds)
            if b.lag_seconds is not None:
                families["ferry_backup_lag_seconds"].add_metric(labels, b.lag_seconds)
            if b.interval_seconds is not None:
                families["ferry_backup_capture_interval_seconds"].add_metric(labels, b.interval_seconds)
            families["ferry_backup_gaps"].add_metric(labels, b.gaps)
            families["ferry_backup_failing"].add_metric(labels, 1 if b.failing else 0)
        yield from families.values()
        yield from self._job_families()

    def _job_families(self) -> Iterator[Any]:
        families = {name: GaugeMetricFamily(name, text, labels=JOB_LABELS) for name, text in _JOB_GAUGES.items()}
        now = datetime.now(UTC)
        for job in self._jobs():
            labels = [job.kind, job.namespace, job.name]
            families["ferry_job_progress_ratio"].add_metric(labels, job.done / job.total if job.total > 0 else 0.0)
            if (eta := job.eta_seconds(now)) is not None:
                families["ferry_job_eta_seconds"].add_metric(labels, eta)
            if job.started is not None:
                families["ferry_job_start_time_seconds"].add_metric(labels, job.started.timestamp())
        yield from families.values()


def register_collector(collector: Collector) -> None:
    REGISTRY.register(collector)


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)
