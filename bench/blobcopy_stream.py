"""Stream-mode BlobCopy throughput against the SDK's own download-then-upload, on Azurite.

Prints stream_vs_sdk_ratio (Ferry's MiB/s over the SDK ceiling's: same blob, same concurrency,
same Azurite, both measured in this run), stream_vs_tuned_sdk_ratio (against the same SDK copy
given the transport piece size Ferry's own clients use) and, for a ServerSide copy, the bytes that
passed through this process (should be ~0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient, ContainerClient

from ferry.api.blobcopy import BlobCopySpec
from ferry.kinds.blobcopy.engine import Endpoints, run_copy
from ferry.storage.blobs import DATA_BLOCK_SIZE
from ferry_dev.emulators import Azurite

MiB = 1024 * 1024


def io_bytes() -> int:
    """Bytes read plus written by this process's syscalls (sockets included), from /proc/self/io."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def _container(connection_string: str, **tuning: int) -> ContainerClient:
    return BlobServiceClient.from_connection_string(connection_string, **tuning).get_container_client("bench")


def sdk_copy(source: ContainerClient, target: ContainerClient, name: str, size: int, concurrency: int) -> float:
    """The SDK's own parallel download, then parallel upload, of the benchmark blob: MiB/s."""
    started = time.perf_counter()
    data = source.get_blob_client("big.bin").download_blob(max_concurrency=concurrency).readall()
    target.upload_blob(name, data, max_concurrency=concurrency)
    return size / MiB / (time.perf_counter() - started)


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

        sdk = sdk_copy(source, target, "sdk.bin", size, n)
        # The same SDK copy with the transport piece size Ferry's clients use: the stricter ceiling.
        tuned_source = _container(src.connection_string, connection_data_block_size=DATA_BLOCK_SIZE)
        tuned_target = _container(dst.connection_string, connection_data_block_size=DATA_BLOCK_SIZE)
        tuned = sdk_copy(tuned_source, tuned_target, "sdk-tuned.bin", size, n)

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
        outcome = run_copy(spec, None, endpoints, lambda part, force=False: None, threading.Event(), "bench")
        ferry = size / MiB / (time.perf_counter() - started)
        assert outcome.succeeded, outcome.failure
        print(f"stream_vs_sdk_ratio={ferry / sdk:.2f} (ceiling {sdk:.1f}MiB/s, ferry {ferry:.1f}MiB/s)")
        print(f"stream_vs_tuned_sdk_ratio={ferry / tuned:.2f} (tuned ceiling {tuned:.1f}MiB/s)")

        spec = spec.model_copy(update={"mode": "ServerSide"})
        spec.destination.blob = "server.bin"
        before, started = io_bytes(), time.perf_counter()
        outcome = run_copy(spec, None, endpoints, lambda part, force=False: None, threading.Event(), "bench-ss")
        moved = io_bytes() - before
        assert outcome.succeeded, outcome.failure
        print(
            f"serverside_bytes_through_worker={moved} ({moved / size:.4%} of {size} bytes, "
            f"{time.perf_counter() - started:.2f}s)"
        )


if __name__ == "__main__":
    main()
