"""`ferry status` (also `kubectl ferry status`): every Ferry object of a namespace or of all, with progress,
rate, time left, queue positions and failure reasons; redrawn in place by rich, or printed once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ferry.cli.status_rows import Rates, Row, amount, left_text, rate_text, row_of
from ferry.kinds.registry import PLUGINS

PHASE_STYLES = {"Succeeded": "green", "Connected": "green", "Failed": "bold red", "Cancelled": "red"}
ORDER = {plugin.kind.kind: i for i, plugin in enumerate(PLUGINS)}
SHORT = {plugin.kind.kind: plugin.kind.short_names[0] for plugin in PLUGINS}


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl uses it."""
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


def fetch(namespace: str | None) -> list[Row]:
    """Rows of every Ferry object in the namespace (None: all namespaces), accounts first."""
    from ferry.kube.client import custom

    api = custom()
    rows: list[Row] = []
    for kind in (plugin.kind for plugin in PLUGINS):
        if namespace is None:
            listed = api.list_cluster_custom_object(kind.group, kind.version, kind.plural)
        else:
            listed = api.list_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural)
        items: list[dict[str, Any]] = cast(dict[str, Any], listed).get("items") or []
        rows.extend(row_of(kind.kind, item) for item in items)
    return sorted(rows, key=lambda r: (ORDER[r.kind], r.namespace, r.name))


def summary(rows: Sequence[Row], where: str) -> str:
    phases = Counter(r.phase for r in rows if r.is_job)
    counted = ", ".join(f"{n} {phase.lower()}" for phase, n in sorted(phases.items()))
    return f"Ferry in {where}: {len(rows)} object(s){': ' + counted if counted else ''}"


def table(rows: Sequence[Row], all_namespaces: bool, live: bool, compact: bool = False) -> Table:
    """The table of rows; with progress bars when live, plain text cells otherwise. Where the terminal is
    narrow: kinds by their short names, and no done/total, rate or queue columns."""
    grid = Table(box=box.SIMPLE_HEAD if live else None, show_edge=False, pad_edge=False, expand=False)
    names = ["KIND", "NAME", "PHASE", "PROGRESS", "DONE", "RATE", "LEFT", "QUEUE", "REASON"]
    if compact:
        names = [n for n in names if n not in ("DONE", "RATE", "QUEUE")]
    if all_namespaces:
        names.insert(0, "NAMESPACE")
    for name in names:
        right = name in ("DONE", "RATE", "LEFT")
        grid.add_column(name, no_wrap=name != "REASON", justify="right" if right else "left", min_width=len(name))
    for row in rows:
        shown = bool(row.total) and row.done is not None
        cells: dict[str, RenderableType] = {
            "NAMESPACE": row.namespace,
            "KIND": SHORT[row.kind] if compact else row.kind,
            "NAME": row.name,
            "PHASE": Text(row.phase, style=PHASE_STYLES.get(row.phase, "") if live else ""),
            "PROGRESS": _progress(row, live, 10 if compact else 20),
            "DONE": f"{amount(row, row.done or 0)}/{amount(row, row.total or 0)}" if shown else "",
            "RATE": rate_text(row),
            "LEFT": left_text(row),
            "QUEUE": "" if row.queue_position is None else str(row.queue_position),
            "REASON": row.reason,
        }
        grid.add_row(*(cells[name] for name in names))
    return grid


def _progress(row: Row, live: bool, width: int) -> RenderableType:
    fraction = row.fraction
    if fraction is None:
        return ""
    percent = f"{fraction * 100:3.0f}%"
    if not live:
        return percent
    bar = ProgressBar(total=1.0, completed=fraction, width=width, finished_style="green")
    cell = Table.grid(padding=(0, 1))
    cell.add_row(bar, percent)
    return cell


def failures(rows: Sequence[Row]) -> list[str]:
    return [f"{r.kind} {r.namespace}/{r.name}: {r.reason}: {r.message}" for r in rows if r.phase == "Failed"]


def view(rows: Sequence[Row], where: str, all_namespaces: bool, live: bool, width: int = 160) -> RenderableType:
    parts: list[RenderableType] = [Text(summary(rows, where), style="bold" if live else "")]
    parts.append(table(rows, all_namespaces, live, compact=width < 120) if rows else Text("no Ferry objects"))
    failed = failures(rows)
    if failed:
        parts.append(Text("\n".join(["failed:", *failed]), style="red" if live else ""))
    if live:
        parts.append(Text(f"updated {datetime.now().strftime('%H:%M:%S')} · Ctrl-C to leave", style="dim"))
    return Group(*parts)


def print_once(namespace: str | None, output: str, console: Console) -> int:
    rows = fetch(namespace)
    if output == "json":
        console.print_json(json.dumps({"items": [r.wire() for r in rows]}))
        return 0
    console.print(view(rows, namespace or "all namespaces", namespace is None, live=False))
    return 0


def watch(
    namespace: str | None,
    interval: float,
    console: Console,
    until: Callable[[Sequence[Row]], bool] = lambda rows: False,
    deadline: float | None = None,
) -> list[Row]:
    """Redraw the view in place every `interval` until `until(rows)` holds, the deadline passes, or Ctrl-C."""
    rates = Rates()
    where = namespace or "all namespaces"
    rows = [rates.update(r) for r in fetch(namespace)]
    if not console.is_terminal:  # a log, not a screen: nothing to redraw; the view once, at the end
        while not until(rows) and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            rows = [rates.update(r) for r in fetch(namespace)]
        console.print(view(rows, where, namespace is None, live=False, width=console.width))
        return rows
    initial = view(rows, where, namespace is None, live=True, width=console.width)
    with Live(initial, console=console, auto_refresh=False) as live:
        try:
            while not until(rows) and (deadline is None or time.monotonic() < deadline):
                time.sleep(interval)
                rows = [rates.update(r) for r in fetch(namespace)]
                live.update(view(rows, where, namespace is None, live=True, width=console.width), refresh=True)
        except KeyboardInterrupt:
            pass
    return rows


def all_finished(rows: Sequence[Row]) -> bool:
    jobs = [r for r in rows if r.is_job]
    return bool(jobs) and all(r.finished for r in jobs)
