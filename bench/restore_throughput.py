"""Restore throughput as a ratio to the raw write ceiling of the same local cosmosdb-server; the capture's cost
per interval against the container's size; capture and restore memory against the item count.

1. Restore: a container of --items items is captured, deleted and the deletion captured; then one restore
   instance (run_restore_instance, --concurrency write threads) brings it back. The ceiling is plain SDK
   upserts of the same items from a thread pool of the same size into another container, measured before
   and after the restore (the mean evens out a drifting machine). Same server, same run.
2. Capture cost and memory, for a container of --small items and one of --large items (each in an account
   of its own, cosmosdb-server behind the change feed stand-in, four feed ranges, with the
   all-versions-and-deletes feed), --changing items upserted between two captures: each capture's requests
   to the account, seconds and bytes written to the backup location, averaged over --captures captures;
   the large container's figures as a ratio to the small one's (goal: within 2x). Then the same account
   without the deletes feed (deletions swept): the same intervals, and one interval with a sweep.
   The first capture (everything, and the base) and a restore of the whole container each run in a process
   of their own, whose peak RSS is reported; ratio large/small (goal: <= 1.25 at 10x the items).

    python bench/restore_throughput.py [--items 2000 --small 1000 --large 10000 --changing 100]

cosmosdb-server takes ~70 upserts/s, so --large 10000 fills in about 2.5 minutes (100,000 would take 25).
A restore pays a fixed start (the backup's index and base, the plan, creating the container, the job and its
units in __datatransferstate), which weighs more the fewer items there are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import urllib3
from azure.cosmos import PartitionKey

from ferry.backup.restoreplan import RestoreRequest
from ferry.backup.store import BackupStore
from ferry.kinds.databaseaccount.capture import Capturer, CaptureSettings
from ferry.kinds.inaccountrestore.engine import RestoreJob, run_restore_instance
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.job_document import InstanceOutcome
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.emulators import COSMOS_EMULATOR_KEY, Azurite, CosmosServer

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
SETTINGS = CaptureSettings(retention=timedelta(days=7), interval=timedelta(seconds=30))


def items(count: int, version: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": f"item-{i:05d}", "tenant": f"t{i % 11}", "n": i, "version": version, "body": "x" * 200}
        for i in range(count)
    ]


def upsert_all(container: Any, docs: list[dict[str, Any]], threads: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(container.upsert_item, docs))
    return len(docs) / (time.perf_counter() - started)


def next_second() -> None:
    """Item _ts and capture times are whole seconds: keep changes and captures in different seconds."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.05)


def restore(
    access: CosmosAccess, store: BackupStore, concurrency: int, database: str = "bench", container: str = "src"
) -> tuple[float, InstanceOutcome]:
    job = RestoreJob(str(uuid.uuid4()), "bench/restore", RestoreRequest(database, container), 1, None)
    started = time.perf_counter()
    while True:
        outcome = run_restore_instance(access, store, job, "bench-0", lambda part, force=False: None,
                                       lambda: False, concurrency=concurrency)  # fmt: skip
        if outcome.kind != "idle":
            return time.perf_counter() - started, outcome
        time.sleep(0.2)


def count(container: Any) -> int:
    return sum(1 for _ in container.query_items("SELECT c.id FROM c", enable_cross_partition_query=True))


def restore_ratio(access: CosmosAccess, store: BackupStore, n: int, concurrency: int) -> None:
    docs = items(n)
    database = access.client().create_database("bench")
    source = database.create_container("src", PartitionKey("/tenant"))
    ceiling_target = database.create_container("ceiling", PartitionKey("/tenant"))
    upsert_all(source, docs, concurrency)
    capturer = Capturer(access, store, SETTINGS)
    next_second()
    capturer.run_once()
    database.delete_container("src")
    time.sleep(1)
    next_second()
    capturer.run_once()  # sees the deletion, dated a second before this capture
    before = upsert_all(ceiling_target, docs, concurrency)
    elapsed, outcome = restore(access, store, concurrency)
    assert outcome.kind == "completed", outcome
    after = upsert_all(ceiling_target, docs, concurrency)
    fresh = CosmosAccess(access.endpoint, access.key, verify_tls=False).client()  # no cached rid of the old one
    restored = count(fresh.get_database_client("bench").get_container_client("src"))
    assert restored == n, f"restored {restored} of {n}"
    ceiling, rate = (before + after) / 2, n / elapsed
    print(f"restore: items={n} concurrency={concurrency} instances=1")
    print(f"  raw upsert ceiling: {ceiling:.1f} items/s (before {before:.1f}, after {after:.1f})")
    print(f"  restore:            {rate:.1f} items/s in {elapsed:.2f}s")
    print(f"  ratio restore/ceiling: {rate / ceiling:.2f} (goal >= 0.9)")


def memory_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak RSS) of this process in KB. Not getrusage's ru_maxrss: on Linux it carries
    the parent's peak across fork and exec, so a child would report the benchmark's own size."""
    with open("/proc/self/status") as status:
        for row in status:
            if row.startswith(field + ":"):
                return int(row.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, endpoint: str, connection: str, prefix: str, concurrency: int) -> None:
    """A first capture or a whole restore in this process; prints its figures and peak RSS as JSON."""
    baseline = memory_kb("VmRSS")
    access = CosmosAccess(endpoint, COSMOS_EMULATOR_KEY, verify_tls=False)
    store = BackupStore(blobs.container_client(connection, "bench-capture"), prefix)
    figures: dict[str, Any] = {}
    if kind == "capture":
        result = Capturer(access, store, SETTINGS).run_once()
        figures = {"requests": result.requests, "seconds": result.seconds, "bytes": result.bytes_written,
                   "records": result.records}  # fmt: skip
    else:
        elapsed, outcome = restore(access, store, concurrency, "captured", "c")
        assert outcome.kind == "completed", outcome
        figures = {"seconds": elapsed}
    figures.update(baseline_kb=baseline, peak_kb=memory_kb("VmHWM"))
    print(json.dumps(figures), flush=True)


def in_child(kind: str, endpoint: str, connection: str, prefix: str, concurrency: int = 8) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--endpoint", endpoint, "--connection", connection,
               "--prefix", prefix, "--concurrency", str(concurrency)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def intervals(capturer: Capturer, container: Any, n: int, changing: int, captures: int, start: int) -> list[Any]:
    results = []
    for round_ in range(start, start + captures):
        first = (round_ * changing) % n
        changed = items(n, version=round_ + 2)[first : first + changing]
        upsert_all(container, changed, 8)
        next_second()
        results.append(capturer.run_once())
    assert all(r.records == changing for r in results), [r.records for r in results]
    return results


def mean(results: list[Any], field: str) -> float:
    return sum(float(getattr(r, field)) for r in results) / len(results)


def capture_cost(tmp: Path, connection: str, n: int, changing: int, captures: int, label: str) -> dict[str, Any]:
    with CosmosServer(tmp / f"capture-{label}") as server:
        feed = ChangeFeedProxy(server.endpoint.endpoint, server.endpoint.key, ranges=4, all_versions=True).start()
        try:
            access = CosmosAccess(feed.endpoint, server.endpoint.key, verify_tls=False)
            container = access.client().create_database("captured").create_container("c", PartitionKey("/tenant"))
            filled = time.perf_counter()
            upsert_all(container, items(n), 16)
            filled = time.perf_counter() - filled
            next_second()
            first = in_child("capture", feed.endpoint, connection, f"bench/{label}")
            capturer = Capturer(access, BackupStore(blobs.container_client(connection, "bench-capture"),
                                                    f"bench/{label}"), SETTINGS)  # fmt: skip
            feed_path = intervals(capturer, container, n, changing, captures, 0)
            # The same account without the deletes feed: deletions swept, into a backup of its own.
            feed.all_versions = False
            swept = Capturer(access, BackupStore(blobs.container_client(connection, "bench-capture"),
                                                 f"bench/{label}-swept"), SETTINGS)  # fmt: skip
            swept.run_once()
            sweep_path = intervals(swept, container, n, changing, captures, captures)
            sweeping = Capturer(access, swept.store, replace(SETTINGS, deletion_sweep=timedelta(0)))
            sweep = intervals(sweeping, container, n, changing, 1, 2 * captures)[0]
            feed.all_versions = True
            # Restore memory: the container deleted, the deletion captured, then restored in a process of its own.
            access.client().get_database_client("captured").delete_container("c")
            next_second()
            capturer.run_once()
            restored = in_child("restore", feed.endpoint, connection, f"bench/{label}")
        finally:
            feed.stop()
    print(f"capture of {n} items ({filled:.0f}s to fill), {changing} changing per interval:")
    print(f"  first capture (in a process of its own): {first['requests']} requests, {first['seconds']:.2f}s, "
          f"{first['bytes']} bytes written, peak RSS {first['peak_kb'] / 1024:.0f} MB "
          f"(after imports {first['baseline_kb'] / 1024:.0f} MB)")  # fmt: skip
    for name, results in (("deletes feed", feed_path), ("deletion sweep", sweep_path)):
        print(f"  per interval, {name} (mean of {len(results)}): {mean(results, 'requests'):.1f} requests, "
              f"{mean(results, 'seconds'):.2f}s, {mean(results, 'bytes_written'):.0f} bytes written")  # fmt: skip
    print(f"  an interval with a deletion sweep: {sweep.requests} requests, {sweep.seconds:.2f}s, "
          f"{sweep.bytes_written} bytes written")  # fmt: skip
    print(
        f"  restore of {n} items (in a process of its own): {restored['seconds']:.1f}s, "
        f"peak RSS {restored['peak_kb'] / 1024:.0f} MB (after imports {restored['baseline_kb'] / 1024:.0f} MB)"
    )
    return {"first": first, "feed": feed_path, "sweep": sweep_path, "restore": restored}


def compare(small: dict[str, Any], large: dict[str, Any], n_small: int, n_large: int) -> None:
    print(f"large ({n_large}) / small ({n_small}):")
    for name in ("feed", "sweep"):
        requests = mean(large[name], "requests") / mean(small[name], "requests")
        written = mean(large[name], "bytes_written") / mean(small[name], "bytes_written")
        print(f"  per interval, {name}: requests {requests:.2f}x, bytes written {written:.2f}x (goal <= 2)")
    for step in ("first", "restore"):
        peak = large[step]["peak_kb"] / small[step]["peak_kb"]
        growth = (large[step]["peak_kb"] - large[step]["baseline_kb"]) / max(
            1, small[step]["peak_kb"] - small[step]["baseline_kb"])  # fmt: skip
        print(f"  {step} capture" if step == "first" else f"  {step}", end="")
        print(f" peak RSS: {peak:.2f}x (goal <= 1.25); above the imports: {growth:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--changing", type=int, default=100)
    parser.add_argument("--captures", type=int, default=3)
    parser.add_argument("--skip-restore-ratio", action="store_true")
    parser.add_argument("--child", choices=("capture", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--connection", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args.connection, args.prefix, args.concurrency)
        return
    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp) / "azurite", accounts=("backup",)) as azurite:
        connection = azurite.accounts["backup"].connection_string
        if not args.skip_restore_ratio:
            with CosmosServer(Path(tmp) / "restore") as server:
                # Through the change feed stand-in, as captures need (cosmosdb-server's own feed is a stub).
                feed = ChangeFeedProxy(server.endpoint.endpoint, server.endpoint.key, ranges=4, all_versions=True)
                feed.start()
                try:
                    access = CosmosAccess(feed.endpoint, server.endpoint.key, verify_tls=False)
                    store = BackupStore(blobs.container_client(connection, "bench-restore"), "bench/acct")
                    restore_ratio(access, store, args.items, args.concurrency)
                finally:
                    feed.stop()
        small = capture_cost(Path(tmp), connection, args.small, args.changing, args.captures, "small")
        large = capture_cost(Path(tmp), connection, args.large, args.changing, args.captures, "large")
        compare(small, large, args.small, args.large)


if __name__ == "__main__":
    main()
