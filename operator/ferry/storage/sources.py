"""Copy sources: blobs (through the SDK) and arbitrary HTTP(S) objects (through Range GETs).

Every read is pinned to the ETag seen when the copy started, as the service pins its copies:
a source that changes mid-copy answers 412 and surfaces as SourceChangedError.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError
from azure.storage.blob import BlobClient, BlobProperties, ContentSettings

from ferry.retry import TRANSIENT_STATUSES, policy
from ferry.storage.blobs import (
    RetryRecorder,
    blob_client_from_url,
    credential_free_url,
    error_code,
    redact,
)

BLOCK_BLOB = "BlockBlob"
PAGE_BLOB = "PageBlob"
APPEND_BLOB = "AppendBlob"

HTTP_RETRIES = 5  # after the first try; waits from 0.5s, doubling up to 8s


class SourceChangedError(Exception):
    """The source no longer matches the ETag the copy is pinned to (412 Precondition Failed)."""


class SourceUnavailableError(Exception):
    """The source answered with a permanent error (missing, forbidden, ...)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class TransientSourceError(Exception):
    """The source kept failing with transient errors after bounded retries."""


class _Retry(Exception):
    """One transient failure of a request: what to say if it is the last, what to note if it is retried."""

    def __init__(self, message: str, note: str) -> None:
        super().__init__(message)
        self.note = note


@dataclass
class SourceObject:
    """One object to copy and what must travel with it."""

    name: str
    size: int
    etag: str
    last_modified: datetime | None
    blob_type: str
    content_settings: ContentSettings
    metadata: dict[str, str]
    display_url: str
    client: BlobClient | None = None  # set for blob sources (SDK access, leases, page ranges)
    http: HttpObject | None = field(default=None, repr=False)

    @property
    def content_md5(self) -> bytes | None:
        md5 = self.content_settings.content_md5
        return bytes(md5) if md5 else None


def from_blob_properties(client: BlobClient, props: BlobProperties, name: str) -> SourceObject:
    return bind(replace(listed(props), name=name), client)


def bind(source: SourceObject, client: BlobClient) -> SourceObject:
    """The listed source with its client, for the time it is copied (clients are not kept per blob)."""
    return replace(source, client=client, display_url=credential_free_url(client.url))


def listed(props: BlobProperties) -> SourceObject:
    """A source as a listing describes it, without a client (display_url is set by bind())."""
    settings = props.content_settings
    name = str(props.name)
    return SourceObject(
        name=name,
        size=int(props.size or 0),
        etag=str(props.etag),
        last_modified=props.last_modified,
        blob_type=_blob_type(props.blob_type),
        content_settings=ContentSettings(
            content_type=settings.content_type,
            content_encoding=settings.content_encoding,
            content_language=settings.content_language,
            content_disposition=settings.content_disposition,
            cache_control=settings.cache_control,
            content_md5=settings.content_md5,
        ),
        metadata=dict(props.metadata or {}),
        display_url=name,
    )


def _blob_type(value: Any) -> str:
    text = str(getattr(value, "value", value) or BLOCK_BLOB)
    return {"blockblob": BLOCK_BLOB, "pageblob": PAGE_BLOB, "appendblob": APPEND_BLOB}.get(text.lower(), BLOCK_BLOB)


class Reader(Protocol):
    def __call__(self, offset: int, length: int) -> bytes: ...


def read_range(source: SourceObject, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the source, pinned to its ETag."""
    if source.http is not None:
        return source.http.read(offset, length, source.etag)
    assert source.client is not None
    try:
        downloader = source.client.download_blob(
            offset=offset,
            length=length,
            etag=source.etag,
            match_condition=MatchConditions.IfNotModified,
            max_concurrency=1,
        )
        return downloader.readall()
    except ResourceModifiedError as error:
        raise SourceChangedError(
            f"source {source.display_url} changed during the copy: precondition failed (412, "
            f"ETag {source.etag} no longer matches)"
        ) from error
    except HttpResponseError as error:
        if error.status_code == 412:
            raise SourceChangedError(
                f"source {source.display_url} changed during the copy: precondition failed (412)"
            ) from error
        raise


def page_ranges(source: SourceObject) -> list[tuple[int, int]]:
    """Valid (written) page ranges of a page blob as [start, end) pairs."""
    assert source.client is not None
    try:
        ranges, _cleared = source.client.get_page_ranges(
            etag=source.etag, match_condition=MatchConditions.IfNotModified
        )
    except ResourceModifiedError as error:
        raise SourceChangedError(
            f"source {source.display_url} changed during the copy: precondition failed (412)"
        ) from error
    return [(int(r["start"]), int(r["end"]) + 1) for r in ranges]


def _redirect(response: requests.Response) -> str:
    if not 300 <= response.status_code < 400:
        return ""
    target = urlsplit(response.headers.get("Location", "")).hostname or "elsewhere"
    return f" (a redirect to {target}: redirects of a source URL are not followed; give the final URL)"


class HttpObject:
    """An object behind a plain HTTP(S) URL, read with Range GETs."""

    def __init__(self, url: str, recorder: RetryRecorder, session: requests.Session | None = None) -> None:
        self.url = url
        self.display_url = credential_free_url(url)
        self.recorder = recorder
        self.session = session or requests.Session()
        self.is_blob = False

    def _request(self, method: str, headers: dict[str, str]) -> requests.Response:
        def once() -> requests.Response:
            try:
                # No redirects: a URL that checked out could otherwise lead the worker anywhere (the metadata
                # service included), and Azure Storage never redirects.
                response = self.session.request(
                    method, self.url, headers=headers, timeout=(20, 120), allow_redirects=False
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                raise _Retry(
                    redact(f"{method} {self.display_url} failed: {type(error).__name__}"),
                    f"{type(error).__name__} on {method} {self.display_url}; retrying with backoff",
                ) from None
            if response.status_code in TRANSIENT_STATUSES:
                raise _Retry(
                    f"{method} {self.display_url} kept answering {response.status_code}",
                    f"transient {response.status_code} {response.headers.get('x-ms-error-code', '')} on "
                    f"{method} {self.display_url}; retrying with backoff",
                )
            return response

        def noted(error: BaseException) -> None:
            self.recorder.note(str(getattr(error, "note", error)))

        retries = policy(HTTP_RETRIES + 1, lambda error: isinstance(error, _Retry), 0.5, 8.0, before_sleep=noted)
        try:
            return retries(once)
        except _Retry as error:
            raise TransientSourceError(str(error)) from None

    def describe(self, name: str) -> SourceObject:
        response = self._request("HEAD", {})
        if response.status_code >= 300:
            raise SourceUnavailableError(
                f"HEAD {self.display_url} answered {response.status_code}{_redirect(response)}", response.status_code
            )
        headers = response.headers
        self.is_blob = "x-ms-blob-type" in headers
        length = headers.get("Content-Length")
        if length is None:
            probe = self._request("GET", {"Range": "bytes=0-0"})
            total = probe.headers.get("Content-Range", "").rpartition("/")[2]
            length = total if total.isdigit() else "0"
        md5 = headers.get("Content-MD5")
        modified = headers.get("Last-Modified")
        return SourceObject(
            name=name,
            size=int(length),
            etag=headers.get("ETag", ""),
            last_modified=parsedate_to_datetime(modified) if modified else None,
            blob_type=_blob_type(headers.get("x-ms-blob-type", BLOCK_BLOB)),
            content_settings=ContentSettings(
                content_type=headers.get("Content-Type"),
                content_encoding=headers.get("Content-Encoding"),
                content_language=headers.get("Content-Language"),
                content_disposition=headers.get("Content-Disposition"),
                cache_control=headers.get("Cache-Control"),
                content_md5=bytearray(base64.b64decode(md5)) if md5 else None,
            ),
            metadata={k[len("x-ms-meta-") :]: v for k, v in headers.items() if k.lower().startswith("x-ms-meta-")},
            display_url=self.display_url,
            http=self,
        )

    def read(self, offset: int, length: int, etag: str) -> bytes:
        if length == 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}", "Accept-Encoding": "identity"}
        if etag:
            headers["If-Match"] = etag
        response = self._request("GET", headers)
        if response.status_code == 412:
            raise SourceChangedError(
                f"source {self.display_url} changed during the copy: precondition failed (412, "
                f"ETag {etag} no longer matches)"
            )
        if response.status_code >= 300:
            raise SourceUnavailableError(
                f"GET {self.display_url} answered {response.status_code}{_redirect(response)}", response.status_code
            )
        seen = response.headers.get("ETag", "")
        if etag and seen and seen != etag:
            raise SourceChangedError(
                f"source {self.display_url} changed during the copy: ETag {seen} != {etag} (precondition failed)"
            )
        body = response.content
        if response.status_code == 200:  # the server ignored Range
            body = body[offset : offset + length]
        if len(body) != length:
            raise SourceChangedError(
                f"source {self.display_url} returned {len(body)} bytes for a {length}-byte range "
                "(precondition failed: the object changed)"
            )
        return body


def open_url_source(url: str, recorder: RetryRecorder, name: str) -> SourceObject:
    """Describe a URL source: blobs (x-ms-blob-type) go through the SDK, anything else over HTTP."""
    http = HttpObject(url, recorder)
    described = http.describe(name)
    if http.is_blob:
        described.client = blob_client_from_url(url, recorder)
        described.http = None
    return described


def describe_error(error: BaseException) -> str:
    code = error_code(error)
    return redact(f"{code}: {error}" if code else str(error))
