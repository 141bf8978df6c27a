"""`ferry restorable list`: what an account's backup can restore, as Azure's restorable resources report it.

- the window (earliest and latest restorable time) and its gaps;
- every database and container incarnation the window knows, with its events (Create, Replace, Delete,
  Recreate; their time; ownerId, the name; ownerResourceId, the incarnation's _rid) and, for one a restore
  created, its instance id (restorableSqlDatabases / restorableSqlContainers);
- with --at T, what a restore at T would bring back: each database live at T with its containers
  (restorableSqlResources).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ferry.backup.format import BackupIndex, ResourceKind
from ferry.backup.restoreplan import restorable_at
from ferry.backup.timeline import Incarnation, incarnations, restorable_window
from ferry.cli.tables import text_table
from ferry.timefmt import when


def _maybe_when(t: datetime | None) -> str | None:
    return when(t) if t else None


def _incarnation(i: Incarnation) -> dict[str, Any]:
    return {
        "kind": i.kind.value,
        "database": i.database,
        "name": i.name,
        "ownerResourceId": i.rid,
        "created": _maybe_when(i.created),
        "deleted": _maybe_when(i.deleted),
        "instanceId": i.instance_id,
        "events": [
            {
                "operationType": e.operation_type.value,
                "eventTimestamp": _maybe_when(e.event_timestamp),
                "ownerId": e.owner_id,
                "ownerResourceId": e.owner_resource_id,
                **({"settings": e.settings} if e.settings else {}),
            }
            for e in i.events
        ],
    }


def restorable(
    index: BackupIndex, now: datetime, database: str | None = None, at: datetime | None = None
) -> dict[str, Any]:
    """The listing as JSON-ready data."""
    window = restorable_window(index, now)
    found = [i for i in incarnations(index.events) if database is None or i.database == database]
    data: dict[str, Any] = {
        "window": {"earliest": _maybe_when(window[0]), "latest": _maybe_when(window[1])} if window else None,
        "gaps": [{"start": _maybe_when(g.start), "end": _maybe_when(g.end)} for g in index.gaps],
        "databases": [_incarnation(i) for i in found if i.kind == ResourceKind.DATABASE],
        "containers": [_incarnation(i) for i in found if i.kind == ResourceKind.CONTAINER],
    }
    if at is not None:
        resources = [r for r in restorable_at(index, at) if database is None or r.database == database]
        data["at"] = {
            "time": _maybe_when(at),
            "resources": [{"databaseName": r.database, "collectionNames": list(r.containers)} for r in resources],
        }
    return data


def render(data: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2)
    window = data["window"]
    lines = [
        f"Restorable window: {window['earliest']} to {window['latest']}" if window else "Restorable window: none yet",
        "Gaps: " + ("; ".join(f"{g['start']} to {g['end']}" for g in data["gaps"]) or "none"),
        "",
    ]
    rows: list[tuple[str, ...]] = []
    for entry in [*data["databases"], *data["containers"]]:
        events = ", ".join(f"{e['operationType']}@{e['eventTimestamp']}" for e in entry["events"])
        rows.append(
            (
                entry["kind"],
                entry["database"],
                entry["name"],
                entry["ownerResourceId"],
                entry["created"] or "-",
                entry["deleted"] or "-",
                entry["instanceId"] or "-",
                events,
            )
        )
    header = ("KIND", "DATABASE", "NAME", "RESOURCE ID", "CREATED", "DELETED", "INSTANCE ID", "EVENTS")
    lines += text_table(header, rows) if rows else ["(the backup knows no databases or containers yet)"]
    if "at" in data:
        lines += ["", f"A restore at {data['at']['time']} brings back:"]
        resources = data["at"]["resources"]
        rows = [(r["databaseName"], ", ".join(r["collectionNames"]) or "-") for r in resources]
        lines += text_table(("DATABASE", "CONTAINERS"), rows) if resources else ["(nothing existed then)"]
    return "\n".join(lines)
