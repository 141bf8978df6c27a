"""Restore throughput as a ratio to the raw write ceiling of the same local cosmosdb-server, and the capture's
cost per interval.

1. Restore: a container of --items items is captured, deleted and the deletion captured; then one restore
   instance (run_restore_instance, --concurrency write threads) brings it back. The ceiling is plain SDK
   upserts of the same items from a thread pool of the same size into another container, measured before
   and after the restore (the mean evens out a drifting machine). Same server, same run.
2. Capture cost: a container of --capture-items items of which --changing (1%) change between two
   captures; each capture's requests to the account, seconds and bytes written to the backup location,
   averaged over --captures captures after the first (which writes the base).

    python bench/restore_throughput.py [--items 2000 --concurrency 8 --capture-items 5000 --changing 50]

A restore pays a fixed start (the backup's index and base, the plan, creating the container, the job and its
units in __datatransferstate), which weighs more the fewer items there are.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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
from ferry_dev.emulators import Azurite, CosmosServer

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


def restore(access: CosmosAccess, store: BackupStore, concurrency: int) -> tuple[float, InstanceOutcome]:
    job = RestoreJob(str(uuid.uuid4()), "bench/restore", RestoreRequest("bench", "src"), 1, None)
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


def capture_cost(access: CosmosAccess, store: BackupStore, n: int, changing: int, captures: int) -> None:
    database = access.client().create_database("captured")
    container = database.create_container("c", PartitionKey("/tenant"))
    upsert_all(container, items(n), 8)
    capturer = Capturer(access, store, SETTINGS)
    next_second()
    first = capturer.run_once()
    print(f"capture of {n} items, {changing} changing per interval ({changing / n:.1%}):")
    print(f"  first capture (with the base): {first.requests} requests, {first.seconds:.2f}s, "
          f"{first.bytes_written} bytes written")  # fmt: skip
    results = []
    for round_ in range(captures):
        changed = items(n, version=round_ + 2)[round_ * changing : (round_ + 1) * changing]
        upsert_all(container, changed, 8)
        next_second()
        results.append(capturer.run_once())
    assert all(r.records == changing for r in results), [r.records for r in results]
    mean = len(results)
    print(f"  per interval (mean of {mean}): {sum(r.requests for r in results) / mean:.1f} requests, "
          f"{sum(r.seconds for r in results) / mean:.2f}s, "
          f"{sum(r.bytes_written for r in results) / mean:.0f} bytes written")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--capture-items", type=int, default=5000)
    parser.add_argument("--changing", type=int, default=50)
    parser.add_argument("--captures", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Azurite(Path(tmp) / "azurite", accounts=("backup",)) as azurite:
        connection = azurite.accounts["backup"].connection_string
        for label, run in (
            ("restore", lambda access, store: restore_ratio(access, store, args.items, args.concurrency)),
            ("capture", lambda access, store: capture_cost(
                access, store, args.capture_items, args.changing, args.captures)),
        ):  # fmt: skip
            with CosmosServer(Path(tmp) / label) as server:
                access = CosmosAccess(server.endpoint.endpoint, server.endpoint.key, verify_tls=False)
                store = BackupStore(blobs.container_client(connection, f"bench-{label}"), "bench/acct")
                run(access, store)


if __name__ == "__main__":
    main()
