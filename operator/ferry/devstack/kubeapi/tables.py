"""``meta.k8s.io/v1 Table`` rendering for ``kubectl get``."""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any

from jsonpath_ng.ext.parser import parse as parse_jsonpath

from ferry.devstack.kubeapi.resources import ResourceDef

_NAME_COL = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
_AGE_COL = {
    "name": "Age",
    "type": "date",
    "format": "",
    "priority": 0,
    "description": "CreationTimestamp is the server time when this object was created.",
}
_POD_COLS = [
    _NAME_COL,
    {"name": "Ready", "type": "string", "format": "", "priority": 0, "description": "The aggregate readiness state."},
    {"name": "Status", "type": "string", "format": "", "priority": 0, "description": "The aggregate status."},
    {"name": "Restarts", "type": "string", "format": "", "priority": 0, "description": "The number of restarts."},
    _AGE_COL,
    {"name": "IP", "type": "string", "format": "", "priority": 1, "description": "The pod IP."},
    {"name": "Node", "type": "string", "format": "", "priority": 1, "description": "The node name."},
]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_duration(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    secs = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if secs < -1:
        return "<invalid>"
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 8:
        return f"{hours}h{mins % 60}m" if mins % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


@functools.lru_cache(maxsize=256)
def _compiled(path: str) -> Any:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    return parse_jsonpath(path if path.startswith("$") else "$" + path)


def jsonpath(obj: Any, path: str) -> Any:
    """A printer column's JSONPath (filters included, e.g. ``.status.conditions[?(@.type=="Ready")].status``);
    the first match, as the API server shows it."""
    try:
        matches = _compiled(path).find(obj)
    except Exception:  # an expression the parser refuses shows an empty cell rather than failing the list
        return None
    return matches[0].value if matches else None


def _cell(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == "date":
        return human_duration(str(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if type_ in ("integer", "number", "boolean"):
        return value
    return str(value)


_STATUS_COL = {
    "name": "Status",
    "type": "string",
    "format": "",
    "priority": 0,
    "description": "The status of the namespace.",
}


def columns(res: ResourceDef) -> list[dict[str, Any]]:
    if res.group == "" and res.plural == "pods":
        return _POD_COLS
    if res.group == "" and res.plural == "namespaces":
        return [_NAME_COL, _STATUS_COL, _AGE_COL]
    if res.printer_columns:
        cols = [_NAME_COL]
        for col in res.printer_columns:
            cols.append(
                {
                    "name": col["name"],
                    "type": col.get("type", "string"),
                    "format": col.get("format", ""),
                    "description": col.get("description", ""),
                    "priority": col.get("priority", 0),
                }
            )
        return cols
    return [_NAME_COL, _AGE_COL]


def _pod_cells(obj: dict[str, Any]) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Pending"
    if obj["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    return [
        obj["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        phase,
        str(restarts),
        human_duration(obj["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def cells(res: ResourceDef, obj: dict[str, Any]) -> list[Any]:
    if res.group == "" and res.plural == "pods":
        return _pod_cells(obj)
    if res.group == "" and res.plural == "namespaces":
        phase = (obj.get("status") or {}).get("phase", "Active")
        return [obj["metadata"]["name"], phase, human_duration(obj["metadata"].get("creationTimestamp"))]
    if res.printer_columns:
        return [
            obj["metadata"]["name"],
            *(_cell(jsonpath(obj, col["jsonPath"]), col.get("type", "string")) for col in res.printer_columns),
        ]
    return [obj["metadata"]["name"], human_duration(obj["metadata"].get("creationTimestamp"))]


def row_object(res: ResourceDef, obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(
    res: ResourceDef, objs: list[dict[str, Any]], rv: str, include: str = "Metadata", cont: str | None = None
) -> dict[str, Any]:
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": cells(res, obj)}
        embedded = row_object(res, obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(res),
        "rows": rows,
    }
