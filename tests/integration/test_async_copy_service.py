"""The asynchronous Copy Blob stand-in, driven by the unchanged Azure SDK as a client of the real service would."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    BlobClient,
    BlobProperties,
    BlobType,
    ContainerClient,
)

from ferry_dev.emulators import Azurite, StorageAccount
from support.asynccopy import AsyncCopyService
from support.sas import read_url

pytestmark = pytest.mark.integration
KiB = 1024


@pytest.fixture
def service(azurite: Azurite) -> Iterator[AsyncCopyService]:
    with AsyncCopyService(azurite.accounts, rate=256 * KiB).running() as running:
        yield running


def _through(service: AsyncCopyService, account: StorageAccount, container: ContainerClient, name: str) -> BlobClient:
    return BlobClient.from_connection_string(service.connection_string(account), container.container_name, name)


def _until(props: Callable[[], BlobProperties], status: str, timeout: float = 30) -> BlobProperties:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = props()
        if str(seen.copy.status) == status:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"copy not {status} within {timeout}s: {seen.copy.status} {seen.copy.progress}")


def _error(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(HttpResponseError) as caught:
        call()
    code = caught.value.error_code
    return caught.value.status_code or 0, str(getattr(code, "value", code))


def test_a_copy_is_pending_shows_progress_and_completes(
    service: AsyncCopyService, src_account, dst_account, src_container, dst_container
) -> None:
    data = os.urandom(768 * KiB)
    source = src_container.upload_blob("big.bin", data, metadata={"origin": "src"})
    dest = _through(service, dst_account, dst_container, "big.bin")

    started = dest.start_copy_from_url(read_url(src_account, source))
    assert started["copy_status"] == "pending" and started["copy_id"]
    pending = dest.get_blob_properties()
    assert pending.blob_type == BlobType.BLOCKBLOB and pending.size == 0  # a zero-length block blob
    assert pending.copy.id == started["copy_id"] and str(pending.copy.status) == "pending"
    assert pending.metadata == {"origin": "src"}
    moving = _until(dest.get_blob_properties, "pending")
    deadline = time.monotonic() + 10
    while moving.copy.progress.startswith("0/") and time.monotonic() < deadline:
        moving = dest.get_blob_properties()
    copied, total = map(int, moving.copy.progress.split("/"))
    assert 0 < copied < total == len(data)
    container = ContainerClient.from_connection_string(
        service.connection_string(dst_account), dst_container.container_name
    )
    listed = {b.name: b for b in container.list_blobs(include=["copy"])}
    assert listed["big.bin"].copy.id == started["copy_id"] and "/" in listed["big.bin"].copy.progress

    done = _until(dest.get_blob_properties, "success")
    assert done.copy.progress == f"{len(data)}/{len(data)}" and done.copy.completion_time is not None
    assert dest.download_blob().readall() == data
    assert done.metadata == {"origin": "src"}
    assert done.content_settings.content_md5 == source.get_blob_properties().content_settings.content_md5


def test_a_page_blob_starts_zeroed_at_the_source_length(
    service: AsyncCopyService, src_account, dst_account, src_container, dst_container
) -> None:
    source = src_container.get_blob_client("disk.vhd")
    source.create_page_blob(512 * KiB)
    source.upload_page(b"\x07" * 4096, offset=256 * KiB, length=4096)
    dest = _through(service, dst_account, dst_container, "disk.vhd")
    dest.start_copy_from_url(read_url(src_account, source))
    pending = dest.get_blob_properties()
    assert pending.blob_type == BlobType.PAGEBLOB and pending.size == 512 * KiB, pending.size
    assert str(pending.copy.status) == "pending"
    _until(dest.get_blob_properties, "success")
    assert dest.download_blob().readall() == source.download_blob().readall()


def test_abort_leaves_zero_length_with_metadata_and_names_wrong_ids(
    service: AsyncCopyService, src_account, dst_account, src_container, dst_container
) -> None:
    service.rate = 0  # held pending
    source = src_container.upload_blob("held.bin", os.urandom(64 * KiB))
    dest = _through(service, dst_account, dst_container, "held.bin")
    copy_id = dest.start_copy_from_url(read_url(src_account, source), metadata={"kept": "yes"})["copy_id"]
    assert _error(lambda: dest.abort_copy("not-the-id")) == (409, "CopyIdMismatch")
    dest.abort_copy(copy_id)
    aborted = dest.get_blob_properties()
    assert str(aborted.copy.status) == "aborted" and aborted.copy.id == copy_id
    assert aborted.size == 0 and aborted.metadata == {"kept": "yes"}
    assert _error(lambda: dest.abort_copy(copy_id)) == (409, "NoPendingCopyOperation")


def test_a_pending_destination_refuses_writes_leases_and_a_second_copy(
    service: AsyncCopyService, src_account, dst_account, src_container, dst_container
) -> None:
    service.rate = 0
    source = src_container.upload_blob("busy.bin", os.urandom(64 * KiB))
    dest = _through(service, dst_account, dst_container, "busy.bin")
    url = read_url(src_account, source)
    dest.start_copy_from_url(url)
    for write in (
        lambda: dest.upload_blob(b"mine", overwrite=True),
        lambda: dest.set_blob_metadata({"a": "b"}),
        lambda: dest.acquire_lease(),
        lambda: dest.create_snapshot(),
        lambda: dest.start_copy_from_url(url),
    ):
        assert _error(write) == (409, "PendingCopyOperation")
    service.rate = 1024 * KiB
    done = _until(dest.get_blob_properties, "success")
    assert dest.download_blob().readall() == source.download_blob().readall()
    lease = dest.acquire_lease()  # a lease keeps the copy properties; Set Blob Metadata drops them
    assert dest.get_blob_properties().copy.id == done.copy.id
    lease.release()
    dest.set_blob_metadata({"after": "copy"})
    assert dest.get_blob_properties().copy.id is None


def test_source_conditions_a_changed_source_and_injected_failures(
    service: AsyncCopyService, src_account, dst_account, src_container, dst_container
) -> None:
    source = src_container.upload_blob("moving.bin", os.urandom(256 * KiB))
    url = read_url(src_account, source)
    dest = _through(service, dst_account, dst_container, "moving.bin")
    assert _error(
        lambda: dest.start_copy_from_url(url, source_etag='"0x1"', source_match_condition=MatchConditions.IfNotModified)
    ) == (
        412,
        "SourceConditionNotMet",
    )
    service.rate = 64 * KiB
    dest.start_copy_from_url(url)
    source.upload_blob(os.urandom(256 * KiB), overwrite=True)
    failed = _until(dest.get_blob_properties, "failed")
    assert failed.copy.status_description.startswith("412")

    service.fail_next(1, lambda name: name == "moving.bin")
    dest.start_copy_from_url(url)  # a failed copy may be started again
    failed = _until(dest.get_blob_properties, "failed")
    assert "injected" in failed.copy.status_description
    missing = _through(service, dst_account, dst_container, "other.bin")
    gone = src_container.get_blob_client("never-written")
    assert _error(lambda: missing.start_copy_from_url(read_url(src_account, gone)))[1] == "CannotVerifyCopySource"
