"""An account's queues: which of its objects may run now, in which order, computed the same way by everyone.

Any kind with a spec.accountRef queues here, each with its own capacity and its own idea of "runnable":
ContainerCopyJobs (one at a time per account) now, restores next. The account's decision reads a queue to
know what its workers work on, each queued object's decision to know its position; both compute it from the
same cached objects, so no one has to write it down for the other. The order is creation order: the
creation second, then the resource version an object had when first seen (status.creationRevision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.api.containercopyjob import ContainerCopyPhase, TransferState
from ferry.runtime.objects import meta_of

Runnable = Callable[[Mapping[str, Any]], bool]

FINISHED_PHASES = frozenset({ContainerCopyPhase.SUCCEEDED, ContainerCopyPhase.FAILED, ContainerCopyPhase.CANCELLED})
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
        return (
            not meta_of(job).deleting
            and not spec.get("suspend")
            and status.get("phase") not in FINISHED_PHASES
            and (status.get("transfer") or {}).get("state") not in FINISHED_TRANSFERS
            and write_region is not None
            and (recorded is None or recorded == write_region)
        )

    return runnable


def copy_jobs(jobs: Iterable[Mapping[str, Any]], write_region: str | None) -> Queue:
    """The account's copy job queue: one job at a time, spread over all of its copy instances."""
    return queue(jobs, copy_job_runnable(write_region), capacity=1)
