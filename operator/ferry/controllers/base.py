"""What every kind's controller shares: observe (read the caches), decide (pure), and the operator's field manager."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ferry.metrics import JobFigures
from ferry.runtime.plan import Plan
from ferry.runtime.pods import parse_time
from ferry.runtime.world import World

Observed = TypeVar("Observed")


class KindController(Generic[Observed]):
    field_manager = "ferry-operator"

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        raise NotImplementedError

    def decide(self, observed: Observed) -> Plan:
        raise NotImplementedError

    def reconcile(self, body: Mapping[str, Any], world: World) -> Plan:
        return self.decide(self.observe(body, world))

    def related(self, body: Mapping[str, Any], world: World) -> Sequence[Mapping[str, Any]]:
        """Objects whose decisions read this one, to be looked at again when it changes."""
        return ()

    def figures(self, body: Mapping[str, Any]) -> JobFigures | None:
        """How far the object is while it runs, for the progress and ETA metrics; None otherwise."""
        return None


def running_figures(
    kind: str, body: Mapping[str, Any], done: str, total: str, running: Collection[str]
) -> JobFigures | None:
    """JobFigures from a status's done and total fields, while its phase is one of `running`."""
    status = body.get("status") or {}
    if status.get("phase") not in running or not status.get(total):
        return None
    meta = body.get("metadata") or {}
    return JobFigures(
        kind=kind,
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        done=float(status.get(done) or 0),
        total=float(status[total]),
        started=parse_time(status.get("startTime")),
    )
