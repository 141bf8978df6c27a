"""Structural-schema handling for custom resources: pruning, defaulting, validation and CEL rules."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
from typing import Any

import celpy
import celpy.adapter

Cause = dict[str, str]
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _is_type(value: Any, type_: str) -> bool:
    if type_ in ("integer", "number") and isinstance(value, bool):
        return False
    if type_ == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(type_, (object,)))


def prune(obj: Any, schema: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """Drop fields unknown to the schema (in place); return their paths for strict validation."""
    unknown: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key in list(obj):
            sub = f"{path}.{key}" if path else key
            if root and key in _ROOT_KEEP:
                continue
            if obj[key] is None and props and key in props and not props[key].get("nullable"):
                del obj[key]
                continue
            if props is not None and key in props:
                unknown += prune(obj[key], props[key], sub, False)
            elif isinstance(addl, dict):
                unknown += prune(obj[key], addl, sub, False)
            elif addl is True or preserve or (props is None and schema.get("type") != "object"):
                continue
            elif props is None and not preserve and schema.get("type") == "object" and addl is None:
                unknown.append(sub)
                del obj[key]
            else:
                unknown.append(sub)
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            unknown += prune(item, schema["items"], f"{path}[{i}]", False)
    return unknown


def apply_defaults(obj: Any, schema: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for key in obj:
                if key not in props:
                    apply_defaults(obj[key], addl)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


def _bad(path: str, obj: Any, text: str) -> Cause:
    return _cause(path, "FieldValueInvalid", f"Invalid value: {_fmt(obj)}: {path or '<root>'} in body {text}")


def validate(obj: Any, schema: dict[str, Any], old: Any = None, path: str = "", root: bool = True) -> list[Cause]:
    causes: list[Cause] = []
    where = path or "<root>"
    if obj is None and schema.get("nullable"):
        return causes
    type_ = schema.get("type")
    int_or_string = schema.get("x-kubernetes-int-or-string")
    if int_or_string:
        if not (_is_type(obj, "integer") or isinstance(obj, str)):
            causes.append(
                _cause(
                    path,
                    "FieldValueTypeInvalid",
                    f"Invalid value: {_fmt(obj)}: {where} in body must be of type integer-or-string",
                )
            )
            return causes
    elif type_ and not _is_type(obj, type_):
        got = "null" if obj is None else type(obj).__name__
        causes.append(
            _cause(
                path,
                "FieldValueTypeInvalid",
                f'Invalid value: "{got}": {where} in body must be of type {type_}: "{got}"',
            )
        )
        return causes
    if "enum" in schema and obj not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        causes.append(
            _cause(path, "FieldValueNotSupported", f"Unsupported value: {_fmt(obj)}: supported values: {supported}")
        )
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (obj < low or (schema.get("exclusiveMinimum") and obj == low)):
            causes.append(_bad(path, obj, f"should be greater than or equal to {schema['minimum']}"))
        if high is not None and (obj > high or (schema.get("exclusiveMaximum") and obj == high)):
            causes.append(_bad(path, obj, f"should be less than or equal to {schema['maximum']}"))
    if isinstance(obj, str):
        if "minLength" in schema and len(obj) < schema["minLength"]:
            causes.append(_bad(path, obj, f"should be at least {schema['minLength']} chars long"))
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            causes.append(
                _cause(path, "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes")
            )
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            causes.append(_bad(path, obj, f"should match '{schema['pattern']}'"))
    if isinstance(obj, list):
        if "minItems" in schema and len(obj) < schema["minItems"]:
            causes.append(_bad(path, len(obj), f"should have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(obj) > schema["maxItems"]:
            causes.append(
                _cause(path, "FieldValueTooMany", f"Too many: {len(obj)}: must have at most {schema['maxItems']} items")
            )
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(obj):
                causes += validate(item, items, None, f"{path}[{i}]", False)
    if isinstance(obj, dict):
        for req in schema.get("required", []):
            if req not in obj:
                causes.append(_cause(f"{path}.{req}" if path else req, "FieldValueRequired", "Required value"))
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for key, value in obj.items():
            if root and key in _ROOT_KEEP:
                continue
            sub = f"{path}.{key}" if path else key
            old_value = old.get(key) if isinstance(old, dict) else None
            if key in props:
                causes += validate(value, props[key], old_value, sub, False)
            elif isinstance(addl, dict):
                causes += validate(value, addl, old_value, sub, False)
    if schema.get("x-kubernetes-validations"):
        causes += _cel(obj, old, schema, path)
    return causes


def _cause(field: str, reason: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


@functools.lru_cache(maxsize=512)
def _program(expr: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr))


def _cel(obj: Any, old: Any, schema: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    activation: dict[str, Any] = {"self": celpy.adapter.json_to_cel(obj)}
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule.get("rule", "")
        transition = "oldSelf" in expr
        if transition:
            if old is None:
                continue  # transition rules only apply to updates of existing values
            activation["oldSelf"] = celpy.adapter.json_to_cel(old)
        try:
            result = _program(expr).evaluate(activation)
            ok = bool(result) if isinstance(result, (bool, celpy.celtypes.BoolType)) else False
        except Exception:
            ok = False
        if ok:
            continue
        message = rule.get("message") or f"failed rule: {expr}"
        if rule.get("messageExpression"):
            with contextlib.suppress(Exception):  # the static message stands if the expression fails
                message = str(_program(rule["messageExpression"]).evaluate(activation))
        field = path
        if rule.get("fieldPath"):
            field = f"{path}{rule['fieldPath']}" if path else rule["fieldPath"].lstrip(".")
        type_ = schema.get("type", "object")
        causes.append(_cause(field, rule.get("reason", "FieldValueInvalid"), f'Invalid value: "{type_}": {message}'))
    return causes
