"""Types shared by every Ferry resource: references, conditions, failures, durations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ferry"

# Go-style durations as Kubernetes users write them ("90s", "15m", "336h", "1h30m").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


def parse_duration(text: str) -> timedelta:
    """Turn a Go-style duration into a timedelta; the CRD pattern guarantees the form."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90s, 15m, 336h)")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class FerryModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # Extra `x-kubernetes-validations` rules attached to this object's schema.
    cel_rules: ClassVar[list[dict[str, str]]] = []

    def wire(self) -> dict[str, Any]:
        """The object as it is written to the API: camelCase, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def wire_keys(cls) -> frozenset[str]:
        return frozenset(info.alias or name for name, info in cls.model_fields.items())

    @classmethod
    def part_of(cls, data: Mapping[str, Any] | None) -> Self:
        """This model's fields out of a larger object (a status that several writers share)."""
        keys = cls.wire_keys()
        return cls.model_validate({k: v for k, v in (data or {}).items() if k in keys})


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(FerryModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus
    reason: str = Field(max_length=1024, min_length=1, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class Failure(FerryModel):
    """Why a resource failed: a CamelCase reason for machines and a message for people."""

    reason: str
    message: str


class WorkerStatus(FerryModel):
    """The operator's record of the worker pods it started for one object."""

    pod: str | None = Field(default=None, description="The current worker pod.")
    attempts: int = Field(default=0, description="Worker pods started so far; each gets a name of its own.")
    restarts: int = Field(
        default=0, description="Failed or vanished workers replaced so far, counted against spec.maxRetries."
    )
    retry_time: datetime | None = Field(
        default=None, description="After a transient failure, the next worker starts no earlier than this."
    )


def conditions_field() -> Any:
    """A status `conditions` list, merged by type as Kubernetes does for metav1.Condition lists."""
    return Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class LocalObjectReference(FerryModel):
    """A reference to another object in the same namespace."""

    name: str = Field(min_length=1, max_length=253)


class SecretKeySelector(FerryModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


class StorageAccountRef(FerryModel):
    """A storage account reached through a Secret holding its connection string."""

    secret_ref: SecretKeySelector = Field(
        description="Secret key holding the account's connection string "
        "(DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;BlobEndpoint=...)."
    )
