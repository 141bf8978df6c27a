"""Types shared by every Ferry resource: references, conditions, failures, durations."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ferry"

# Go-style durations as Kubernetes users write them ("90s", "15m", "336h", "1h30m").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_MAX_LENGTH = 32


def _seconds(text: str) -> float:
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90s, 15m, 336h)")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))


def parse_duration(text: str) -> timedelta:
    """Turn a Go-style duration into a timedelta; the CRD's pattern and bounds guarantee the form."""
    return timedelta(seconds=_seconds(text))


@dataclass(frozen=True)
class DurationBounds:
    """A Go-style duration from `low` to `high`, checked by the API server (CEL, naming the field) and by the
    models (objects stored before a bound existed): no zero interval that spins a worker in a loop, no value a
    worker cannot represent."""

    low: str
    high: str

    def check(self, text: str) -> str:
        if not _seconds(self.low) <= _seconds(text) <= _seconds(self.high):
            raise ValueError(f"{text} is outside {self.low} to {self.high}")
        return text

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        found = handler(schema)
        found.update(pattern=DURATION_PATTERN, maxLength=DURATION_MAX_LENGTH)
        found["x-kubernetes-validations"] = [
            {
                "rule": f"duration(self) >= duration('{self.low}') && duration(self) <= duration('{self.high}')",
                "message": f"must be a duration from {self.low} to {self.high}",
            }
        ]
        return found


@dataclass(frozen=True)
class NameRule:
    """A name the service would refuse, refused at apply: a CEL rule with a message a user can act on (the API
    server puts the field's path before it), and the same check in the models."""

    pattern: str  # the whole name; RE2 and Python's re read it alike
    message: str

    def problem(self, name: str) -> str | None:
        """Why the service would refuse the name, or None."""
        return None if re.fullmatch(self.pattern, name) else self.message

    def check(self, name: str) -> str:
        if (why := self.problem(name)) is not None:
            raise ValueError(why)
        return name

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        found = handler(schema)
        # A raw CEL string: the pattern's backslashes reach RE2 as they are.
        found["x-kubernetes-validations"] = [{"rule": f"self.matches(r'{self.pattern}')", "message": self.message}]
        return found


# Cosmos DB resource ids (databases, containers): no '/', '\\', '?' or '#' (nor tab or line break, which the SDK
# refuses too) and no space at the end; at most 255 characters (the fields' maxLength).
COSMOS_NAME = NameRule(
    pattern=r"^[^/\\?#\t\r\n]*[^/\\?#\t\r\n ]$",
    message="Cosmos DB refuses this name: a database or container id cannot contain '/', '\\', '?', '#', a tab or "
    "a line break, nor end with a space",
)
# Blob container names: 3 to 63 characters (the fields' bounds) of lowercase letters, digits and single hyphens,
# starting and ending with a letter or digit.
BLOB_CONTAINER_NAME = NameRule(
    pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
    message="Azure Storage refuses this container name: use 3 to 63 lowercase letters, digits and single hyphens, "
    "starting and ending with a letter or digit",
)
CosmosName = Annotated[str, COSMOS_NAME]
BlobContainerName = Annotated[str, BLOB_CONTAINER_NAME]

# URLs with credentials in the authority (user:password@host): they would become a plain env value of a worker pod.
_URL_WITH_CREDENTIALS = "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"


def no_credentials_in_url(field: str, message: str) -> dict[str, str]:
    """The CEL rule refusing a URL field (of the object it is attached to) that carries user:password@."""
    return {
        "rule": f"!has(self.{field}) || !self.{field}.matches('{_URL_WITH_CREDENTIALS}')",
        "message": message,
        "fieldPath": f".{field}",
    }


def _in_utc(value: Any) -> Any:
    """The value with every zoned time in it in UTC, so that it is written with Z like every other time."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, FerryModel):
        changed = {name: _in_utc(getattr(value, name)) for name in type(value).model_fields}
        return value.model_copy(update=changed)
    if isinstance(value, list):
        return [_in_utc(v) for v in value]
    return value


class FerryModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # Extra `x-kubernetes-validations` rules attached to this object's schema.
    cel_rules: ClassVar[list[dict[str, str]]] = []

    def wire(self) -> dict[str, Any]:
        """The object as it is written to the API: camelCase, without unset fields, times in UTC (with Z)."""
        utc: FerryModel = _in_utc(self)
        return utc.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def wire_keys(cls) -> frozenset[str]:
        return frozenset(info.alias or name for name, info in cls.model_fields.items())

    @classmethod
    def part_of(cls, data: Mapping[str, Any] | None) -> Self:
        """This model's fields out of a larger object (a status that several writers share)."""
        keys = cls.wire_keys()
        return cls.model_validate({k: v for k, v in (data or {}).items() if k in keys})


def printable(text: str) -> str:
    """Text safe to show a person: control characters (but newline and tab) and Unicode formatting characters
    (bidirectional overrides such as U+202E, zero-width marks) escaped as \\uXXXX, so that a hostile blob or
    database name cannot hide or reorder what status, Events and logs say."""
    if text.isprintable():
        return text
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf") else f"\\u{ord(c):04x}" for c in text
    )


Printable = Annotated[str, AfterValidator(printable)]


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
    message: Printable = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class Failure(FerryModel):
    """Why a resource failed: a CamelCase reason for machines and a message for people."""

    reason: str
    message: Printable


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
