"""DatabaseAccount's place in Ferry: its controller, the line `ferry status` shows for it, and the worker roles of
its pods: the monitor, the backup's capture pod, and the two instance pools that run its copy jobs and restores."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.kinds.databaseaccount.controller import (
    BACKUP_ROLE,
    COPY_ROLE,
    MONITOR_ROLE,
    RESTORE_ROLE,
    DatabaseAccountController,
)
from ferry.kinds.plugin import KindPlugin, StatusSummary, WorkerRole, namespace_and_name


def summary(body: Mapping[str, Any]) -> StatusSummary:
    """Ready's reason as the state; a failing backup or an unready account as the reason."""
    status = body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready") or {}
    phase = str(ready.get("reason") or "Pending")
    backup = conditions.get("BackupHealthy")
    if backup is not None and backup.get("status") == "False":
        return StatusSummary(phase, str(backup.get("reason", "")), str(backup.get("message", "")))
    if ready.get("status") == "False":
        return StatusSummary(phase, phase, str(ready.get("message", "")))
    return StatusSummary(phase, message=f"write region {status['writeRegion']}" if status.get("writeRegion") else "")


def _account(parser: argparse.ArgumentParser) -> None:
    namespace_and_name(parser, "the DatabaseAccount")


def _monitor_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--poll-interval", default="60s", help="how often the regions are read (Go duration)")


def _monitor(args: argparse.Namespace) -> int:
    from ferry.kinds.databaseaccount import monitor_worker

    return monitor_worker.main(args.namespace, args.name, args.poll_interval)


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--interval", default="30s", help="time between captures (Go duration)")
    parser.add_argument("--retention", default="168h", help="how long the backup keeps what it captured")
    parser.add_argument(
        "--deletion-sweep-interval", default="10m", help="without the deletes feed: time between deletion sweeps"
    )
    parser.add_argument("--container", required=True, help="the blob container of the backup location")
    parser.add_argument("--prefix", default="", help="the folder of this account's backup in the container")


def _backup(args: argparse.Namespace) -> int:
    from ferry.kinds.databaseaccount import capture_worker

    return capture_worker.main(
        args.namespace,
        args.name,
        args.interval,
        args.retention,
        args.container,
        args.prefix,
        args.deletion_sweep_interval,
    )


def _copy(args: argparse.Namespace) -> int:
    from ferry.kinds.containercopyjob import worker

    return worker.main(args.namespace, args.name)


def _restore_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--backup-container", required=True, help="the blob container of the account's backup")
    parser.add_argument("--backup-prefix", default="", help="the folder of the account's backup in the container")


def _restore(args: argparse.Namespace) -> int:
    from ferry.kinds.inaccountrestore import worker

    return worker.main(args.namespace, args.name, args.backup_container, args.backup_prefix)


PLUGIN = KindPlugin(
    kind=DATABASE_ACCOUNT,
    controller=DatabaseAccountController,
    summary=summary,
    workers=(
        WorkerRole(MONITOR_ROLE, "watch the account's regions and reachability", _monitor_arguments, _monitor),
        WorkerRole(BACKUP_ROLE, "capture the account's changes into its continuous backup", _backup_arguments, _backup),
        WorkerRole(COPY_ROLE, "a copy instance: work on the account's active ContainerCopyJob", _account, _copy),
        WorkerRole(
            RESTORE_ROLE, "a restore instance: work on the account's InAccountRestores", _restore_arguments, _restore
        ),
    ),
)
