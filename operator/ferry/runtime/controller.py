"""The one contract every kind's controller keeps with the runtime.

Required: the kind it reconciles, the model of the status part the operator owns, `observe` (read the caches
through a World) and `decide` (pure: observed state to a Plan). Optional capabilities are separate protocols a
controller may also satisfy (the metrics collector asks for them); the runtime itself needs none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from prometheus_client.core import Metric

from ferry.api.common import FerryModel
from ferry.api.kinds import Kind
from ferry.metrics import JobFigures
from ferry.runtime.plan import Plan
from ferry.runtime.world import World
from ferry.timefmt import parse_time

Observed = TypeVar("Observed")


class Controller(ABC, Generic[Observed]):
    kind: ClassVar[Kind]
    status_part: ClassVar[type[FerryModel]]  # the status fields the operator owns for this kind
    field_manager: ClassVar[str] = "ferry-operator"

    @abstractmethod
    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        """What the decision needs, read from the object and the caches (never from the API)."""

    @abstractmethod
    def decide(self, observed: Observed) -> Plan:
        """The intended actions: pure, so that it is tested without a cluster."""

    def reconcile(self, body: Mapping[str, Any], world: World) -> Plan:
        return self.decide(self.observe(body, world))

    def related(self, body: Mapping[str, Any], world: World) -> Sequence[Mapping[str, Any]]:
        """Objects whose decisions read this one, to be looked at again when it changes."""
        return ()

    def figures(self, body: Mapping[str, Any]) -> JobFigures | None:
        """How far the object is while it runs, for the progress and ETA metrics; None otherwise."""
        return running_figures(self.kind, body)


AnyController = Controller[Any]


@runtime_checkable
class ExportsGauges(Protocol):
    """A controller with gauges of its own, computed from all its objects at scrape time."""

    def gauges(self, bodies: Iterable[Mapping[str, Any]]) -> Iterable[Metric]: ...


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
