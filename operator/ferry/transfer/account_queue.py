"""An account's queues: which of its objects may run now, in which order, computed the same way by everyone.

Any kind with a spec.accountRef queues here, each with its own capacity and its own idea of "runnable":
ContainerCopyJobs (one at a time per account) and InAccountRestores (three at a time). The account's
decision reads a queue to know what its workers work on, each queued object's decision to know its
position; both compute it from the same cached objects, so no one has to write it down for the other. The
order is creation order: the creation second, then the resource version an object had when first seen
(status.creationRevision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.api.containercopyjob import ContainerCopyPhase
from ferry.api.inaccountrestore import RestorePhase
from ferry.api.transfer import TransferState
from ferry.runtime.objects import meta_of
from ferry.timefmt import parse_time

Runnable = Callable[[Mapping[str, Any]], bool]

FINISHED_PHASES = frozenset({ContainerCopyPhase.SUCCEEDED, ContainerCopyPhase.FAILED, ContainerCopyPhase.CANCELLED})
RESTORE_FINISHED = frozenset({RestorePhase.SUCCEEDED, RestorePhase.FAILED})
RESTORES_AT_ONCE = 3  # Azure runs at most three restores per account and refuses more; Ferry queues them
FINISHED_TRANSFERS = frozenset({TransferState.SUCCEEDED, TransferState.FAILED, TransferState.CANCELLED})


@dataclass(frozen=True)
class Queue:
    running: tuple[str, ...]  # what the account's workers work on now
    waiting: tuple[str, ...]  # in order

    def position(self, name: str) -> int | None:
        """0 for a running object, 1 for the next one in line, ...; None when not in the queue."""
        if name in self.running:
            return 0
        return self.waiting.index(name) + 1 if name in self.waiting else None


def queue(objects: Iterable[Mapping[str, Any]], runnable: Runnable, capacity: int) -> Queue:
    ordered = sorted(
        (meta_of(o).order((o.get("status") or {}).get("creationRevision")), meta_of(o).name)
        for o in objects
        if runnable(o)
    )
    names = tuple(name for _, name in ordered)
    return Queue(running=names[:capacity], waiting=names[capacity:])


def copy_job_runnable(write_region: str | None) -> Runnable:
    """A ContainerCopyJob may run when it is neither finished, suspended nor deleted, and the account's
    write region is known and still the one the job was queued in (else it fails WriteRegionChanged)."""

    def runnable(job: Mapping[str, Any]) -> bool:
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        recorded = status.get("writeRegion")
        transfer = status.get("transfer") or {}
        earlier_run = (transfer.get("attempt") or 1) < (status.get("attempt") or 1)  # a re-run's, not yet begun
        return (
            not meta_of(job).deleting
            and not spec.get("suspend")
            and status.get("phase") not in FINISHED_PHASES
            and (earlier_run or transfer.get("state") not in FINISHED_TRANSFERS)
            and write_region is not None
            and (recorded is None or recorded == write_region)
        )

    return runnable


def copy_jobs(jobs: Iterable[Mapping[str, Any]], write_region: str | None) -> Queue:
    """The account's copy job queue: one job at a time, spread over all of its copy instances."""
    return queue(jobs, copy_job_runnable(write_region), capacity=1)


@dataclass(frozen=True)
class BackupView:
    """What decides whether an account's restores can run: its write region and its backup's window."""

    write_region: str | None
    enabled: bool
    latest_restorable: datetime | None


def restore_target(restore: Mapping[str, Any]) -> tuple[str, str | None]:
    """What a restore creates: (database, container or None for the whole database)."""
    spec = restore.get("spec") or {}
    target = spec.get("target") or {}
    return str(target.get("database") or spec.get("database")), target.get("container") or spec.get("container")


def overlaps(a: tuple[str, str | None], b: tuple[str, str | None]) -> bool:
    return a[0] == b[0] and (a[1] is None or b[1] is None or a[1] == b[1])


def restore_unfinished(restore: Mapping[str, Any]) -> bool:
    status = restore.get("status") or {}
    return (
        not meta_of(restore).deleting
        and status.get("phase") not in RESTORE_FINISHED
        and (status.get("transfer") or {}).get("state") not in FINISHED_TRANSFERS
    )


def blocking_restore(restore: Mapping[str, Any], siblings: Iterable[Mapping[str, Any]]) -> str | None:
    """An earlier unfinished restore of the same database or container, if any (one restore per resource)."""
    mine = restore_target(restore)
    order = _order(restore)
    for other in sorted(siblings, key=_order):
        if _order(other) >= order:
            break
        if restore_unfinished(other) and overlaps(restore_target(other), mine):
            return meta_of(other).name
    return None


def _order(o: Mapping[str, Any]) -> tuple[Any, ...]:
    return meta_of(o).order((o.get("status") or {}).get("creationRevision"))


def restores(objects: Iterable[Mapping[str, Any]], backup: BackupView) -> Queue:
    """The account's restore queue: three at a time, in creation order. A restore waits outside the queue while
    the backup has not captured up to its time yet, and never enters it behind a restore of the same resource."""
    everything = list(objects)

    def runnable(restore: Mapping[str, Any]) -> bool:
        status = restore.get("status") or {}
        recorded = status.get("writeRegion")
        raw = (restore.get("spec") or {}).get("restoreTimestamp")
        wanted = parse_time(raw) if raw else None
        captured = backup.latest_restorable is not None and (wanted is None or wanted <= backup.latest_restorable)
        return (
            restore_unfinished(restore)
            and backup.enabled
            and captured
            and backup.write_region is not None
            and (recorded is None or recorded == backup.write_region)
            and blocking_restore(restore, everything) is None
        )

    return queue(everything, runnable, capacity=RESTORES_AT_ONCE)
