"""What every kind's controller shares: observe (read the caches), decide (pure), and the operator's field manager."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from ferry.runtime.plan import Plan
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
