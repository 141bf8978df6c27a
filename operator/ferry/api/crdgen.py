"""Generates CustomResourceDefinitions from the pydantic models: the models are the one source of truth."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ferry.api.common import FerryModel
from ferry.api.kinds import ALL_KINDS, Kind

JSONSchema = dict[str, Any]

# Keywords that pydantic emits but a structural schema does not accept or need.
_DROPPED_KEYWORDS = {"title", "$defs", "discriminator", "examples"}


def _model_by_title(models: list[type[FerryModel]]) -> dict[str, type[FerryModel]]:
    """Every FerryModel reachable from the given ones, by class name (pydantic's $defs keys)."""
    found: dict[str, type[FerryModel]] = {}
    pending = list(models)
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            for arg in _type_args(info.annotation):
                if isinstance(arg, type) and issubclass(arg, FerryModel):
                    pending.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for sub in getattr(annotation, "__args__", ()) or ():
        args.extend(_type_args(sub))
    return args


def _structural(
    schema: JSONSchema, defs: dict[str, JSONSchema], models: dict[str, type[FerryModel]], keep_defaults: bool
) -> JSONSchema:
    """Inline references, drop nullability wrappers and attach CEL rules: Kubernetes wants no $ref."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        resolved = _structural(copy.deepcopy(defs[name]), defs, models, keep_defaults)
        model = models.get(name)
        if model is not None:
            _decorate(resolved, model, keep_defaults)
        for key, value in schema.items():
            if key not in ("$ref",) and key not in _DROPPED_KEYWORDS:
                resolved[key] = value
        return resolved
    if "anyOf" in schema:
        options = [opt for opt in schema["anyOf"] if opt.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {schema}")
        merged = _structural(options[0], defs, models, keep_defaults)
        for key, value in schema.items():
            if key != "anyOf" and key not in _DROPPED_KEYWORDS:
                merged[key] = value
        if merged.get("default", 0) is None:
            del merged["default"]
        return _structural(merged, defs, models, keep_defaults)
    out: JSONSchema = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS or (key == "default" and not keep_defaults):
            continue
        if key == "properties":
            out[key] = {prop: _structural(sub, defs, models, keep_defaults) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs, models, keep_defaults)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]  # extra="forbid" is enforced by pruning and strict validation
    return out


def _decorate(schema: JSONSchema, model: type[FerryModel], keep_defaults: bool) -> None:
    """Attach what pydantic cannot express: CEL rules, and `{}` defaults so nested defaults apply."""
    if model.cel_rules:
        schema["x-kubernetes-validations"] = [dict(rule) for rule in model.cel_rules]
    if not keep_defaults:
        return
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            schema.setdefault("properties", {}).get(info.alias or name, {})["default"] = {}


def model_schema(model: type[FerryModel], keep_defaults: bool) -> JSONSchema:
    raw = model.model_json_schema(by_alias=True, mode="validation" if keep_defaults else "serialization")
    defs = raw.pop("$defs", {})
    models = _model_by_title([model])
    schema = _structural(raw, defs, models, keep_defaults)
    _decorate(schema, model, keep_defaults)
    return schema


def crd_for(kind: Kind) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec, keep_defaults=True)
    status_schema = model_schema(kind.status, keep_defaults=False)
    status_schema.pop("required", None)
    root: JSONSchema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    columns = [
        {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
            **({"priority": column.priority} if column.priority else {}),
            **({"description": column.description} if column.description else {}),
        }
        for column in kind.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "ferry"}},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [kind.category],
            },
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crds() -> dict[str, str]:
    """File name → YAML text of every CRD."""
    return {
        f"{kind.group}_{kind.plural}.yaml": yaml.safe_dump(crd_for(kind), sort_keys=False, width=120)
        for kind in ALL_KINDS
    }


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
