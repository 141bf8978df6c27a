"""What a kind's decision asks the runtime to do: the Plan, and the small records inside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ferry.api.common import FerryModel
from ferry.runtime.lifecycle import PodDeletion


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class PodCreation:
    manifest: dict[str, Any]
    takes_slot: bool = True

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class Count:
    """A metric increment, made once the status that records its cause is written."""

    metric: str
    amount: float = 1.0
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Plan:
    """Intended actions, carried out in this order: finalizer added, pods deleted and created, status
    applied, then Events and counts (so that they describe a status that exists), then finalizer removed."""

    status: FerryModel | None = None  # the whole operator-owned part of the status
    create: list[PodCreation] = field(default_factory=list)
    delete: list[PodDeletion] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    finalizer: Literal["add", "remove"] | None = None
    requeue_after: float | None = None
    wants_slot: bool = False  # waits in line for a worker slot
    progress: dict[str, int] = field(default_factory=dict)  # running totals, metered as counter increments

    def after(self, seconds: float | None) -> None:
        """Look again after `seconds` at the latest (the earliest of all such wishes wins)."""
        if seconds is None:
            return
        seconds = max(0.0, seconds)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)
