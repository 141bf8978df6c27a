"""How far an online container copy lags behind a source taking writes, and how fast it drains.

A writer creates, replaces and deletes source items at --per-minute writes a minute (default 1,000)
for --seconds while one copy instance runs an online copy; the instance's reports give its lag
(pendingChanges, secondsBehind) every second. After the writer stops, the time until nothing is
pending is the drain. Then the cutover, and the destination is compared with the source.

Everything goes through the change feed stand-in (dev/ferry_dev/changefeed.py) in its own process.
Goals: secondsBehind under 10 s while the writer runs (once the backlog of the initial copy is
applied); drained within 10 s after it stops.

    python bench/copyjob_online_lag.py [--items 400 --per-minute 1000 --seconds 60 --ranges 4]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import urllib3
from azure.cosmos import PartitionKey

from ferry.api.containercopyjob import ContainerCopyProgress
from ferry.kinds.containercopyjob.engine import CopyTask, InstanceOutcome, JobSpec, run_instance
from ferry.storage.cosmos import CosmosAccess, strip_system
from ferry_dev.emulators import CosmosServer

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def contents(container: Any) -> dict[str, dict[str, Any]]:
    items = container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return {str(i["id"]): strip_system(i) for i in items}


def write(source: Any, items: dict[str, dict[str, Any]], per_minute: int, seconds: float, stop: threading.Event) -> int:
    """Creates (40%), replaces (40%) and deletes (20%) at a steady pace; returns how many were made."""
    rng = random.Random(1)
    interval = 60.0 / per_minute
    made, started, serial = 0, time.monotonic(), 0
    while time.monotonic() - started < seconds and not stop.is_set():
        roll = rng.random()
        if roll < 0.4 or not items:
            serial += 1
            item = {"id": f"new-{serial}", "tenant": f"t{serial % 11}", "city": "c0", "n": 0}
            source.create_item(item)
            items[item["id"]] = item
        elif roll < 0.8:
            item = items[rng.choice(sorted(items))]
            item["n"] += 1
            item["city"] = f"c{rng.randrange(7)}"
            source.replace_item(item["id"], item)
        else:
            source.delete_item(*(lambda i: (i["id"], i["tenant"]))(items.pop(rng.choice(sorted(items)))))
        made += 1
        time.sleep(max(0.0, started + made * interval - time.monotonic()))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--per-minute", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ranges", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, CosmosServer(Path(tmp)) as server:
        argv = ["--upstream", server.endpoint.endpoint, "--key", server.endpoint.key, "--ranges", str(args.ranges)]
        standin = subprocess.Popen(
            [sys.executable, "-m", "ferry_dev.changefeed", *argv, "--all-versions"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert standin.stdout is not None
            endpoint = standin.stdout.readline().strip()
            run(args, CosmosAccess(endpoint, server.endpoint.key, verify_tls=False))
        finally:
            standin.kill()
            standin.wait()


def run(args: argparse.Namespace, access: CosmosAccess) -> None:
    database = access.client().create_database("bench")
    source = database.create_container("src", PartitionKey("/tenant"))
    destination = database.create_container("dst", PartitionKey("/city"))
    items = {
        f"item-{i:05d}": {"id": f"item-{i:05d}", "tenant": f"t{i % 11}", "city": f"c{i % 7}", "n": i}
        for i in range(args.items)
    }
    for item in items.values():
        source.create_item(item)
    task = CopyTask("bench", "src", "bench", "dst")
    job = JobSpec(str(uuid.uuid4()), "bench/online", [task], None, 1, None, mode="Online")
    latest: list[ContainerCopyProgress] = []
    cut = threading.Event()
    outcome: list[InstanceOutcome] = []

    def report(part: ContainerCopyProgress, force: bool = False) -> None:
        latest.append(part)

    instance = threading.Thread(
        target=lambda: outcome.append(run_instance(access, job, "lag-1", report, lambda: False, cutover=cut.is_set))
    )
    stop = threading.Event()
    made: list[int] = []
    writer = threading.Thread(target=lambda: made.append(write(source, items, args.per_minute, args.seconds, stop)))
    started = time.monotonic()
    writer.start()
    instance.start()
    behind: list[tuple[float, int, int]] = []  # (time, pending, seconds behind) once streaming
    while writer.is_alive():
        time.sleep(1)
        last = latest[-1] if latest else None
        if last is not None and last.pending_changes is not None:
            behind.append((time.monotonic() - started, last.pending_changes, last.seconds_behind or 0))
    writer.join()
    stopped = time.monotonic()
    while not (latest and latest[-1].pending_changes == 0) and time.monotonic() - stopped < 120:
        time.sleep(0.1)
    drained = time.monotonic() - stopped
    cut.set()
    instance.join(timeout=120)
    equal = contents(destination) == contents(source)
    writes = made[0] if made else 0
    rate = writes / args.seconds * 60
    print(f"items={args.items} ranges={args.ranges} writes={writes} in {args.seconds:.0f}s ({rate:.0f}/min)")
    if behind:
        print(f"streaming from t={behind[0][0]:.0f}s; samples={len(behind)}")
        print(f"secondsBehind while writing: max {max(b for _, _, b in behind)} s, including the backlog of the copy")
        caught = next((n for n, (_, p, _) in enumerate(behind) if p == 0), None)
        steady = behind[caught:] if caught is not None else []
        if steady:
            print(f"once first caught up (t={steady[0][0]:.0f}s): max secondsBehind {max(b for _, _, b in steady)} s, ")
            print(f"  max pendingChanges {max(p for _, p, _ in steady)} (goal: secondsBehind < 10)")
    else:
        print("never streaming while the writer ran: the initial copy outlasted it")
    print(f"drained to 0 pending in {drained:.1f} s after the writer stopped (goal < 10)")
    print(f"cutover: {outcome[0] if outcome else 'not finished'}; destination equals source: {equal}")


if __name__ == "__main__":
    main()
