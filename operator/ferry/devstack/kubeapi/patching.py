"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a strategic merge patch for core types."""

from __future__ import annotations

import copy
from typing import Any

from ferry.devstack.kubeapi.errors import api_error, bad_request

# Lists merged by a key in strategic merge patches (simplified from the core types' patch metadata).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "tolerations": "key",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
SET_LISTS = {"finalizers"}  # merged as sets of scalars


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _resolve(doc: Any, path: str) -> tuple[Any, str | int]:
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    tokens = [_unescape(t) for t in path[1:].split("/")]
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, list):
            cur = cur[int(token)]
        elif isinstance(cur, dict) and token in cur:
            cur = cur[token]
        else:
            raise _patch_failed(f"doc is missing path: {path!r}")
    last: str | int = tokens[-1]
    if isinstance(cur, list):
        last = len(cur) if last == "-" else int(last)
    return cur, last


def _patch_failed(message: str) -> Exception:
    return api_error(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path", "")
        try:
            if kind in ("add", "replace", "test", "remove") and path == "":
                if kind == "test":
                    if doc != op.get("value"):
                        raise _patch_failed("testing value failed")
                    continue
                doc = copy.deepcopy(op.get("value"))
                continue
            if kind in ("move", "copy"):
                src_parent, src_key = _resolve(doc, op["from"])
                value = copy.deepcopy(src_parent[src_key])
                if kind == "move":
                    del src_parent[src_key]
                parent, key = _resolve(doc, path)
                _insert(parent, key, value)
                continue
            parent, key = _resolve(doc, path)
            if kind == "add":
                _insert(parent, key, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                if isinstance(parent, dict) and key not in parent:
                    raise _patch_failed(f"unable to remove nonexistent key: {key}")
                del parent[key]
            elif kind == "replace":
                if isinstance(parent, dict) and key not in parent:
                    raise _patch_failed(f"replace operation does not apply: doc is missing key: {path}")
                parent[key] = copy.deepcopy(op.get("value"))
            elif kind == "test":
                current = parent.get(key) if isinstance(parent, dict) else parent[key]
                if current != op.get("value"):
                    raise _patch_failed(f"testing value {path} failed")
            else:
                raise bad_request(f"unexpected kind of json patch operation: {kind!r}")
        except (IndexError, ValueError, TypeError, KeyError) as e:
            raise _patch_failed(f"{kind} operation failed at {path}: {e}") from e
    return doc


def _insert(parent: Any, key: str | int, value: Any) -> None:
    if isinstance(parent, list):
        assert isinstance(key, int)
        parent.insert(key, value)
    else:
        parent[key] = value


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if key.startswith("$setElementOrder/"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in SET_LISTS and isinstance(result.get(key), list):
            result[key] = list(dict.fromkeys([*result[key], *value]))
        else:
            merged = strategic_merge(result.get(key), value, key)
            if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = merged
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            name = key.split("/", 1)[1]
            result[name] = [x for x in result.get(name, []) if x not in value]
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(copy.deepcopy(item))
            continue
        key = item[merge_key]
        idx = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(merge_key) == key), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
        elif idx is None:
            result.append({k: v for k, v in item.items() if not k.startswith("$")})
        else:
            result[idx] = strategic_merge(result[idx], item)
    return result
