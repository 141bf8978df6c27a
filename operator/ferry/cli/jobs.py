"""`ferry jobs`: the account's job history (container copy jobs and restores), as `az cosmosdb dts copy
list/show` shows it.

The history is what `__datatransferstate` holds; reading it creates that database if it is absent
(as running a job would), and never deletes anything.
"""

from __future__ import annotations

from typing import Any

import yaml

from ferry.cli.tables import text_table
from ferry.storage.cosmos import CosmosAccess
from ferry.storage.mongo import MongoAccess
from ferry.transfer.state import get_job
from ferry.transfer.state import list_jobs as stored_jobs

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
    account = f"{where['account']}:" if where.get("account") else ""  # a cross-account copy's source
    return f"{account}{where.get('database', '?')}/{where.get('container', '?')}"


def _places(job: dict[str, Any]) -> tuple[str, str]:
    """Where a job reads and writes: containers for a copy job; the backup and the restored name for a restore."""
    if job.get("kind") != "restore":
        tasks = job.get("tasks")
        more = f" (+{len(tasks) - 1} tasks)" if isinstance(tasks, list) and len(tasks) > 1 else ""
        return _path(job.get("source")) + more, _path(job.get("destination")) + more
    request = job.get("request") or {}
    source = f"backup:{request.get('database')}" + (f"/{request['container']}" if request.get("container") else "")
    into_db = request.get("target_database") or request.get("database")
    into = request.get("target_container") or request.get("container")
    return source, f"{into_db}/{into}" if into else str(into_db)


def _row(job: dict[str, Any]) -> tuple[str, ...]:
    total = job.get("totalCount")
    processed = int(job.get("processedCount") or 0)
    percent = "-" if total is None else f"{100 if not total else min(100, processed * 100 // int(total))}%"
    return (
        str(job.get("name") or job.get("id")),
        str(job.get("state", "-")),
        *_places(job),
        str(processed),
        "-" if total is None else str(total),
        percent,
        str(job.get("writeRegion") or "-"),
        str(job.get("createdTime") or "-"),
        str(job.get("completionTime") or "-"),
    )


def list_jobs(access: CosmosAccess | MongoAccess) -> str:
    """A table of every job in the account, oldest first."""
    rows = [_row(job) for job in stored_jobs(access)]
    lines = text_table(COLUMNS, rows)
    if not rows:
        lines.append("(no container copy jobs or restores in __datatransferstate)")
    return "\n".join(lines)


def show_job(access: CosmosAccess | MongoAccess, name: str) -> str:
    """One job (by uid, namespace/name or name) with its work units, as YAML."""
    job = get_job(access, name)
    if job is None:
        raise JobNotFound(f"no job {name!r} in the account's __datatransferstate database")
    shown = {k: v for k, v in job.items() if k not in ("jobId", "unitsReady")}
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=False).rstrip()
