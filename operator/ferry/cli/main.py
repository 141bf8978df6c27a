"""The `ferry` command: what users run (the operator, status, jobs, restorable, the kubectl plugin) and the
worker pods' entry points. Development commands live in the development package (`ferry-dev`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ferry import __version__
from ferry.kinds.registry import PLUGINS

if TYPE_CHECKING:  # the SDK is imported only by the commands that use it
    from ferry.storage.cosmos import CosmosAccess
    from ferry.storage.mongo import MongoAccess


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The SDKs log request URLs at INFO (SAS query strings included): keep them quiet. kopf logs every
    # handler call at INFO: with thousands of objects that says nothing; its warnings and errors stay.
    for noisy in ("azure", "urllib3", "kubernetes", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_operator(args: argparse.Namespace) -> int:
    from ferry import operator_main

    operator_main.run(args.namespace or [], args.metrics_port, args.metrics_host, args.liveness)
    return 0


def _cmd_restorable_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ferry.cli.restorable import render, restorable
    from ferry.kinds.databaseaccount.access import backup_for

    try:
        store = backup_for(args.namespace, args.account)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    index, _ = store.read_index()
    if index is None:
        print("error: the backup location holds no backup of this account yet", file=sys.stderr)
        return 1
    at = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    print(render(restorable(index, datetime.now(UTC), args.database, at), args.output))
    return 0


def _jobs_access(args: argparse.Namespace) -> CosmosAccess | MongoAccess:
    import os

    from ferry.kinds.databaseaccount.access import access_for
    from ferry.storage.cosmos import CosmosAccess, InvalidAccountKey

    if args.endpoint:
        key = os.environ.get(args.key_env)
        if not key:
            raise SystemExit(f"set the account key in ${args.key_env} (or use --account)")
        try:
            return CosmosAccess(endpoint=args.endpoint, key=key, verify_tls=not args.insecure_skip_tls_verify)
        except InvalidAccountKey as exc:
            raise SystemExit(f"error: ${args.key_env}: {exc}") from None
    if not args.account:
        raise SystemExit("name the account: --account NAME [--namespace NS], or --endpoint URL")
    try:
        return access_for(args.namespace, args.account)
    except InvalidAccountKey as exc:
        raise SystemExit(f"error: the Secret of DatabaseAccount {args.namespace}/{args.account}: {exc}") from None


def _cmd_jobs_list(args: argparse.Namespace) -> int:
    from ferry.cli.jobs import list_jobs

    print(list_jobs(_jobs_access(args)))
    return 0


def _cmd_jobs_show(args: argparse.Namespace) -> int:
    from ferry.cli.jobs import JobNotFound, show_job

    try:
        print(show_job(_jobs_access(args), args.job))
    except JobNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_jobs_rerun(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from ferry.cli.rerun import RerunRefused, rerun

    try:
        print(rerun(args.namespace, args.job))
    except RerunRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: ContainerCopyJob {args.namespace}/{args.job}: {exc.reason}", file=sys.stderr)
        return 1
    return 0


def _cmd_blobcopy_failures(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from rich.console import Console

    from ferry.cli.blobcopy import print_failures
    from ferry.kinds.blobcopy.access import manifest_for

    try:
        manifest = manifest_for(args.namespace, args.name)
    except ApiException as exc:
        print(f"error: reading BlobCopy {args.namespace}/{args.name} or its Secret: {exc.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_failures(manifest, Console())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from rich.console import Console
    from urllib3.exceptions import HTTPError

    from ferry.cli import status as status_cli

    namespace = None if args.all_namespaces else args.namespace or status_cli.current_namespace()
    try:
        if args.once or args.output == "json" or not sys.stdout.isatty():
            plain = Console(color_system=None, width=max(Console().width, 160), soft_wrap=False)
            return status_cli.print_once(namespace, args.output, plain)
        status_cli.watch(namespace, args.interval, Console())
    except ApiException as exc:
        print(f"error: the API server answered {exc.status} {exc.reason}: is Ferry installed here?", file=sys.stderr)
        return 1
    except (ConfigException, HTTPError, OSError) as exc:
        print(f"error: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    return 0


def _prog() -> str:
    """`kubectl ferry` when kubectl runs this as its plugin (kubectl-ferry on PATH), else `ferry`."""
    return "kubectl ferry" if Path(sys.argv[0]).name == "kubectl-ferry" else "ferry"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Ferry: Cosmos DB container copies, in-account restores and blob copies as Kubernetes resources.",
    )
    parser.add_argument("--version", action="version", version=f"ferry {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    op = commands.add_parser("operator", help="run the operator (kopf) against the current kubeconfig or cluster")
    op.add_argument("--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    op.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 disables)")
    op.add_argument("--metrics-host", default="0.0.0.0", help="address the metrics endpoint listens on")
    op.add_argument("--liveness", default=None, help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz")
    op.set_defaults(func=_cmd_operator)

    worker = commands.add_parser("worker", help="entry points of Ferry's worker pods (started by the operator)")
    kinds = worker.add_subparsers(dest="kind", required=True, metavar="KIND")
    for plugin in PLUGINS:
        if not plugin.workers:
            continue
        kind = kinds.add_parser(plugin.kind.singular, help=f"the worker pods of a {plugin.kind.kind}")
        roles = kind.add_subparsers(dest="role", required=True, metavar="ROLE")
        for role in plugin.workers:
            sub = roles.add_parser(role.name, help=role.help)
            role.arguments(sub)
            sub.set_defaults(func=role.run)

    restorable = commands.add_parser(
        "restorable", help="what a DatabaseAccount's continuous backup can restore (databases, containers, window)"
    )
    restorable_cmds = restorable.add_subparsers(dest="restorable_command", required=True, metavar="ACTION")
    listing = restorable_cmds.add_parser(
        "list", help="restorable databases and containers with their events, the window and its gaps"
    )
    listing.add_argument("--account", required=True, help="the DatabaseAccount (read with your kubeconfig)")
    listing.add_argument(
        "-n", "--namespace", default="default", help="the DatabaseAccount's namespace (default: default)"
    )
    listing.add_argument("--database", help="only this database and its containers")
    listing.add_argument("--at", help="also show what a restore at this time would bring back (RFC 3339)")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.set_defaults(func=_cmd_restorable_list)

    jobs = commands.add_parser(
        "jobs",
        help="the account's job history (copy jobs and restores) in its __datatransferstate database; re-runs",
    )
    jobs_cmds = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    for action, helptext in (("list", "list every job of the account"), ("show", "show one job")):
        sub = jobs_cmds.add_parser(action, help=helptext)
        if action == "show":
            sub.add_argument("job", help="the job's name (namespace/name) or id")
        sub.add_argument(
            "--account", help="a DatabaseAccount; its endpoint and key Secret are read with your kubeconfig"
        )
        sub.add_argument(
            "-n", "--namespace", default="default", help="the DatabaseAccount's namespace (default: default)"
        )
        sub.add_argument("--endpoint", help="or the account endpoint directly, with the key in --key-env")
        sub.add_argument("--key-env", default="FERRY_COSMOS_KEY", help="environment variable holding the key")
        sub.add_argument("--insecure-skip-tls-verify", action="store_true", help="only for local emulators")
        sub.set_defaults(func=_cmd_jobs_list if action == "list" else _cmd_jobs_show)
    again = jobs_cmds.add_parser(
        "rerun",
        help="run a Failed or Cancelled ContainerCopyJob again, in place",
        description="Sets the job's ferry.dev/rerun annotation to its next attempt number. The job resumes from "
        "its checkpoints when its failure left them valid, else starts over; status.attempts keeps the earlier "
        "runs. A Succeeded or unfinished job is refused. Also `kubectl ferry jobs rerun`.",
    )
    again.add_argument("job", help="the ContainerCopyJob's name")
    again.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
    again.set_defaults(func=_cmd_jobs_rerun)

    blobcopy = commands.add_parser("blobcopy", help="a BlobCopy's records beyond its status")
    blobcopy_cmds = blobcopy.add_subparsers(dest="blobcopy_command", required=True, metavar="ACTION")
    failures = blobcopy_cmds.add_parser(
        "failures",
        help="every failed blob (name, reason, message), from the manifest in the destination account",
        description="Reads the BlobCopy and its destination Secret with your kubeconfig and prints every failed "
        "blob its workers recorded. Also `kubectl ferry blobcopy failures`.",
    )
    failures.add_argument("name", help="the BlobCopy")
    failures.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
    failures.set_defaults(func=_cmd_blobcopy_failures)

    status = commands.add_parser(
        "status",
        help="every Ferry object with live progress, rate, time left, queue positions and failure reasons",
        description="Every Ferry object of a namespace (or all), redrawn in place until Ctrl-C; --once prints "
        "a plain table and exits. Also `kubectl ferry status`.",
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", help="the namespace (default: the kubeconfig context's)")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    status.add_argument("--once", action="store_true", help="print a plain table once (for scripts) and exit")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table", help="json implies --once")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default: 2)")
    status.set_defaults(func=_cmd_status)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
