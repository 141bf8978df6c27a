"""Prometheus metrics exposed on the operator's /metrics endpoint.

Nothing here remembers counts across restarts, and nothing has to: gauges are computed from the
objects at scrape time, counters move only when a status recording their cause is written (a phase
change happens once), and progress counters start each object from what it had when first seen.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOBS_FAILED_METRIC = "ferry_jobs_failed"

# Counters and histograms that decisions move through Plan.counts and Plan.progress, by name. Each kind defines
# its own (kinds/<kind>/metrics.py) with define_counter and define_histogram; the operator imports every kind.
COUNTERS: dict[str, Counter] = {}
HISTOGRAMS: dict[str, Histogram] = {}


def define_counter(name: str, documentation: str, labels: Sequence[str] = ()) -> str:
    if name not in COUNTERS:
        COUNTERS[name] = Counter(name, documentation, list(labels))
    return name


def define_histogram(name: str, documentation: str, buckets: Sequence[float]) -> str:
    if name not in HISTOGRAMS:
        HISTOGRAMS[name] = Histogram(name, documentation, buckets=tuple(buckets))
    return name


define_counter(JOBS_FAILED_METRIC, "Copies and restores that failed, by kind and reason.", ["kind", "reason"])
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


_JOB_GAUGES = {
    "ferry_job_progress_ratio": "Done over total of a running copy or restore (bytes for BlobCopies, else items).",
    "ferry_job_eta_seconds": "Time left of a running copy or restore, at its average rate since it started.",
    "ferry_job_start_time_seconds": "When a running copy or restore started (Unix time).",
}
JOB_LABELS = ["kind", "namespace", "name"]


class ObjectsCollector(Collector):
    """ferry_objects{kind,phase}, the running jobs' progress and each kind's own gauges, from the caches at
    scrape time."""

    def __init__(
        self,
        phases: Callable[[], Iterable[tuple[str, str | None]]],
        jobs: Callable[[], Iterable[JobFigures]] = lambda: (),
        gauges: Callable[[], Iterable[Metric]] = lambda: (),
    ) -> None:
        self._phases = phases
        self._jobs = jobs
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("ferry_objects", "Ferry objects by kind and phase.", labels=["kind", "phase"])
        for (kind, phase), n in sorted(Tally((k, p or "None") for k, p in self._phases()).items()):
            family.add_metric([kind, phase], n)
        yield family
        yield from self._job_families()
        yield from self._gauges()

    def _job_families(self) -> Iterator[Metric]:
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
