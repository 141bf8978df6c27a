"""The queue of an account's jobs: which may run now, in which order, computed the same way by everyone.

Any kind with a spec.accountRef queues here (ContainerCopyJobs now, one running at a time). The account's
decision reads it to know which job its instances work on, each job's decision to know its position;
both compute it from the same cached objects, so no one has to write it down for the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.api.containercopyjob import ContainerCopyPhase, TransferState
from ferry.runtime.objects import meta_of

FINISHED_PHASES = frozenset({ContainerCopyPhase.SUCCEEDED, ContainerCopyPhase.FAILED, ContainerCopyPhase.CANCELLED})
FINISHED_TRANSFERS = frozenset({TransferState.SUCCEEDED, TransferState.FAILED, TransferState.CANCELLED})


@dataclass(frozen=True)
class QueueEntry:
    name: str
    order: tuple[Any, ...]
    runnable: bool


def entry(job: Mapping[str, Any], write_region: str | None) -> QueueEntry:
    """A job's place in its account's queue, and whether it may run now."""
    meta = meta_of(job)
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    transfer = (status.get("transfer") or {}).get("state")
    recorded = status.get("writeRegion")
    runnable = (
        not meta.deleting
        and not spec.get("suspend")
        and status.get("phase") not in FINISHED_PHASES
        and transfer not in FINISHED_TRANSFERS
        and write_region is not None
        and (recorded is None or recorded == write_region)  # else it fails with WriteRegionChanged
    )
    return QueueEntry(meta.name, meta.order(status.get("creationRevision")), runnable)


@dataclass(frozen=True)
class Queue:
    running: tuple[str, ...]  # the jobs the instances work on now
    waiting: tuple[str, ...]  # in order

    def position(self, name: str) -> int | None:
        """0 for a running job, 1 for the next one in line, ...; None when not in the queue."""
        if name in self.running:
            return 0
        return self.waiting.index(name) + 1 if name in self.waiting else None


def queue(jobs: Iterable[Mapping[str, Any]], write_region: str | None, capacity: int = 1) -> Queue:
    runnable = sorted((e for e in (entry(j, write_region) for j in jobs) if e.runnable), key=lambda e: e.order)
    names = tuple(e.name for e in runnable)
    return Queue(running=names[:capacity], waiting=names[capacity:])
