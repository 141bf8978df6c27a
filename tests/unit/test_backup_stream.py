"""The backup's streams: sorted runs spilled to disk, and the streamed merge of bases and segments, in
memory that does not grow with the item count."""

from __future__ import annotations

import multiprocessing
import random
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.backup.format import BackupIndex, BaseRef, SegmentRef, deletion, record_key
from ferry.backup.stream import SortedRuns
from ferry.backup.timeline import materialize

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _version(c: str, r: str, ts: int, n: int) -> dict[str, Any]:
    return {"t": "v", "c": c, "r": r, "e": f"e{n}", "ts": ts, "d": {"id": r, "n": n}}


def test_sorted_runs_spill_and_merge_in_order() -> None:
    rng = random.Random(7)
    records = [_version("c", f"r{rng.randrange(300):04d}", rng.randrange(50), n) for n in range(1000)]
    with SortedRuns(record_key, run=64) as runs:
        runs.extend(records)
        assert len(runs._files) == 1000 // 64  # spilled: at most one run in memory
        assert list(runs) == sorted(records, key=record_key)  # stable: equal keys keep their order
        assert list(runs) == sorted(records, key=record_key)  # and readable again


def _old_materialize(blobs: dict[str, list[dict[str, Any]]], index: BackupIndex, t: datetime) -> dict[str, Any]:
    """Version 1's reading, with dicts of every item: what the streamed merge must agree with."""
    cutoff = t.timestamp()
    base = next((b for b in reversed(index.bases) if b.time <= t), None)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    if base is not None:
        latest = {(r["c"], r["r"]): r for r in blobs[base.blob] if r["t"] == "v"}
    for segment in index.segments:
        if base is not None and segment.seq <= base.seq:
            continue
        for r in blobs[segment.blob]:
            if r["ts"] > cutoff:
                continue
            key = (r["c"], r["r"])
            if r["t"] == "v" and (key not in latest or latest[key]["ts"] <= r["ts"]):
                latest[key] = r
            elif r["t"] == "x":
                latest.pop(key, None)
    return {r["r"]: r["d"] for r in latest.values()}


def test_the_streamed_merge_reads_version_1_and_2_blobs_alike() -> None:
    rng = random.Random(3)
    start = int(T0.timestamp())
    index = BackupIndex(endpoint="x", retention_seconds=1e6, capture_interval_seconds=10)
    blobs: dict[str, list[dict[str, Any]]] = {}
    items = [f"r{i:03d}" for i in range(80)]
    base = [_version("c", r, start, 0) for r in items]
    blobs["bases/1-a.jsonl.gz"] = [{"t": "base"}, *rng.sample(base, len(base))]  # version 1: no order
    index.bases.append(BaseRef(seq=1, time=T0, blob="bases/1-a.jsonl.gz"))
    n = 1
    for seq in range(2, 8):
        records: list[dict[str, Any]] = []
        for step in range(10):  # times rise; a deleted _rid never comes back (a re-creation gets a new one)
            n += 1
            ts = start + seq * 10 + step
            r = rng.choice(items)
            if rng.random() < 0.7:
                records.append(_version("c", r, ts, n))
            else:
                records.append(deletion("c", r, ts))
                items.remove(r)
                items.append(f"r{n:03d}-new")
        rng.shuffle(records)  # version 1 segments hold no order
        records.append(_version("other", "r000", start + seq * 10, n))  # another container: never read
        v2 = seq % 2 == 0
        name = f"segments/{seq}-a" + (".sorted.jsonl.gz" if v2 else ".jsonl.gz")
        blobs[name] = sorted(records, key=record_key) if v2 else records
        index.segments.append(
            SegmentRef(seq=seq, start=T0 + timedelta(seconds=seq * 10 - 10), end=T0, blob=name, records=11)
        )
    for offset in (0, 25, 47, 75):
        t = T0 + timedelta(seconds=offset)
        streamed = list(materialize(index, lambda b: iter(blobs[b]), ["c"], t))
        assert [r["r"] for r in streamed] == sorted(r["r"] for r in streamed)  # in item order
        assert {r["r"]: r["d"] for r in streamed} == _old_materialize(
            {k: [r for r in v if r.get("c") in ("c", None)] for k, v in blobs.items()}, index, t
        )


def _peak(items: int) -> tuple[int, int]:
    """Peak memory of materializing a base of `items` items and a segment changing a tenth of them, read as
    streams generated on the fly (as blobs read from disk are)."""
    start = int(T0.timestamp())
    index = BackupIndex(endpoint="x", retention_seconds=1e6, capture_interval_seconds=10)
    index.bases.append(BaseRef(seq=1, time=T0, blob="bases/1-a.sorted.jsonl.gz"))
    index.segments.append(
        SegmentRef(seq=2, start=T0, end=T0 + timedelta(seconds=10), blob="segments/2-a.sorted.jsonl.gz", records=1)
    )

    def records(blob: str) -> Iterator[dict[str, Any]]:
        if blob.startswith("bases"):
            yield {"t": "base"}
            yield from (_version("c", f"r{i:08d}", start, 0) for i in range(items))
        else:
            yield from (_version("c", f"r{i:08d}", start + 5, 1) for i in range(0, items, 10))

    tracemalloc.start()
    count = sum(1 for _ in materialize(index, records, ["c"], T0 + timedelta(seconds=20)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return count, peak


def test_materializing_holds_no_more_at_ten_times_the_items() -> None:
    # tracemalloc counts every thread's allocations: measured in a forked child, which has no other thread
    # (the test runner's own, busier on a loaded machine, once made a peak ten times as high).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        (small_count, small), (large_count, large) = child.map(_peak, (5_000, 50_000))
    assert (small_count, large_count) == (5_000, 50_000)
    assert large <= 1.25 * small, (small, large)
