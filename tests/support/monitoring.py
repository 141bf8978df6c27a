"""The chart's Grafana dashboard and PrometheusRule as Helm renders them, and the metric names they use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "ferry"
ENABLED = {"metrics": {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
# Names a query uses that are not the operator's: Prometheus's own `up`, and PromQL's functions and keywords.
NOT_EXPORTED = {"up"}


def rendered(values: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the dashboard, the PrometheusRule's groups) of the chart rendered with both enabled."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or ENABLED, name="ferry", namespace="ferry-system", is_install=True)
    texts = [text for path, text in manifests.items() if not path.endswith("NOTES.txt")]
    objects = [d for text in texts for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    board = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ferry-dashboard")
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    return json.loads(board["data"]["ferry.json"]), rule["spec"]["groups"]


def expressions(dashboard: dict[str, Any], groups: list[dict[str, Any]]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return exprs + [r["expr"] for g in groups for r in g["rules"]]


def metric_names(exprs: list[str]) -> set[str]:
    """The metric names the expressions select (Ferry's all start with ferry_)."""
    found = {m for e in exprs for m in re.findall(r"\b(ferry_[a-z0-9_]+|up)\b", e)}
    return found - NOT_EXPORTED
