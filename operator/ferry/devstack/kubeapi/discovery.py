"""Legacy discovery documents and a minimal OpenAPI v3 (enough for kubectl's field-validation check)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ferry.devstack.kubeapi.resources import ResourceDef

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-ferry",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _versions(resources: list[ResourceDef], group: str) -> list[str]:
    seen: dict[str, None] = {}
    for res in resources:
        if res.group == group:
            seen.setdefault(res.version)
    return list(seen)


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group(resources: list[ResourceDef], group: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in _versions(resources, group)]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def api_groups(resources: list[ResourceDef]) -> dict[str, Any]:
    groups = list(dict.fromkeys(r.group for r in resources if r.group))
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(resources, g) for g in groups]}


def api_group(resources: list[ResourceDef], group: str) -> dict[str, Any] | None:
    if not any(r.group == group for r in resources):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(resources, group)}


def resource_list(resources: list[ResourceDef], group: str, version: str) -> dict[str, Any] | None:
    matching = [r for r in resources if r.group == group and r.version == version]
    if not matching:
        return None
    entries: list[dict[str, Any]] = []
    for r in matching:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        subs = (["status"] if r.status_subresource else []) + list(r.extra_subresources)
        for sub in subs:
            verbs = ["get", "patch", "update"] if sub == "status" else ["get"]
            entries.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_root(resources: list[ResourceDef]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in resources:
        key = _gv_path(r.group, r.version)
        doc = openapi_gv(resources, r.group, r.version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


def _schema_name(r: ResourceDef) -> str:
    rev = ".".join(reversed(r.group.split("."))) if r.group else "io.k8s.api.core"
    return f"{rev}.{r.version}.{r.kind}"


def openapi_gv(resources: list[ResourceDef], group: str, version: str) -> dict[str, Any]:
    """Declares each resource's PATCH with ``fieldValidation`` so kubectl validates server-side."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for r in resources:
        if r.group != group or r.version != version:
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        prefix = f"/{_gv_path(group, version)}/" + ("namespaces/{namespace}/" if r.namespaced else "")
        op = {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [param],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{prefix}{r.plural}/{{name}}"] = {"patch": op, "put": op}
        paths[f"{prefix}{r.plural}"] = {"post": op}
        # Built-ins get no schema, so kubectl falls back to its compiled-in strategic patch metadata.
        if r.schema:
            schema = {**r.schema, "x-kubernetes-group-version-kind": [gvk]}
            props = dict(schema.get("properties") or {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            schema["properties"] = props
            schemas[_schema_name(r)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
