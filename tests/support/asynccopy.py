"""A protocol-level stand-in for the Blob service's asynchronous Copy Blob, in front of Azurite.

Azurite completes Copy Blob synchronously, so the path the service takes for large cross-account
copies never shows through it. This HTTP server sits between a client and Azurite, forwards every
request unchanged except those below, and plays the service's copy scheduler as the Copy Blob and
Abort Copy Blob references and the 2012-02-12 asynchronous-copy announcement describe it:

- Copy Blob (PUT with x-ms-copy-source, not x-ms-requires-sync) validates the source (its access
  conditions: 412 SourceConditionNotMet; unreadable: CannotVerifyCopySource with the source's
  status), refuses a destination with a pending copy (409 PendingCopyOperation) or of another blob
  type (409 InvalidBlobType), initialises the destination under the request's destination
  conditions and lease (a zero-length block or append blob, or a zeroed page blob of the source's
  length, with the request's metadata or else the source's) and answers 202 with x-ms-copy-id and
  x-ms-copy-status: pending.
- A background mover reads the source in ranges (pinned to its ETag at scheduling) and writes the
  destination at `rate` bytes per second per copy: blocks staged and committed at the end, pages
  written as they come, append blocks appended. A changed source fails the copy with a 412
  description; an unreachable one leaves it pending with the failure in the description, as the
  service retries intermittent failures.
- Get Blob, Get Blob Properties and List Blobs (include=copy) carry x-ms-copy-id, -source,
  -status, -progress (X/Y), -completion-time and -status-description.
- Abort Copy Blob (comp=copy, x-ms-copy-action: abort) cancels a pending copy and leaves the
  destination zero-length with its metadata (409 NoPendingCopyOperation / CopyIdMismatch; the
  destination's lease is required when it has one).
- While a copy is pending, writes, snapshots and lease operations on the destination answer 409
  PendingCopyOperation. Afterwards Put Blob, Put Block List, Set Blob Metadata and Set Blob
  Properties drop the copy properties; Put Block, Put Page, Append Block and Lease keep them.
- `fail_next` makes the service fail pending copies (x-ms-copy-status: failed, with a description).

Not played: the Copy Blob request's own signature is not verified (Azurite verifies every request
it receives, including the stand-in's own, which it makes with the account keys); access tiers,
tags, snapshots or versions as sources, and the service's two-week limit on a pending copy.
"""

from __future__ import annotations

import base64
import http.client
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape, unescape

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings

from ferry_dev.emulators import StorageAccount
from ferry_dev.network import listen_host

MiB = 1024 * 1024
STEP = 64 * 1024  # bytes moved per write: a multiple of 512, so page writes stay aligned
TICK = 0.05
INJECTED = '500 InternalError "The copy failed on the service (injected)."'

PENDING_WRITES = {None, "block", "blocklist", "page", "appendblock", "metadata", "properties", "lease", "snapshot"}
PENDING_WRITES |= {"seal"}
CLEARING_WRITES = {None, "blocklist", "metadata", "properties"}

XML_NAMES = {
    "x-ms-copy-id": "CopyId",
    "x-ms-copy-source": "CopySource",
    "x-ms-copy-status": "CopyStatus",
    "x-ms-copy-progress": "CopyProgress",
    "x-ms-copy-completion-time": "CopyCompletionTime",
    "x-ms-copy-status-description": "CopyStatusDescription",
}
Key = tuple[str, str, str]  # (account, container, blob)


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Copy:
    """One copy operation's state, as the service keeps it on the destination blob."""

    id: str
    key: Key
    source: str
    source_etag: str
    blob_type: str
    total: int
    lease: str | None
    metadata: dict[str, str]
    settings: ContentSettings
    copied: int = 0
    status: str = "pending"
    description: str | None = None
    completed: datetime | None = None
    allowance: float = 0.0
    blocks: list[str] = field(default_factory=list)
    moving: threading.Lock = field(default_factory=threading.Lock)  # a chunk's write, or the abort

    def headers(self) -> dict[str, str]:
        out = {
            "x-ms-copy-id": self.id,
            "x-ms-copy-source": self.source,
            "x-ms-copy-status": self.status,
            "x-ms-copy-progress": f"{self.copied}/{self.total}",
        }
        if self.completed is not None:
            out["x-ms-copy-completion-time"] = format_datetime(self.completed, usegmt=True)
        if self.description:
            out["x-ms-copy-status-description"] = self.description
        return out

    def xml(self) -> str:
        """The same properties as List Blobs elements."""
        return "".join(f"<{XML_NAMES[k]}>{escape(v)}</{XML_NAMES[k]}>" for k, v in self.headers().items())


@dataclass
class Failure:
    left: int
    match: Callable[[str], bool]
    description: str


class AsyncCopyService:
    def __init__(self, accounts: Mapping[str, StorageAccount], rate: float = 8 * MiB) -> None:
        first = next(iter(accounts.values()))
        upstream = urlsplit(first.blob_endpoint)
        self.upstream_host, self.upstream_port = upstream.hostname or "127.0.0.1", upstream.port or 80
        self.accounts = dict(accounts)
        self.rate = rate  # bytes per second, per pending copy; 0 holds every copy pending
        self.log: list[tuple[str, str]] = []
        self._copies: dict[Key, Copy] = {}
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = {
            name: BlobServiceClient.from_connection_string(a.connection_string) for name, a in accounts.items()
        }
        self._server = ThreadingHTTPServer((listen_host(), 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._move, daemon=True),
        ]

    # -- the test's side ------------------------------------------------------------------------

    def endpoint(self, account: str) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}/{account}"

    def connection_string(self, account: StorageAccount) -> str:
        """The account's connection string with its blob endpoint at this service."""
        return re.sub(r"BlobEndpoint=[^;]+", f"BlobEndpoint={self.endpoint(account.name)}", account.connection_string)

    def fail_next(
        self, count: int = 1, match: Callable[[str], bool] = lambda name: True, description: str = INJECTED
    ) -> None:
        """Fail the next `count` pending copies whose destination blob name matches."""
        with self._lock:
            self._failures.append(Failure(count, match, description))

    def copy_of(self, container: str, blob: str) -> Copy | None:
        with self._lock:
            for (_, c, b), copy in self._copies.items():
                if (c, b) == (container, blob):
                    return copy
        return None

    def copy_requests(self, fragment: str = "") -> int:
        """How many Copy Blob requests reached the service (their paths containing `fragment`)."""
        with self._lock:
            return sum(1 for method, path in self.log if method == "COPY" and fragment in path)

    def start(self) -> AsyncCopyService:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    @contextmanager
    def running(self) -> Iterator[AsyncCopyService]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- the scheduler ----------------------------------------------------------------------------

    def _blob(self, key: Key) -> BlobClient:
        return self._clients[key[0]].get_blob_client(key[1], key[2])

    def schedule(self, key: Key, headers: Mapping[str, str]) -> tuple[Copy, Any]:
        source = headers["x-ms-copy-source"]
        props = _source_properties(source)
        _check_source_conditions(headers, props)
        blob_type = props.get("x-ms-blob-type", "BlockBlob")
        dest = self._blob(key)
        with self._lock:
            if (held := self._copies.get(key)) is not None and held.status == "pending":
                raise ServiceError(409, "PendingCopyOperation", "There is currently a pending copy operation.")
        try:
            existing = str(dest.get_blob_properties().blob_type)
        except HttpResponseError as error:
            if error.status_code != 404:
                raise
            existing = None
        if existing is not None and existing.split(".")[-1].lower() != blob_type.lower():
            raise ServiceError(409, "InvalidBlobType", "The blob type is invalid for this operation.")
        metadata = {k[len("x-ms-meta-") :]: v for k, v in headers.items() if k.startswith("x-ms-meta-")}
        if not metadata:
            metadata = {k[len("x-ms-meta-") :]: v for k, v in props.items() if k.startswith("x-ms-meta-")}
        copy = Copy(
            id=str(uuid.uuid4()),
            key=key,
            source=source,
            source_etag=props.get("etag", ""),
            blob_type=blob_type,
            total=int(props.get("content-length", "0")),
            lease=headers.get("x-ms-lease-id"),
            metadata=metadata,
            settings=_settings(props),
        )
        result = self._initialise(dest, copy, _destination_conditions(headers))
        with self._lock:
            if (held := self._copies.get(key)) is not None and held.status == "pending":
                raise ServiceError(409, "PendingCopyOperation", "There is currently a pending copy operation.")
            self._copies[key] = copy
        return copy, result

    def _initialise(self, dest: BlobClient, copy: Copy, conditions: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {"metadata": copy.metadata, **conditions}
        if copy.lease:
            kwargs["lease"] = copy.lease
        try:
            if copy.blob_type == "PageBlob":
                return dest.create_page_blob(copy.total, **kwargs)
            if copy.blob_type == "AppendBlob":
                return dest.create_append_blob(**kwargs)
            return dest.upload_blob(b"", overwrite=True, **kwargs)
        except HttpResponseError as error:
            raise ServiceError(error.status_code or 500, _code(error), str(error.reason or error.message)) from None

    def abort(self, key: Key, copy_id: str, lease: str | None) -> None:
        with self._lock:
            copy = self._copies.get(key)
            if copy is None or copy.status != "pending":
                raise ServiceError(409, "NoPendingCopyOperation", "There is currently no pending copy operation.")
            if copy.id != copy_id:
                raise ServiceError(
                    409,
                    "CopyIdMismatch",
                    "The specified copy ID did not match the copy ID for the pending copy operation.",
                )
        dest = self._blob(key)
        props = dest.get_blob_properties()
        if str(props.lease.state) == "leased" and lease is None:
            raise ServiceError(
                412,
                "LeaseIdMissing",
                "There is currently a lease on the blob and no lease ID was specified in the request.",
            )
        kwargs: dict[str, Any] = {"metadata": dict(props.metadata or {})}
        if lease is not None:
            kwargs["lease"] = lease
        with copy.moving:
            with self._lock:
                if copy.status != "pending":
                    raise ServiceError(409, "NoPendingCopyOperation", "There is currently no pending copy operation.")
            try:  # zero length, metadata kept: the reference's "zero length and full metadata"
                if copy.blob_type == "PageBlob":
                    dest.create_page_blob(0, **kwargs)
                elif copy.blob_type == "AppendBlob":
                    dest.create_append_blob(**kwargs)
                else:
                    dest.upload_blob(b"", overwrite=True, **kwargs)
            except HttpResponseError as error:
                raise ServiceError(error.status_code or 500, _code(error), str(error.reason or error.message)) from None
            with self._lock:
                copy.status, copy.completed, copy.description = "aborted", datetime.now(UTC), None

    def _move(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(TICK):
            now = time.monotonic()
            elapsed, last = now - last, now
            with self._lock:
                pending = [c for c in self._copies.values() if c.status == "pending"]
            for copy in pending:
                try:
                    self._advance(copy, elapsed)
                except Exception as error:  # a failure of the stand-in itself: the copy reports it
                    self._finish(copy, "failed", f"500 InternalError {error!r}")

    def _advance(self, copy: Copy, elapsed: float) -> None:
        if (description := self._injected(copy)) is not None:
            self._finish(copy, "failed", description)
            return
        copy.allowance = min(copy.allowance + self.rate * elapsed, 4 * STEP + self.rate * TICK)
        while copy.status == "pending":
            size = min(STEP, copy.total - copy.copied)
            if size > copy.allowance and size > 0:
                return
            with copy.moving:
                if copy.status != "pending":
                    return  # aborted meanwhile
                if size > 0:
                    chunk = self._read(copy, size)
                    if chunk is None:
                        return
                    self._write(copy, chunk)
                    copy.allowance -= size
                with self._lock:
                    copy.copied += size
                    done = copy.copied >= copy.total
                if done:
                    self._commit(copy)
                    return

    def _injected(self, copy: Copy) -> str | None:
        with self._lock:
            for failure in self._failures:
                if failure.left > 0 and failure.match(copy.key[2]):
                    failure.left -= 1
                    return failure.description
        return None

    def _read(self, copy: Copy, size: int) -> bytes | None:
        ranged = {"Range": f"bytes={copy.copied}-{copy.copied + size - 1}", "If-Match": copy.source_etag}
        status, headers, body = _request("GET", copy.source, ranged)
        if status in (200, 206) and headers.get("etag") == copy.source_etag:
            return body[:size]
        if status in (200, 206) or status == 412:
            self._finish(copy, "failed", '412 ConditionNotMet "The source blob was modified during the copy."')
        elif status == 404:
            self._finish(copy, "failed", '404 BlobNotFound "The source blob does not exist any more."')
        else:  # the service retries intermittent failures and says why the copy is still pending
            with self._lock:
                copy.description = (
                    f"{status} {headers.get('x-ms-error-code', 'ServerError')} reading the source; retrying"
                )
        return None

    def _write(self, copy: Copy, chunk: bytes) -> None:
        dest = self._blob(copy.key)
        if copy.blob_type == "PageBlob":
            if chunk.strip(b"\0"):
                padded = chunk + b"\0" * (-len(chunk) % 512)
                dest.upload_page(padded, offset=copy.copied, length=len(padded), lease=copy.lease)
        elif copy.blob_type == "AppendBlob":
            dest.append_block(chunk, lease=copy.lease)
        else:
            block = f"{copy.id[:8]}-{len(copy.blocks):08d}"  # one length for all, as Put Block requires
            dest.stage_block(block, chunk, lease=copy.lease)
            copy.blocks.append(block)

    def _commit(self, copy: Copy) -> None:
        dest = self._blob(copy.key)
        with self._lock:
            if copy.status != "pending":
                return
        if copy.blob_type == "BlockBlob":
            blocks = [BlobBlock(block_id=b) for b in copy.blocks]
            dest.commit_block_list(blocks, content_settings=copy.settings, metadata=copy.metadata, lease=copy.lease)
        else:
            dest.set_http_headers(copy.settings, lease=copy.lease)
        self._finish(copy, "success", None)

    def _finish(self, copy: Copy, status: str, description: str | None) -> None:
        with self._lock:
            if copy.status == "pending":
                copy.status, copy.description, copy.completed = status, description, datetime.now(UTC)

    # -- HTTP ---------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                segments = unquote(parts.path).split("/", 3)
                key: Key | None = (
                    (segments[1], segments[2], segments[3]) if len(segments) == 4 and segments[3] else None
                )
                try:
                    if key is not None:
                        self._blob_request(key, query, headers, body)
                    else:
                        if self.command == "DELETE" and query.get("restype") == "container" and len(segments) >= 3:
                            service._forget(segments[1], segments[2])
                        self._forward(body, rewrite=_lists_copies(self.command, query))
                except ServiceError as error:
                    self._error(error)

            def _blob_request(
                self, key: Key, query: dict[str, str], headers: dict[str, str], body: bytes | None
            ) -> None:
                comp = query.get("comp")
                copy_blob = (
                    self.command == "PUT"
                    and comp is None
                    and "x-ms-copy-source" in headers
                    and headers.get("x-ms-requires-sync", "").lower() != "true"
                    and "x-ms-blob-type" not in headers
                )
                if copy_blob:
                    with service._lock:
                        service.log.append(("COPY", self.path))
                    scheduled, result = service.schedule(key, headers)
                    self._reply(
                        202,
                        {
                            "ETag": str(result.get("etag")),
                            "Last-Modified": format_datetime(result["last_modified"], usegmt=True),
                            "x-ms-copy-id": scheduled.id,
                            "x-ms-copy-status": "pending",
                        },
                    )
                    return
                if self.command == "PUT" and comp == "copy" and headers.get("x-ms-copy-action", "").lower() == "abort":
                    service.abort(key, query.get("copyid", ""), headers.get("x-ms-lease-id"))
                    self._reply(204, {})
                    return
                with service._lock:
                    service.log.append((self.command, self.path))
                    copy = service._copies.get(key)
                    pending = copy is not None and copy.status == "pending"
                snapshot = "snapshot" in query or "versionid" in query
                if pending and not snapshot and self.command == "PUT" and comp in PENDING_WRITES:
                    raise ServiceError(409, "PendingCopyOperation", "There is currently a pending copy operation.")
                status = self._forward(body, overlay=None if snapshot else copy)
                if 200 <= status < 300 and not snapshot:
                    clears = (self.command == "PUT" and comp in CLEARING_WRITES) or self.command == "DELETE"
                    if clears:
                        with service._lock:
                            if service._copies.get(key) is copy:
                                service._copies.pop(key, None)

            def _forward(self, body: bytes | None, overlay: Copy | None = None, rewrite: bool = False) -> int:
                conn = http.client.HTTPConnection(service.upstream_host, service.upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = conn.getresponse()
                    payload = response.read()
                finally:
                    conn.close()
                headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
                reading = self.command in ("GET", "HEAD") and 200 <= response.status < 300
                if overlay is not None and reading and "comp" not in urlsplit(self.path).query:
                    with service._lock:
                        extra = overlay.headers()
                    headers = [(k, v) for k, v in headers if not k.lower().startswith("x-ms-copy-")]
                    headers += list(extra.items())
                if rewrite and response.status == 200:
                    payload = service._listing(self.path, payload)
                self.send_response(response.status, response.reason)
                for k, v in headers:
                    self.send_header(k, v)
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
                self.send_header("Content-Length", length)  # a HEAD answer tells the blob's length
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return response.status

            def _reply(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {**_common_headers(), **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _error(self, error: ServiceError) -> None:
                payload = (
                    f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{error.code}</Code>'
                    f"<Message>{escape(error.message)}</Message></Error>"
                ).encode()
                self.send_response(error.status)
                for k, v in {**_common_headers(), "x-ms-error-code": error.code}.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _any

        return Handler

    def _forget(self, account: str, container: str) -> None:
        with self._lock:
            for key in [k for k in self._copies if k[:2] == (account, container)]:
                self._copies.pop(key)

    def _listing(self, path: str, payload: bytes) -> bytes:
        """A List Blobs answer with each blob's copy properties as the service keeps them."""
        segments = unquote(urlsplit(path).path).split("/")
        account, container = segments[1], segments[2]
        text = payload.decode("utf-8")

        def blob(match: re.Match[str]) -> str:
            element = match.group(0)
            name = re.search(r"<Name>(.*?)</Name>", element, re.S)
            if name is None:
                return element
            with self._lock:
                copy = self._copies.get((account, container, unescape(name.group(1))))
                fields = copy.xml() if copy is not None else None
            if fields is None:
                return element
            element = re.sub(r"<(Copy\w+)>.*?</\1>|<Copy\w+ ?/>", "", element, flags=re.S)
            return element.replace("</Properties>", fields + "</Properties>", 1)

        return re.sub(r"<Blob>.*?</Blob>", blob, text, flags=re.S).encode("utf-8")


HOP_HEADERS = {"transfer-encoding", "content-length", "connection", "keep-alive"}


def _lists_copies(method: str, query: dict[str, str]) -> bool:
    return method == "GET" and query.get("comp") == "list" and "copy" in query.get("include", "").split(",")


def _common_headers() -> dict[str, str]:
    return {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-version": "2021-10-04",
        "Date": format_datetime(datetime.now(UTC), usegmt=True),
        "Server": "ferry-async-copy-stand-in",
    }


def _request(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, headers={"x-ms-version": "2021-10-04", **headers})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    except OSError as error:
        return 503, {"x-ms-error-code": type(error).__name__}, b""
    finally:
        conn.close()


def _source_properties(url: str) -> dict[str, str]:
    status, headers, _ = _request("HEAD", url, {})
    if status != 200:
        raise ServiceError(
            status if status in (403, 404) else 400,
            "CannotVerifyCopySource",
            f"Could not verify the copy source within the specified time ({status}).",
        )
    return headers


def _check_source_conditions(headers: Mapping[str, str], source: Mapping[str, str]) -> None:
    etag = _unquoted(source.get("etag", ""))  # listings give ETags bare, properties quoted: both match
    modified = parsedate_to_datetime(source["last-modified"]) if "last-modified" in source else None
    failed = False
    if (match := headers.get("x-ms-source-if-match")) is not None:
        failed |= _unquoted(match) not in ("*", etag)
    if (none_match := headers.get("x-ms-source-if-none-match")) is not None:
        failed |= _unquoted(none_match) in ("*", etag)
    if modified is not None and (since := headers.get("x-ms-source-if-modified-since")) is not None:
        failed |= modified <= parsedate_to_datetime(since)
    if modified is not None and (until := headers.get("x-ms-source-if-unmodified-since")) is not None:
        failed |= modified > parsedate_to_datetime(until)
    if failed:
        raise ServiceError(
            412, "SourceConditionNotMet", "The source condition specified using HTTP conditional header(s) is not met."
        )


def _unquoted(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _destination_conditions(headers: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (match := headers.get("if-match")) is not None:
        out.update(etag=match, match_condition=MatchConditions.IfNotModified)
    elif (none_match := headers.get("if-none-match")) is not None:
        if none_match == "*":
            out.update(match_condition=MatchConditions.IfMissing)
        else:
            out.update(etag=none_match, match_condition=MatchConditions.IfModified)
    if (since := headers.get("if-modified-since")) is not None:
        out["if_modified_since"] = parsedate_to_datetime(since)
    if (until := headers.get("if-unmodified-since")) is not None:
        out["if_unmodified_since"] = parsedate_to_datetime(until)
    return out


def _settings(source: Mapping[str, str]) -> ContentSettings:
    md5 = source.get("content-md5")
    return ContentSettings(
        content_type=source.get("content-type"),
        content_encoding=source.get("content-encoding"),
        content_language=source.get("content-language"),
        content_disposition=source.get("content-disposition"),
        cache_control=source.get("cache-control"),
        content_md5=bytearray(base64.b64decode(md5)) if md5 else None,
    )


def _code(error: HttpResponseError) -> str:
    return str(getattr(error, "error_code", None) or "")
