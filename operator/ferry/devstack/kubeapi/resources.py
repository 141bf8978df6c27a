"""Resource definitions served by the emulator (built-in and CRD-backed)."""

from __future__ import annotations

import dataclasses
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclasses.dataclass
class ResourceDef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status_subresource: bool = False
    extra_subresources: tuple[str, ...] = ()  # e.g. pods/log: served as stubs
    builtin: bool = True  # built-ins accept strategic merge patches, CRs do not
    has_generation: bool = False
    schema: dict[str, Any] | None = None  # openAPIV3Schema of a CR version
    printer_columns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    storage: bool = True
    crd_name: str | None = None

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_key(self) -> tuple[str, str]:
        """The storage identity: all versions of a resource share objects."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """As in error messages: ``widgets.test.ferry.dev`` or ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_group(self) -> str:
        """As in Invalid messages: ``Widget.test.ferry.dev`` or ``Pod``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"
