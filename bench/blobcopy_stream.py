"""Stream-mode BlobCopy throughput against the SDK's own download-then-upload, on Azurite.

Prints stream_vs_sdk_ratio (Ferry's MiB/s over the SDK ceiling's, same blob, same concurrency)
and, for a ServerSide copy, the bytes that passed through this process (should be ~0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from ferry.api.blobcopy import BlobCopySpec
from ferry.devstack.emulators import Azurite
from ferry.workers.blobcopy import Endpoints, run_copy

MiB = 1024 * 1024


def io_bytes() -> int:
    """Bytes read plus written by this process's syscalls (sockets included), from /proc/self/io."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    size, n = args.size_mib * MiB, args.concurrency
    with tempfile.TemporaryDirectory() as work, Azurite(Path(work)) as azurite:
        src, dst = azurite.accounts["ferrysrc"], azurite.accounts["ferrydst"]
        source = BlobServiceClient.from_connection_string(src.connection_string).create_container("bench")
        target = BlobServiceClient.from_connection_string(dst.connection_string).create_container("bench")
        source.upload_blob("big.bin", os.urandom(size), max_concurrency=n)

        started = time.perf_counter()
        data = source.get_blob_client("big.bin").download_blob(max_concurrency=n).readall()
        target.upload_blob("sdk.bin", data, max_concurrency=n)
        sdk = size / MiB / (time.perf_counter() - started)
        del data

        ref = {"secretRef": {"name": "s", "key": "k"}}
        endpoints = Endpoints(src.connection_string, None, dst.connection_string)
        spec = BlobCopySpec.model_validate(
            {
                "source": {"account": ref, "container": "bench", "blob": "big.bin"},
                "destination": {"account": ref, "container": "bench", "blob": "ferry.bin"},
                "mode": "Stream",
                "parallelism": n,
                "blockSizeMiB": 4,
            }
        )
        started = time.perf_counter()
        outcome = run_copy(spec, None, endpoints, lambda patch: None, threading.Event(), "bench")
        ferry = size / MiB / (time.perf_counter() - started)
        assert outcome.succeeded, outcome.failure
        print(f"stream_vs_sdk_ratio={ferry / sdk:.2f} (ceiling {sdk:.1f}MiB/s, ferry {ferry:.1f}MiB/s)")

        spec = spec.model_copy(update={"mode": "ServerSide"})
        spec.destination.blob = "server.bin"
        before, started = io_bytes(), time.perf_counter()
        outcome = run_copy(spec, None, endpoints, lambda patch: None, threading.Event(), "bench-ss")
        moved = io_bytes() - before
        assert outcome.succeeded, outcome.failure
        print(
            f"serverside_bytes_through_worker={moved} ({moved / size:.4%} of {size} bytes, "
            f"{time.perf_counter() - started:.2f}s)"
        )


if __name__ == "__main__":
    main()
