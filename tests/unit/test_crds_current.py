"""crds/ is generated from the API models; it, and the chart's copy, must be current."""

from __future__ import annotations

from pathlib import Path

from ferry.api.crdgen import render_crds

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "ferry" / "crds"

REGENERATE = "regenerate with `ferry-dev crds --out crds && cp crds/*.yaml charts/ferry/crds/`"


def test_crds_match_the_models() -> None:
    expected = render_crds()
    on_disk = {p.name for p in CRDS.glob("*.yaml")}
    assert on_disk == set(expected), f"crds/ holds {sorted(on_disk)}, the models give {sorted(expected)}; {REGENERATE}"
    stale = [name for name, text in expected.items() if (CRDS / name).read_text() != text]
    assert not stale, f"stale CRDs in crds/: {stale}; {REGENERATE}"


def test_chart_crds_are_copies_of_crds() -> None:
    chart_files = sorted(p.name for p in CHART_CRDS.iterdir())
    assert chart_files == sorted(p.name for p in CRDS.glob("*.yaml")), REGENERATE
    differ = [name for name in chart_files if (CHART_CRDS / name).read_bytes() != (CRDS / name).read_bytes()]
    assert not differ, f"charts/ferry/crds differs from crds/: {differ}; {REGENERATE}"
