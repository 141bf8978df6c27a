"""Stream mode against Azurite: cross-account, URL sources, types, overwrite, MD5, pending, resume."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from ferry.api.blobcopy import BlobCopySpec
from ferry.kinds.blobcopy.engine import CopyStopped, Endpoints, cleanup, run_copy
from ferry_dev.emulators import StorageAccount

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def endpoints(src: StorageAccount | None, dst: StorageAccount, url: str | None = None) -> Endpoints:
    return Endpoints(src.connection_string if src else None, url, dst.connection_string)


def stream_spec(src: ContainerClient, dst: ContainerClient, **extra: object) -> object:

    source = {"container": src.container_name, **extra.pop("source", {})}  # type: ignore[dict-item]
    destination = {"container": dst.container_name, **extra.pop("destination", {})}  # type: ignore[dict-item]
    ref = {"secretRef": {"name": "s", "key": "connection"}}
    return BlobCopySpec.model_validate(
        {
            "source": {"account": ref, **source},
            "destination": {"account": ref, **destination},
            "mode": "Stream",
            "blockSizeMiB": 1,
            **extra,
        }
    )


def test_cross_account_block_blob(src_account, dst_account, src_container, dst_container, reports, assert_no_secrets):
    data = os.urandom(3 * MiB + 17)
    src_container.upload_blob(
        "one.bin",
        data,
        metadata={"origin": "test"},
        content_settings=ContentSettings(content_type="application/x-test"),
    )
    spec = stream_spec(src_container, dst_container, source={"blob": "one.bin"}, verifyContentMD5=True)
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "k1")
    assert outcome.succeeded, outcome.failure
    blob = dst_container.get_blob_client("one.bin")
    assert blob.download_blob().readall() == data
    props = blob.get_blob_properties()
    assert props.metadata == {"origin": "test"}
    assert props.content_settings.content_type == "application/x-test"
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()
    status = reports.merged()
    assert status["copyStatus"] == "success"
    assert status["progress"] == f"{len(data)}/{len(data)}"
    assert status["sourceETag"]
    assert_no_secrets([str(p) for p in reports.patches], src_account.key, dst_account.key)


def test_prefix_copy_counts_and_renames(src_account, dst_account, src_container, dst_container, reports):
    for i in range(4):
        src_container.upload_blob(f"logs/{i}.txt", f"line {i}".encode())
    src_container.upload_blob("other/x.txt", b"x")
    spec = stream_spec(src_container, dst_container, source={"prefix": "logs/"}, destination={"prefix": "copy/"})
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "k2")
    assert outcome.succeeded
    assert sorted(b.name for b in dst_container.list_blobs()) == [f"copy/{i}.txt" for i in range(4)]
    assert reports.merged()["blobs"] == {"total": 4, "pending": 0, "succeeded": 4, "failed": 0, "skipped": 0}


def test_whole_container_and_types(src_account, dst_account, src_container, dst_container, reports):
    page = src_container.get_blob_client("disk.vhd")
    page.create_page_blob(4 * MiB)
    page.upload_page(b"\x01" * 1024, offset=512, length=1024)
    page.upload_page(b"\x02" * 512, offset=3 * MiB, length=512)
    append = src_container.get_blob_client("log.txt")
    append.create_append_blob()
    for part in (b"a" * 1000, b"b" * 2000):
        append.append_block(part)
    spec = stream_spec(src_container, dst_container, verifyContentMD5=True)
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "k3")
    assert outcome.succeeded, outcome.failure
    for name, kind in (("disk.vhd", "PageBlob"), ("log.txt", "AppendBlob")):
        copied = dst_container.get_blob_client(name)
        assert str(copied.get_blob_properties().blob_type).endswith(kind.upper()) or kind in str(
            copied.get_blob_properties().blob_type
        )
        assert copied.download_blob().readall() == src_container.get_blob_client(name).download_blob().readall()
    ranges, _ = dst_container.get_blob_client("disk.vhd").get_page_ranges()
    assert [(r["start"], r["end"]) for r in ranges] == [(512, 1535), (3 * MiB, 3 * MiB + 511)]


def test_sas_and_public_url_sources(
    src_account, dst_account, src_container, dst_container, reports, make_spec, assert_no_secrets
):
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    data = os.urandom(MiB + 5)
    src_container.upload_blob("sas.bin", data)
    sas = generate_blob_sas(
        src_account.name,
        src_container.container_name,
        "sas.bin",
        account_key=src_account.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    url = f"{src_container.get_blob_client('sas.bin').url}?{sas}"
    spec = make_spec(
        source={"urlSecretRef": {"name": "u", "key": "url"}},
        destination={"container": dst_container.container_name},
        mode="Stream",
    )
    outcome = run_copy(spec, None, endpoints(None, dst_account, url), reports, threading.Event(), "k4")
    assert outcome.succeeded, outcome.failure
    assert dst_container.get_blob_client("sas.bin").download_blob().readall() == data
    assert_no_secrets([str(p) for p in reports.patches], sas)

    public = BlobServiceClient.from_connection_string(src_account.connection_string).create_container(
        "pub" + src_container.container_name, public_access="blob"
    )
    public.upload_blob("open.bin", data)
    spec = make_spec(
        source={"url": public.get_blob_client("open.bin").url},
        destination={"container": dst_container.container_name, "blob": "renamed.bin"},
        mode="Stream",
    )
    outcome = run_copy(
        spec,
        None,
        endpoints(None, dst_account, public.get_blob_client("open.bin").url),
        reports,
        threading.Event(),
        "k5",
    )
    assert outcome.succeeded, outcome.failure
    assert dst_container.get_blob_client("renamed.bin").download_blob().readall() == data


class _Object:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.etag = '"v1"'
        self.gets = 0
        self.heads = 0
        self.after_gets: tuple[int, bytes] | None = None


@pytest.fixture
def http_object() -> Iterator[tuple[str, _Object]]:
    obj = _Object(os.urandom(3 * MiB + 100))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _head(self, status: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("ETag", obj.etag)
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()

        def do_HEAD(self) -> None:
            obj.heads += 1
            self._head(200, len(obj.data), {"Accept-Ranges": "bytes"})

        def do_GET(self) -> None:
            obj.gets += 1
            if obj.after_gets and obj.gets > obj.after_gets[0]:
                obj.data, obj.etag = obj.after_gets[1], '"v2"'
            if self.headers.get("If-Match") not in (None, obj.etag):
                self._head(412, 0, {})
                return
            start, _, end = self.headers["Range"].removeprefix("bytes=").partition("-")
            body = obj.data[int(start) : int(end) + 1]
            self._head(206, len(body), {"Content-Range": f"bytes {start}-{end}/{len(obj.data)}"})
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files/data.bin", obj
    finally:
        server.shutdown()
        server.server_close()


def test_http_source_and_source_changed(dst_account, dst_container, http_object, reports, make_spec):
    url, obj = http_object
    spec = make_spec(
        source={"url": url},
        destination={"container": dst_container.container_name},
        mode="Stream",
        blockSizeMiB=1,
        parallelism=1,
    )
    assert run_copy(spec, None, endpoints(None, dst_account, url), reports, threading.Event(), "h1").succeeded
    assert dst_container.get_blob_client("data.bin").download_blob().readall() == obj.data

    obj.gets, obj.after_gets = 0, (2, os.urandom(len(obj.data)))  # the object changes after two blocks
    spec = make_spec(
        source={"url": url},
        destination={"container": dst_container.container_name, "blob": "b.bin"},
        mode="Stream",
        blockSizeMiB=1,
        parallelism=1,
    )
    outcome = run_copy(spec, None, endpoints(None, dst_account, url), reports, threading.Event(), "h2")
    assert not outcome.succeeded and outcome.failure is not None
    assert outcome.failure.reason == "SourceChanged"
    assert "412" in outcome.failure.message and "precondition failed" in outcome.failure.message


def test_a_redirecting_source_url_is_not_followed(dst_account, dst_container, http_object, reports, make_spec):
    """A URL that redirects could lead the worker to the metadata service: the worker stops at the redirect."""
    target, obj = http_object

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/moved.bin"
        spec = make_spec(source={"url": url}, destination={"container": dst_container.container_name}, mode="Stream")
        outcome = run_copy(spec, None, endpoints(None, dst_account, url), reports, threading.Event(), "r1")
    finally:
        server.shutdown()
        server.server_close()
    assert outcome.failure is not None and outcome.failure.reason == "SourceRedirected"
    assert "302" in outcome.failure.message and "not followed" in outcome.failure.message
    assert obj.heads == obj.gets == 0  # the redirect's target was never asked


def test_overwrite_modes(src_account, dst_account, src_container, dst_container, reports):
    src_container.upload_blob("a.txt", b"new source")
    dst_container.upload_blob("a.txt", b"newer destination")  # written after the source
    ep = endpoints(src_account, dst_account)
    for mode in ("Never", "IfSourceNewer"):
        spec = stream_spec(src_container, dst_container, source={"blob": "a.txt"}, overwrite=mode)
        outcome = run_copy(spec, None, ep, reports, threading.Event(), f"o-{mode}")
        assert outcome.succeeded
        assert "skipped" in reports.merged()["statusDescription"]
        assert dst_container.get_blob_client("a.txt").download_blob().readall() == b"newer destination"
    time.sleep(1.1)  # Last-Modified has one-second resolution
    src_container.upload_blob("a.txt", b"newest source", overwrite=True)
    spec = stream_spec(src_container, dst_container, source={"blob": "a.txt"}, overwrite="IfSourceNewer")
    assert run_copy(spec, None, ep, reports, threading.Event(), "o-3").succeeded
    assert dst_container.get_blob_client("a.txt").download_blob().readall() == b"newest source"
    spec = stream_spec(
        src_container, dst_container, source={"blob": "a.txt"}, overwrite="Never", destination={"blob": "fresh.txt"}
    )
    assert run_copy(spec, None, ep, reports, threading.Event(), "o-4").succeeded
    assert dst_container.get_blob_client("fresh.txt").download_blob().readall() == b"newest source"


def test_md5_mismatch(src_account, dst_account, src_container, dst_container, reports):
    # A source whose stored Content-MD5 does not describe its bytes: the copy must not pass as verified.
    blob = src_container.upload_blob("lie.bin", b"payload")
    blob.set_http_headers(ContentSettings(content_md5=bytearray(hashlib.md5(b"something else").digest())))
    spec = stream_spec(src_container, dst_container, source={"blob": "lie.bin"}, verifyContentMD5=True)
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), "m1")
    assert outcome.failure is not None and outcome.failure.reason == "ContentMD5Mismatch"
    assert base64.b64encode(hashlib.md5(b"payload").digest()).decode() in outcome.failure.message


def test_stop_resume_conflict_and_cleanup(
    src_account, dst_account, src_container, dst_container, new_reports, fault_proxy, proxied
):
    Reports = new_reports
    data = os.urandom(6 * MiB)
    src_container.upload_blob("big.bin", data)
    ep = endpoints(src_account, dst_account)
    slow = Endpoints(src_account.connection_string, None, proxied(dst_account, fault_proxy))
    fault_proxy.delay, fault_proxy.delay_match = 0.5, lambda method, path: "comp=block&" in path
    spec = stream_spec(src_container, dst_container, source={"blob": "big.bin"}, parallelism=1)
    stop = threading.Event()
    first = Reports()
    threading.Timer(1.3, stop.set).start()  # mid-copy: each block takes at least 0.5 s
    with pytest.raises(CopyStopped):
        run_copy(spec, None, slow, first, stop, "resume-key")
    fault_proxy.delay = 0.0
    from ferry.api.blobcopy import BlobCopyStatus

    previous = BlobCopyStatus.model_validate(first.merged())
    dest = dst_container.get_blob_client("big.bin")
    props = dest.get_blob_properties()
    assert props.size == 0 and props.metadata["ferrycopystate"] == "pending"
    staged = len(dest.get_block_list("uncommitted")[1])
    assert 2 <= staged < 6

    # A different BlobCopy meets Ferry's pending copy and is refused, naming it.
    other = run_copy(spec, None, ep, Reports(), threading.Event(), "other-key")
    assert other.failure is not None and other.failure.reason == "PendingCopyConflict"
    assert previous.copy_id in other.failure.message

    second = Reports()
    outcome = run_copy(spec, previous, ep, second, threading.Event(), "resume-key")
    assert outcome.succeeded, outcome.failure
    assert outcome.stats["blocksReused"] == staged and outcome.stats["blocksStaged"] == 6 - staged
    assert dest.download_blob().readall() == data
    assert second.merged()["copyId"] == previous.copy_id

    # Abort through cleanup: a pending copy of ours leaves an empty destination, staged blocks dropped.
    spec2 = stream_spec(
        src_container, dst_container, source={"blob": "big.bin"}, destination={"blob": "aborted.bin"}, parallelism=1
    )
    stop2, third = threading.Event(), Reports()
    fault_proxy.delay = 0.5
    threading.Timer(0.8, stop2.set).start()
    with pytest.raises(CopyStopped):
        run_copy(spec2, None, slow, third, stop2, "abort-key")
    fault_proxy.delay = 0.0
    previous2 = BlobCopyStatus.model_validate(third.merged())
    cleanup(spec2, previous2, ep, third, "abort-key")
    cleanup(spec2, previous2, ep, third, "abort-key")  # idempotent
    aborted = dst_container.get_blob_client("aborted.bin")
    assert aborted.get_blob_properties().size == 0
    assert aborted.get_block_list("uncommitted")[1] == []
    assert third.merged()["copyStatus"] == "aborted"


def test_leases(src_account, dst_account, src_container, dst_container, reports):
    from azure.storage.blob import BlobLeaseClient

    src_container.upload_blob("locked.bin", b"z" * 1000)
    ep = endpoints(src_account, dst_account)
    spec = stream_spec(
        src_container, dst_container, source={"blob": "locked.bin"}, lockSource=True, lockDestination=True
    )
    assert run_copy(spec, None, ep, reports, threading.Event(), "l1").succeeded
    for blob in (src_container.get_blob_client("locked.bin"), dst_container.get_blob_client("locked.bin")):
        assert str(blob.get_blob_properties().lease.state) == "available"  # released at the end

    foreign = BlobLeaseClient(src_container.get_blob_client("locked.bin"))
    foreign.acquire(lease_duration=-1)
    try:
        outcome = run_copy(spec, None, ep, reports, threading.Event(), "l2")
        assert outcome.failure is not None and outcome.failure.reason == "LeaseConflict"
    finally:
        foreign.release()


@pytest.mark.parametrize("overwrite", ["Never", "IfSourceNewer"])
@pytest.mark.parametrize("mode", ["Stream", "ServerSide"])
def test_skipped_blobs_leave_the_total(
    src_account, dst_account, src_container, dst_container, reports, make_spec, overwrite, mode
):
    src_container.upload_blob("p/keep.txt", b"k" * 16)
    src_container.upload_blob("p/new.bin", os.urandom(100_000))
    dst_container.upload_blob("p/keep.txt", b"destination, written after the source")
    spec = make_spec(
        source={"container": src_container.container_name, "prefix": "p/"},
        destination={"container": dst_container.container_name},
        mode=mode,
        overwrite=overwrite,
    )
    outcome = run_copy(spec, None, endpoints(src_account, dst_account), reports, threading.Event(), f"t-{mode}")
    assert outcome.succeeded, outcome.failure
    status = reports.merged()
    assert status["progress"] == "100000/100000"
    assert status["totalBytes"] == status["bytesCopied"] == 100_000
    assert status["blobs"]["skipped"] == 1 and status["blobs"]["succeeded"] == 1
    assert dst_container.get_blob_client("p/keep.txt").download_blob().readall().startswith(b"destination")


def test_page_blob_resume_skips_written_pages(
    src_account, dst_account, src_container, dst_container, new_reports, fault_proxy, proxied
):
    from ferry.api.blobcopy import BlobCopyStatus

    data = os.urandom(12 * MiB)  # three 4 MiB Put Page chunks
    page = src_container.get_blob_client("disk.vhd")
    page.create_page_blob(len(data))
    for offset in range(0, len(data), 4 * MiB):
        page.upload_page(data[offset : offset + 4 * MiB], offset=offset, length=4 * MiB)
    slow = Endpoints(src_account.connection_string, None, proxied(dst_account, fault_proxy))
    fault_proxy.delay, fault_proxy.delay_match = 0.6, lambda method, path: "comp=page" in path
    spec = stream_spec(src_container, dst_container, source={"blob": "disk.vhd"}, parallelism=1)
    stop, first = threading.Event(), new_reports()
    threading.Timer(0.9, stop.set).start()  # after the first chunk, while the second is in flight
    with pytest.raises(CopyStopped):
        run_copy(spec, None, slow, first, stop, "page-key")
    fault_proxy.delay = 0.0
    dest = dst_container.get_blob_client("disk.vhd")
    written = sum(r["end"] + 1 - r["start"] for r in dest.get_page_ranges()[0]) // (4 * MiB)
    assert 1 <= written < 3
    sent_before = fault_proxy.requests("PUT", "comp=page")
    outcome = run_copy(
        spec, BlobCopyStatus.model_validate(first.merged()), slow, new_reports(), threading.Event(), "page-key"
    )
    assert outcome.succeeded, outcome.failure
    assert fault_proxy.requests("PUT", "comp=page") - sent_before == 3 - written
    assert dest.download_blob().readall() == data
