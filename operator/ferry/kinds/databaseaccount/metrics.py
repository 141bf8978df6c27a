"""DatabaseAccount's metrics: write-region changes, the backup's captured versions, and the gauges read from the
accounts' status at scrape time (copy instances, the backup's figures)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ferry.metrics import define_counter

REGION_CHANGES_METRIC = define_counter(
    "ferry_account_write_region_changes", "Write region changes observed on DatabaseAccounts."
)
BACKUP_VERSIONS_METRIC = define_counter(
    "ferry_backup_versions_captured",
    "Item versions and deletions recorded by continuous backups, as capture pods report them.",
)

BACKUP_GAUGES = {
    "ferry_backup_capture_seconds": "How long the account's last capture took.",
    "ferry_backup_lag_seconds": "How far the latest restorable time was behind the capture's end.",
    "ferry_backup_gaps": "Gaps in the account's restorable window.",
    "ferry_backup_failing": "1 while the account's captures fail.",
    "ferry_backup_capture_interval_seconds": "The account's spec.backup.captureInterval.",
}


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


def account_gauges(instances: int, backups: Iterable[BackupFigures]) -> Iterator[Metric]:
    yield GaugeMetricFamily("ferry_copy_instances", "Copy instance pods of all DatabaseAccounts.", value=instances)
    families = {
        name: GaugeMetricFamily(name, text, labels=["namespace", "account"]) for name, text in BACKUP_GAUGES.items()
    }
    for b in backups:
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


def instances_of(body: Mapping[str, Any]) -> int:
    return len((body.get("status") or {}).get("instances") or [])
