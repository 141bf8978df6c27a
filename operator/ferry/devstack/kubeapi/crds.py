"""CustomResourceDefinition handling: resource registration and the status the real server sets."""

from __future__ import annotations

import datetime
from typing import Any

from ferry.devstack.kubeapi.resources import ResourceDef

Cause = dict[str, str]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_crd(crd: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    if not group:
        causes.append({"field": "spec.group", "reason": "FieldValueRequired", "message": "Required value"})
    if not names.get("plural"):
        causes.append({"field": "spec.names.plural", "reason": "FieldValueRequired", "message": "Required value"})
    if not names.get("kind"):
        causes.append({"field": "spec.names.kind", "reason": "FieldValueRequired", "message": "Required value"})
    expected = f"{names.get('plural', '')}.{group}"
    name = crd.get("metadata", {}).get("name", "")
    if names.get("plural") and group and name != expected:
        causes.append(
            {
                "field": "metadata.name",
                "reason": "FieldValueInvalid",
                "message": f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            }
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            {
                "field": "spec.scope",
                "reason": "FieldValueNotSupported",
                "message": f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
            }
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            {
                "field": "spec.versions",
                "reason": "FieldValueInvalid",
                "message": "must have exactly one version marked as storage version",
            }
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            {
                "field": "spec.versions",
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "array": must have exactly one version marked as storage version',
            }
        )
    return causes


def crd_resources(crd: dict[str, Any]) -> list[ResourceDef]:
    spec = crd["spec"]
    names = spec["names"]
    result = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subresources = ver.get("subresources") or spec.get("subresources") or {}
        schema = (ver.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
        result.append(
            ResourceDef(
                group=spec["group"],
                version=ver["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                builtin=False,
                has_generation=True,
                schema=schema,
                printer_columns=list(ver.get("additionalPrinterColumns") or []),
                storage=bool(ver.get("storage")),
                crd_name=crd["metadata"]["name"],
            )
        )
    return result


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    names = dict(crd["spec"]["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    ts = now()
    old = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}

    def cond(type_: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": old.get(type_, {}).get("lastTransitionTime", ts),
        }

    return {
        "acceptedNames": names,
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": [v["name"] for v in crd["spec"].get("versions") or [] if v.get("storage")],
    }
