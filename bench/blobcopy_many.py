"""Many-blob BlobCopy against an asynchronous SDK copier, and the worker's memory as the blob count grows.

Every measured copy runs against a fresh Azurite holding only its source blobs: Azurite's per-request cost
grows with everything it stores, so copies measured one after another in one Azurite would favour the first.

Throughput: N small blobs (default 20,000 of 4 KiB) between two Azurite accounts. Ferry's Stream and
ServerSide copies, each timed from `kubectl apply` of the BlobCopy to its Succeeded phase on the local
stack (API server, the chart's operator, workers on the kubelet: `ferry-dev up`'s), against
azure.storage.blob.aio with its default settings at the same concurrency (download + upload for Stream,
start_copy_from_url for ServerSide): prints stream_vs_aio_ratio and serverside_vs_aio_ratio (aio time over
Ferry's; goal >= 1.0).

Workers: the same blobs copied (Stream) by one worker at `parallelism` and by `--workers` (default 4) worker
processes sharing the copy as spec.workers pods do, with the same blobs in flight in all (`parallelism`
divided among them), timed from their start to the last one's end: prints workers_ratio (one worker's time
over theirs; on a machine of few cores the point is correct counts and no slowdown, >= 1.0).

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
from azure.storage.blob.aio import ContainerClient as AsyncContainerClient
from kubernetes import client, config

from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.emulators import Azurite, StorageAccount
from ferry_dev.stack import DevStack

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
    """A Stream copy shared by `workers` worker processes (index 0 the coordinator), `n` blobs in flight in
    each; seconds until all ended."""
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


@contextmanager
def fresh(work: Path, label: str, count: int, size: int, prefix: str, targets: list[str], n: int) -> Iterator[Azurite]:
    """An Azurite of its own holding `count` source blobs in container `many` and the empty `targets`."""
    with Azurite(work / label) as azurite:
        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
        BlobServiceClient.from_connection_string(src.connection_string).create_container("many")
        for name in targets:
            BlobServiceClient.from_connection_string(dst.connection_string).create_container(name)
        began = time.perf_counter()
        asyncio.run(fill(src, "many", prefix, count, size, n))
        print(f"  created {count} blobs of {size} B in {time.perf_counter() - began:.1f}s", flush=True)
        yield azurite
    subprocess.run(["rm", "-rf", str(work / label)], check=False)


class Cluster:
    """The local stack's API server and operator; BlobCopies applied with kubectl, their phase read back."""

    NAMESPACE = "bench"

    def __init__(self, stack: DevStack) -> None:
        self.env = stack.env()
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(stack.kubeconfig)))
        stack.create_namespace(self.NAMESPACE)

    def kubectl(self, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [kubectl_binary(), "-n", self.NAMESPACE, *args], env=self.env, input=stdin, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args[:2])} failed: {done.stderr[-500:]}")

    def copy(self, name: str, src: StorageAccount, dst: StorageAccount, spec: dict[str, Any], count: int) -> float:
        """Seconds from `kubectl apply` of the BlobCopy (its Secrets already there) to its Succeeded phase."""
        for secret, account in ((f"{name}-src", src), (f"{name}-dst", dst)):
            self.kubectl("create", "secret", "generic", secret, f"--from-literal=k={account.connection_string}")
        spec["source"]["account"] = {"secretRef": {"name": f"{name}-src", "key": "k"}}
        spec["destination"]["account"] = {"secretRef": {"name": f"{name}-dst", "key": "k"}}
        body = {"apiVersion": "ferry.dev/v1alpha1", "kind": "BlobCopy", "metadata": {"name": name}, "spec": spec}
        started = time.perf_counter()
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
        while True:
            time.sleep(0.25)
            status: dict[str, Any] = (
                self.api.get_namespaced_custom_object("ferry.dev", "v1alpha1", self.NAMESPACE, "blobcopies", name).get(
                    "status"
                )
                or {}
            )
            phase = status.get("phase")
            if phase == "Succeeded":
                elapsed = time.perf_counter() - started
                if (status.get("blobs") or {}).get("succeeded") != count:
                    raise SystemExit(f"{name} succeeded with counts {status.get('blobs')}, not {count} copied")
                return elapsed
            if phase == "Failed":
                raise SystemExit(f"{name} failed: {status.get('failure')}")


async def aio_copy(
    src: StorageAccount,
    dst: StorageAccount,
    source: str,
    prefix: str,
    target: str,
    mode: str,
    n: int,
    tuned: bool = False,
) -> float:
    """The asynchronous SDK copier: list, then `n` copies in flight; seconds. `tuned`: without the per-request
    look at the environment (proxies, netrc) that aiohttp does by default, as Ferry's workers do without a proxy."""
    started = time.perf_counter()
    settings: dict[str, Any] = {"use_env_settings": False} if tuned else {}
    async with (
        AsyncContainerClient.from_connection_string(src.connection_string, source, **settings) as from_box,
        AsyncContainerClient.from_connection_string(dst.connection_string, target, **settings) as to_box,
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
    n, count = args.parallelism, args.blobs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            with DevStack(work / "stack") as stack:
                cluster = Cluster(stack)
                for mode in ("Stream", "ServerSide"):
                    with fresh(work, f"aio-{mode}", count, args.size, "t/", ["copy"], n) as azurite:
                        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
                        ceiling = asyncio.run(aio_copy(src, dst, "many", "t/", "copy", mode, n))
                    with fresh(work, f"tuned-{mode}", count, args.size, "t/", ["copy"], n) as azurite:
                        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
                        tuned = asyncio.run(aio_copy(src, dst, "many", "t/", "copy", mode, n, tuned=True))
                    with fresh(work, f"ferry-{mode}", count, args.size, "t/", ["copy"], n) as azurite:
                        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
                        spec = _spec("many", "t/", "copy", mode, n)
                        ours = cluster.copy(mode.lower(), src, dst, spec, count)
                    print(
                        f"{mode.lower()}_vs_aio_ratio={ceiling / ours:.2f} (aio {count / ceiling:.0f} blobs/s, "
                        f"ferry {count / ours:.0f} blobs/s from kubectl apply to Succeeded, parallelism {n})",
                        flush=True,
                    )
                    print(
                        f"{mode.lower()}_vs_aio_tuned_ratio={tuned / ours:.2f} (aio without the environment look-ups "
                        f"{count / tuned:.0f} blobs/s)",
                        flush=True,
                    )

        if not args.skip_workers:
            times = {}
            for workers in (1, args.workers):
                with fresh(work, f"workers-{workers}", count, args.size, "t/", ["copy"], n) as azurite:
                    src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
                    times[workers] = ferry_workers(src, dst, "many", "t/", "copy", max(1, n // workers), workers)
                    box = BlobServiceClient.from_connection_string(dst.connection_string).get_container_client("copy")
                    copied = sum(1 for _ in box.list_blobs())
                    if copied != count:
                        raise SystemExit(f"the copy by {workers} workers left {count - copied} blobs uncopied")
            alone, shared = times[1], times[args.workers]
            print(
                f"workers_ratio={alone / shared:.2f} (workers 1: {count / alone:.0f} blobs/s, "
                f"workers {args.workers}: {count / shared:.0f} blobs/s; {n} blobs in flight in all)",
                flush=True,
            )

        if not args.skip_memory:
            small = max(1, args.big // 10)
            runs = {}
            for blobs in (small, args.big):
                with fresh(work, f"memory-{blobs}", blobs, 1024, "m/", ["copy"], n) as azurite:
                    src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
                    runs[blobs] = ferry(src, dst, "many", "m/", "copy", "Stream", n)
            few, lots = runs[small], runs[args.big]
            print(
                f"rss_ratio={lots['hwm'] / few['hwm']:.2f} "
                f"(peak RSS {few['hwm'] / MiB:.0f} MiB at {small} blobs, {lots['hwm'] / MiB:.0f} MiB at {args.big})"
            )
            print(f"peak_rss_mib={lots['hwm'] / MiB:.0f} (goal <= 256)")
            print(
                f"first_blob_seconds={lots['first']:.2f} (goal < 5; {few['first']:.2f} at {small} blobs; "
                f"{args.big / lots['seconds']:.0f} blobs/s)"
            )


if __name__ == "__main__":
    main()
