"""`ferry jobs`: the account's container copy job history, as `az cosmosdb dts copy list/show` shows it.

The history is what `__datatransferstate` holds; reading it creates that database if it is absent
(as running a job would), and never deletes anything.
"""

from __future__ import annotations

from typing import Any

import yaml

from ferry.storage.cosmos import CosmosAccess
from ferry.storage.transferstate import get_job
from ferry.storage.transferstate import list_jobs as stored_jobs

__all__ = ["JobNotFound", "list_jobs", "show_job"]

COLUMNS = (
    "NAME",
    "STATE",
    "SOURCE",
    "DESTINATION",
    "PROCESSED",
    "TOTAL",
    "PERCENT",
    "WRITE REGION",
    "CREATED",
    "COMPLETED",
)


class JobNotFound(LookupError):
    pass


def _path(where: Any) -> str:
    if not isinstance(where, dict):
        return "-"
    return f"{where.get('database', '?')}/{where.get('container', '?')}"


def _row(job: dict[str, Any]) -> tuple[str, ...]:
    total = job.get("totalCount")
    processed = int(job.get("processedCount") or 0)
    percent = "-" if total is None else f"{100 if not total else min(100, processed * 100 // int(total))}%"
    return (
        str(job.get("name") or job.get("id")),
        str(job.get("state", "-")),
        _path(job.get("source")),
        _path(job.get("destination")),
        str(processed),
        "-" if total is None else str(total),
        percent,
        str(job.get("writeRegion") or "-"),
        str(job.get("createdTime") or "-"),
        str(job.get("completionTime") or "-"),
    )


def list_jobs(access: CosmosAccess) -> str:
    """A table of every job in the account, oldest first."""
    rows = [COLUMNS, *(_row(job) for job in stored_jobs(access))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no container copy jobs in __datatransferstate)")
    return "\n".join(lines)


def show_job(access: CosmosAccess, name: str) -> str:
    """One job (by uid, namespace/name or name) with its work units, as YAML."""
    job = get_job(access, name)
    if job is None:
        raise JobNotFound(f"no container copy job {name!r} in the account's __datatransferstate database")
    shown = {k: v for k, v in job.items() if k not in ("jobId", "unitsReady")}
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=False).rstrip()
