"""Container copy throughput as a ratio to the raw write ceiling of the same local cosmosdb-server.

Both figures are measured in the same run, with the same items and the same total concurrency:
the ceiling with plain SDK upserts from a thread pool, the copy with run_instance() (N instances as
threads, each with concurrency/N write threads). Also prints the copy's process CPU time per item.

The copy reads the source's change feed, so every request (the ceiling's too) goes through the
change feed stand-in (dev/ferry_dev/changefeed.py), run in its own process with --ranges partition
key ranges: the ceiling and the copy pay the same proxy.

    python bench/copyjob_throughput.py [--items 800 --concurrency 8 --instances 1 --ranges 1] [--cross-account]
    python bench/copyjob_throughput.py --mongo [--items 5000 --instances 1]

--cross-account puts the source in a second cosmosdb-server (another account, with its own stand-in): the
job reads it there and writes to the first, whose raw write ceiling is the reference as before.

--mongo copies a collection of a MongoDB API account (FerretDB on SQLite, built from hack/ferretdb) with the
MongoDB engine; the ceiling is plain unordered insert_many of the same documents in pages of the engine's size,
from as many threads as the instances have pages in flight.

A job pays a fixed start (about fifteen requests: the state database, the job, its work units, the count),
which weighs about 5% at 400 items on this server and half that at 800.

With one feed range one instance does the work while the others stay idle: with several instances
the copy uses only concurrency/N threads, and the ratio shows it; --ranges N gives N work units.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
from azure.cosmos import PartitionKey

from ferry.kinds.containercopyjob.engine import CopyTask, InstanceOutcome, JobSpec, run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry_dev.emulators import CosmosServer

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"item-{i:05d}", "tenant": f"t{i % 11}", "city": f"c{i % 7}", "n": i, "body": "x" * 200}
        for i in range(count)
    ]


def upsert_all(container: Any, docs: list[dict[str, Any]], threads: int) -> tuple[float, float]:
    """Items/s and process CPU seconds per item of plain SDK upserts."""
    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(container.upsert_item, docs))
    return len(docs) / (time.perf_counter() - started), (time.process_time() - cpu) / len(docs)


def copy(
    access: CosmosAccess, db: str, instances: int, concurrency: int, source: CosmosAccess | None = None
) -> tuple[float, float, list[str]]:
    job = JobSpec(str(uuid.uuid4()), "bench/copy", [CopyTask(db, "src", db, "dst")], None, instances, None)
    if source is not None:
        job.source_account = "bench-source"
    outcomes: list[InstanceOutcome] = []
    lock = threading.Lock()
    per_instance = max(1, concurrency // instances)

    def instance(n: int) -> None:
        while True:
            outcome = run_instance(
                access,
                job,
                f"bench-{n}",
                lambda part, force=False: None,
                lambda: False,
                concurrency=per_instance,
                source=source,
            )
            if outcome.kind != "idle":
                break
            time.sleep(0.2)
        with lock:
            outcomes.append(outcome)

    cpu, started = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=instance, args=(n,)) for n in range(instances)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, time.process_time() - cpu, [o.kind for o in outcomes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--ranges", type=int, default=1)
    parser.add_argument("--cross-account", action="store_true", help="read the source from a second server")
    parser.add_argument("--mongo", action="store_true", help="a MongoDB API account (FerretDB) instead")
    args = parser.parse_args()
    docs = items(args.items)
    if args.mongo:
        run_mongo(args, docs)
        return
    with contextlib.ExitStack() as stack:
        access = stack.enter_context(_account(args.ranges))
        other = stack.enter_context(_account(args.ranges)) if args.cross_account else None
        run(args, docs, access, other)


@contextlib.contextmanager
def _account(ranges: int) -> Iterator[CosmosAccess]:
    """A cosmosdb-server behind the change feed stand-in, in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp, CosmosServer(Path(tmp)) as server:
        argv = ["--upstream", server.endpoint.endpoint, "--key", server.endpoint.key, "--ranges", str(ranges)]
        standin = subprocess.Popen(
            [sys.executable, "-m", "ferry_dev.changefeed", *argv],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert standin.stdout is not None
            endpoint = standin.stdout.readline().strip()
            yield CosmosAccess(endpoint, server.endpoint.key, verify_tls=False)
        finally:
            standin.kill()
            standin.wait()


def run(args: argparse.Namespace, docs: list[dict[str, Any]], access: CosmosAccess, other: CosmosAccess | None) -> None:
    database = access.client().create_database("bench")
    source_db = other.client().create_database("bench") if other is not None else database
    source = source_db.create_container("src", PartitionKey("/tenant"))
    ceiling_target = database.create_container("ceiling", PartitionKey("/city"))
    database.create_container("dst", PartitionKey("/city"))
    upsert_all(source, docs, args.concurrency)  # the source; also warms the server up
    # The ceiling is measured before and after the copy: the mean evens out a drifting machine.
    before, ceiling_cpu = upsert_all(ceiling_target, docs, args.concurrency)
    elapsed, cpu, kinds = copy(access, "bench", args.instances, args.concurrency, other)
    after, _ = upsert_all(ceiling_target, docs, args.concurrency)
    ceiling = (before + after) / 2
    copied = sum(
        1
        for _ in database.get_container_client("dst").query_items(
            "SELECT c.id FROM c", enable_cross_partition_query=True
        )
    )
    assert copied == args.items, f"copied {copied} of {args.items}"
    rate = args.items / elapsed
    print(
        f"items={args.items} concurrency={args.concurrency} instances={args.instances} "
        f"ranges={args.ranges} cross-account={args.cross_account} outcomes={kinds}"
    )
    print(f"raw upsert ceiling: {ceiling:.1f} items/s (before {before:.1f}, after {after:.1f})")
    print(f"copy job:           {rate:.1f} items/s in {elapsed:.2f}s")
    print(f"ratio copy/ceiling: {rate / ceiling:.2f} (goal >= 0.9)")
    print(f"copy CPU per item:  {cpu / args.items * 1000:.2f} ms (process CPU time / items)")
    print(f"raw upsert CPU per item: {ceiling_cpu * 1000:.2f} ms")


def run_mongo(args: argparse.Namespace, docs: list[dict[str, Any]]) -> None:
    from ferry.kinds.containercopyjob.mongo_engine import MONGO_PAGE_SIZE, PAGES_IN_FLIGHT, run_mongo_instance
    from ferry.storage.mongo import MongoAccess
    from ferry_dev.emulators import FERRETDB_USER, FerretDB

    documents = [{"_id": d["id"], **{k: v for k, v in d.items() if k != "id"}} for d in docs]
    pages = [documents[i : i + MONGO_PAGE_SIZE] for i in range(0, len(documents), MONGO_PAGE_SIZE)]

    def insert_all(name: str) -> float:
        target = access.collection("bench", name)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.instances * PAGES_IN_FLIGHT) as pool:
            list(pool.map(lambda page: target.insert_many([dict(d) for d in page], ordered=False), pages))
        return len(documents) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp, FerretDB(Path(tmp)) as server:
        access = MongoAccess(server.endpoint.endpoint, server.endpoint.key, FERRETDB_USER)
        insert_all("src")  # the source; also warms the server up
        before = insert_all("ceiling-1")
        access.collection("bench", "dst").create_index("tenant")
        job = JobSpec(
            str(uuid.uuid4()), "bench/mongo", [CopyTask("bench", "src", "bench", "dst")], None, args.instances, None
        )
        kinds: list[str] = []

        def instance(n: int) -> None:
            while True:
                outcome = run_mongo_instance(access, job, f"bench-{n}", lambda part, force=False: None, lambda: False)
                if outcome.kind != "idle":
                    kinds.append(outcome.kind)
                    return
                time.sleep(0.2)

        started = time.perf_counter()
        threads = [threading.Thread(target=instance, args=(n,)) for n in range(args.instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        after = insert_all("ceiling-2")
        copied = access.collection("bench", "dst").count_documents({})
        assert copied == args.items, f"copied {copied} of {args.items}"
        ceiling, rate = (before + after) / 2, args.items / elapsed
        print(f"mongo items={args.items} instances={args.instances} outcomes={kinds}")
        print(f"raw insert_many ceiling: {ceiling:.1f} items/s (before {before:.1f}, after {after:.1f})")
        print(f"copy job:                {rate:.1f} items/s in {elapsed:.2f}s")
        print(f"ratio copy/ceiling:      {rate / ceiling:.2f} (goal >= 0.9)")
        access.close()


if __name__ == "__main__":
    main()
