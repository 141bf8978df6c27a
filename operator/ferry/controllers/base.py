"""What every kind's controller shares: observe (read the caches), decide (pure), and the operator's field manager."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from ferry.api.kinds import Kind
from ferry.metrics import BackupFigures, JobFigures
from ferry.runtime.plan import Plan
from ferry.runtime.world import World
from ferry.timefmt import parse_time

Observed = TypeVar("Observed")


class KindController(Generic[Observed]):
    kind: Kind  # each kind's controller names its Kind
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
        return running_figures(self.kind, body)

    def instances(self, body: Mapping[str, Any]) -> int:
        """Copy instance pods the object has, for ferry_copy_instances."""
        return 0

    def backup_figures(self, body: Mapping[str, Any]) -> BackupFigures | None:
        """What the object's continuous backup last reported, for the backup gauges; None without one."""
        return None


def running_figures(kind: Kind, body: Mapping[str, Any]) -> JobFigures | None:
    """JobFigures from the kind's progress fields, while the object's phase is one in which it moves."""
    fields, status = kind.progress, body.get("status") or {}  # None: the kind does not run like a job
    if fields is None or status.get("phase") not in fields.running or not status.get(fields.total):
        return None
    meta = body.get("metadata") or {}
    return JobFigures(
        kind=kind.kind,
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        done=float(status.get(fields.done) or 0),
        total=float(status[fields.total]),
        started=parse_time(status.get("startTime")),
    )
