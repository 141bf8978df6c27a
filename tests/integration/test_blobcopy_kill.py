"""A Stream-mode worker killed with SIGKILL mid-copy resumes without sending staged blocks again."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from ferry.api.blobcopy import BlobCopyStatus
from support.blobcopy_worker import merged, worker

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
BLOCKS = 6


def test_sigkill_then_resume(
    src_account, dst_account, src_container, dst_container, make_spec, fault_proxy, proxied, tmp_path
):
    data = os.urandom(BLOCKS * MiB)
    src_container.upload_blob("big.bin", data)
    spec = make_spec(
        source={"container": src_container.container_name, "blob": "big.bin"},
        destination={"container": dst_container.container_name},
        mode="Stream",
        blockSizeMiB=1,
        parallelism=1,
    )
    reports = tmp_path / "reports.jsonl"
    env = {
        "SPEC": json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
        "REPORTS": str(reports),
        "KEY": "kill-key",
        "FERRY_SOURCE_CONNECTION_STRING": src_account.connection_string,
        "FERRY_DESTINATION_CONNECTION_STRING": proxied(dst_account, fault_proxy),
    }
    fault_proxy.delay, fault_proxy.delay_match = 0.4, lambda method, path: "comp=block&" in path
    dest = dst_container.get_blob_client("big.bin")

    first = worker(env)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and first.poll() is None:
            if dest.exists() and len(dest.get_block_list("uncommitted")[1]) >= 2:
                break
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)  # no chance to checkpoint or release anything
    finally:
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    time.sleep(fault_proxy.delay + 0.5)  # a block already inside the proxy still lands: let it
    staged = len(dest.get_block_list("uncommitted")[1])
    assert 2 <= staged < BLOCKS
    assert dest.get_blob_properties().size == 0  # still Ferry's pending placeholder

    previous = merged(reports)
    assert BlobCopyStatus.model_validate(previous).copy_id
    fault_proxy.delay = 0.0
    sent_before = fault_proxy.requests("PUT", "comp=block&")
    second = worker({**env, "PREVIOUS": json.dumps(previous)})
    assert second.wait(timeout=30) == 0
    assert dest.download_blob().readall() == data
    assert fault_proxy.requests("PUT", "comp=block&") - sent_before == BLOCKS - staged
    status = merged(reports)
    assert status["copyStatus"] == "success" and status["copyId"] == previous["copyId"]
    assert status["progress"] == f"{len(data)}/{len(data)}"
