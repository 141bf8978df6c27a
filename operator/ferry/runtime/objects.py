"""Keys and metadata of the objects the runtime reconciles, and typed condition updates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ferry.api.common import Condition, ConditionStatus
from ferry.api.kinds import Kind
from ferry.timefmt import parse_time

FINALIZER = "ferry.dev/finalizer"


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str
    uid: str
    generation: int
    resource_version: str
    created: datetime | None
    deleting: bool
    finalizers: tuple[str, ...]

    @property
    def has_finalizer(self) -> bool:
        return FINALIZER in self.finalizers

    def order(self, revision: str | None = None) -> tuple[Any, ...]:
        """Creation order: the creation second, then the resource version (comparable as integers within
        one resource since Kubernetes 1.35) the object had when first seen, then the name."""
        rv = revision or self.resource_version
        return (self.created or datetime.min, int(rv) if rv.isdigit() else 0, self.namespace, self.name)


def meta_of(body: Mapping[str, Any]) -> ObjectMeta:
    meta = body.get("metadata") or {}
    return ObjectMeta(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace")),
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        created=parse_time(meta.get("creationTimestamp")),
        deleting=meta.get("deletionTimestamp") is not None,
        finalizers=tuple(meta.get("finalizers") or ()),
    )


def key_of(kind: Kind, body: Mapping[str, Any]) -> ObjectKey:
    meta = body.get("metadata") or {}
    return ObjectKey(kind.kind, str(meta.get("namespace")), str(meta.get("name")))


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The conditions with one set; lastTransitionTime moves only when the status flips."""
    value = ConditionStatus.UNKNOWN if status is None else ConditionStatus.TRUE if status else ConditionStatus.FALSE
    previous = next((c for c in conditions or [] if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == value else now
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    kept = list(conditions or [])
    for index, existing in enumerate(kept):
        if existing.type == type_:
            kept[index] = updated  # in place: the list's order stays stable across passes
            return kept
    return [*kept, updated]


class Activity(StrEnum):
    """What an object's controller is doing about it, as kstatus reads it (Flux, Argo CD, kubectl wait)."""

    RECONCILING = "Reconciling"  # working toward what the spec asks
    STALLED = "Stalled"  # cannot get there without the user
    IDLE = "Idle"  # got there, or was told to stay where it is (paused)


def set_health(
    conditions: list[Condition] | None,
    ready: bool | None,
    activity: Activity,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Ready, Reconciling and Stalled, the conditions of the kstatus conventions: a GitOps tool waits while
    Reconciling is True, fails on Stalled, and `kubectl wait --for=condition=Ready` waits for Ready."""
    out = set_condition(conditions, "Ready", ready, reason, message, generation, now)
    for type_ in (Activity.RECONCILING, Activity.STALLED):
        out = set_condition(out, type_.value, activity == type_, reason, message, generation, now)
    return out


def condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)


def without_condition(conditions: list[Condition] | None, type_: str) -> list[Condition] | None:
    kept = [c for c in conditions or [] if c.type != type_]
    return kept or None
