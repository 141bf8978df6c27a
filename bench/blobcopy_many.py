"""Many-blob BlobCopy against an asynchronous SDK copier, and the worker's memory as the blob count grows.

Throughput: N small blobs (default 20,000 of 4 KiB) between two Azurite accounts. Ferry's Stream and
ServerSide copies (run_copy in a worker subprocess) against azure.storage.blob.aio at the same
concurrency (download + upload for Stream, start_copy_from_url for ServerSide), all in this run:
prints stream_vs_aio_ratio and serverside_vs_aio_ratio (aio time over Ferry's; goal >= 1.0).

Workers: the same blobs copied (Stream) by one worker and by `--workers` (default 4) worker processes sharing the
copy as spec.workers pods do, timed from their start to the last one's end: prints workers_ratio (one worker's
time over theirs; on a machine of few cores the point is correct counts and no slowdown, >= 1.0).

Memory: a Stream copy of M blobs (default 100,000 of 1 KiB) and of M/10, each in its own worker
subprocess: prints the peak RSS (VmHWM) of both, their ratio (goal <= 1.25, and <= 256 MiB) and the
time to the first blob copied (goal < 5 s).

    PYTHONPATH=operator:dev:tests .venv/bin/python bench/blobcopy_many.py [--blobs 2000 --big 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
from azure.storage.blob.aio import ContainerClient as AsyncContainerClient

from ferry_dev.emulators import Azurite, StorageAccount

# The worker: one run_copy, timed from its call; prints its peak RSS and time to the first blob copied.
WORKER = """
import json, os, sys, threading, time
from ferry.api.blobcopy import BlobCopySpec
from ferry.kinds.blobcopy.engine import Endpoints, run_copy
spec = BlobCopySpec.model_validate(json.loads(os.environ["SPEC"]))
endpoints = Endpoints(os.environ["SRC"], None, os.environ["DST"])
first = []
started = time.perf_counter()
def report(part, force=False):
    if not first and part.blobs is not None and part.blobs.succeeded:
        first.append(time.perf_counter() - started)
index = int(os.environ.get("FERRY_WORKER_INDEX") or 0)
outcome = run_copy(spec, None, endpoints, report, threading.Event(), os.environ["KEY"], worker_index=index)
elapsed = time.perf_counter() - started
if not outcome.succeeded:
    sys.exit(f"the copy failed: {outcome.failure}")
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
hwm = int(status["VmHWM"].strip().split()[0]) * 1024
print(json.dumps({"seconds": elapsed, "first": first[0] if first else None, "hwm": hwm}))
"""

MiB = 1024 * 1024


def _env(src: StorageAccount, dst: StorageAccount, spec: dict, key: str) -> dict[str, str]:
    return {
        **os.environ,
        "SPEC": json.dumps(spec),
        "SRC": src.connection_string,
        "DST": dst.connection_string,
        "KEY": key,
    }


def _spec(source: str, prefix: str, target: str, mode: str, n: int, workers: int = 1) -> dict:
    ref = {"secretRef": {"name": "s", "key": "k"}}
    return {
        "source": {"account": ref, "container": source, "prefix": prefix},
        "destination": {"account": ref, "container": target},
        "mode": mode,
        "parallelism": n,
        "workers": workers,
    }


def ferry(src: StorageAccount, dst: StorageAccount, source: str, prefix: str, target: str, mode: str, n: int) -> dict:
    env = _env(src, dst, _spec(source, prefix, target, mode, n), f"bench-{target}-{mode}")
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the Ferry worker ended with {out.returncode}: {out.stderr.strip()[-2000:]}")
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ferry_workers(
    src: StorageAccount, dst: StorageAccount, source: str, prefix: str, target: str, n: int, workers: int
) -> float:
    """A Stream copy shared by `workers` worker processes (index 0 the coordinator); seconds until all ended."""
    env = _env(src, dst, _spec(source, prefix, target, "Stream", n, workers), f"bench-{target}")
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env={**env, "FERRY_WORKER_INDEX": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a Ferry worker ended with {process.returncode}: {err.strip()[-2000:]}")
    return time.perf_counter() - started


async def fill(account: StorageAccount, container: str, prefix: str, count: int, size: int, n: int) -> None:
    """Create `count` source blobs with `n` uploads in flight."""
    async with AsyncBlobServiceClient.from_connection_string(account.connection_string) as service:
        box = service.get_container_client(container)
        body = os.urandom(size)
        gate = asyncio.Semaphore(n)

        async def one(i: int) -> None:
            async with gate:
                await box.upload_blob(f"{prefix}{i:07d}", body, overwrite=True)

        await asyncio.gather(*(one(i) for i in range(count)))


async def aio_copy(
    src: StorageAccount, dst: StorageAccount, source: str, prefix: str, target: str, mode: str, n: int
) -> float:
    """The asynchronous SDK copier: list, then `n` copies in flight; seconds."""
    started = time.perf_counter()
    async with (
        AsyncContainerClient.from_connection_string(src.connection_string, source) as from_box,
        AsyncContainerClient.from_connection_string(dst.connection_string, target) as to_box,
    ):
        gate = asyncio.Semaphore(n)
        expiry = datetime.now(UTC) + timedelta(hours=1)

        async def stream(name: str) -> None:
            async with gate:
                data = await (await from_box.download_blob(name)).readall()
                await to_box.upload_blob(name, data, overwrite=True)

        async def server(name: str) -> None:
            async with gate:
                sas = generate_blob_sas(
                    src.name, source, name, account_key=src.key, permission=BlobSasPermissions(read=True), expiry=expiry
                )
                await to_box.get_blob_client(name).start_copy_from_url(f"{from_box.url}/{name}?{sas}")

        one = stream if mode == "Stream" else server
        tasks = [asyncio.create_task(one(props.name)) async for props in from_box.list_blobs(name_starts_with=prefix)]
        await asyncio.gather(*tasks)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blobs", type=int, default=20_000, help="blobs of the throughput comparison")
    parser.add_argument("--size", type=int, default=4096, help="their size in bytes")
    parser.add_argument("--big", type=int, default=100_000, help="blobs of the memory run (and a tenth of them)")
    parser.add_argument("--parallelism", type=int, default=64)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--workers", type=int, default=4, help="workers of the spread copy, against one")
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    n = args.parallelism
    with tempfile.TemporaryDirectory() as work, Azurite(Path(work)) as azurite:
        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
        sources = BlobServiceClient.from_connection_string(src.connection_string)
        targets = BlobServiceClient.from_connection_string(dst.connection_string)
        sources.create_container("many")
        for name in (
            "aio-stream",
            "ferry-stream",
            "aio-server",
            "ferry-server",
            "mem-small",
            "mem-big",
            "one",
            "spread",
        ):
            targets.create_container(name)
        filled = False

        if not args.skip_throughput:
            began = time.perf_counter()
            asyncio.run(fill(src, "many", "t/", args.blobs, args.size, n))
            filled = True
            print(f"created {args.blobs} blobs of {args.size} B in {time.perf_counter() - began:.1f}s", flush=True)
            for mode, ceiling_box, ferry_box in (
                ("Stream", "aio-stream", "ferry-stream"),
                ("ServerSide", "aio-server", "ferry-server"),
            ):
                ceiling = asyncio.run(aio_copy(src, dst, "many", "t/", ceiling_box, mode, n))
                ours = ferry(src, dst, "many", "t/", ferry_box, mode, n)["seconds"]
                print(
                    f"{mode.lower()}_vs_aio_ratio={ceiling / ours:.2f} "
                    f"(aio {args.blobs / ceiling:.0f} blobs/s, ferry {args.blobs / ours:.0f} blobs/s, parallelism {n})",
                    flush=True,
                )

        if not args.skip_workers:
            if not filled:
                asyncio.run(fill(src, "many", "t/", args.blobs, args.size, n))
            alone = ferry_workers(src, dst, "many", "t/", "one", n, 1)
            shared = ferry_workers(src, dst, "many", "t/", "spread", n, args.workers)
            copied = {b.name: b.etag for b in targets.get_container_client("spread").list_blobs()}
            if len(copied) != args.blobs:
                raise SystemExit(f"the spread copy left {args.blobs - len(copied)} blobs uncopied")
            print(
                f"workers_ratio={alone / shared:.2f} (workers 1: {args.blobs / alone:.0f} blobs/s, "
                f"workers {args.workers}: {args.blobs / shared:.0f} blobs/s, parallelism {n} each)",
                flush=True,
            )

        if not args.skip_memory:
            small = max(1, args.big // 10)
            began = time.perf_counter()
            asyncio.run(fill(src, "many", "m/", args.big, 1024, n))
            asyncio.run(fill(src, "many", "s/", small, 1024, n))
            print(f"created {args.big + small} blobs of 1 KiB in {time.perf_counter() - began:.1f}s", flush=True)
            few = ferry(src, dst, "many", "s/", "mem-small", "Stream", n)
            lots = ferry(src, dst, "many", "m/", "mem-big", "Stream", n)
            print(
                f"rss_ratio={lots['hwm'] / few['hwm']:.2f} "
                f"(peak RSS {few['hwm'] / MiB:.0f} MiB at {small} blobs, {lots['hwm'] / MiB:.0f} MiB at {args.big})"
            )
            print(f"peak_rss_mib={lots['hwm'] / MiB:.0f} (goal <= 256)")
            print(f"first_blob_seconds={lots['first']:.2f} (goal < 5; {args.big / lots['seconds']:.0f} blobs/s)")


if __name__ == "__main__":
    main()
