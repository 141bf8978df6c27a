"""Azure Blob SDK access: clients, credential-free URLs, read SAS, and redaction of secrets.

Every client is built here so that retries, timeouts and the recording of retried responses are
the same everywhere; nothing else in Ferry imports azure.storage.blob client constructors (blobaccount.BlobAccount
chooses between the connection string and the token credential ones).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
    generate_blob_sas,
)
from azure.storage.blob.aio import ContainerClient as AsyncContainerClient
from azure.storage.blob.aio import ExponentialRetry as AsyncExponentialRetry
from requests.adapters import HTTPAdapter

from ferry.kube.manifests import STORAGE_CA_ENV
from ferry.retry import TRANSIENT_STATUSES

DATA_BLOCK_SIZE = 256 * 1024
# Connections kept per host: a worker has at most parallelism (64) requests in flight, plus its listing
# and its checkpoint writes.
POOL_SIZE = 72

_SECRETS: set[str] = set()
_SECRETS_LONGEST_FIRST: tuple[str, ...] = ()  # what redact() replaces, kept sorted as secrets arrive
_SECRETS_LOCK = threading.Lock()

_SAS_FIELDS = r"(?i)\b(sig|se|sp|sv|st|skoid|sktid|ske|sks|skv|spr|sr|srt|ss)"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]*"), r"\1=***"),
    # SAS fields, also percent-encoded (a URL quoted inside another's query string).
    (re.compile(_SAS_FIELDS + r"(?:=|%3D)(?:(?!%26)[^&\s'\"<>])*"), r"\1=***"),
    (re.compile(r"(?i)(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*"), r"\1?***"),
    (re.compile(r"(?i)(Authorization['\"]?\s*[:=]\s*['\"]?)(SharedKey|Bearer|Basic)?\s*[^\s'\",}]+"), r"\1***"),
    (re.compile(r"(?i)(x-ms-copy-source['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1***"),
]


def register_secret(value: str) -> None:
    """Remember a secret value (an account key, a SAS token) so redact() removes it verbatim."""
    global _SECRETS_LONGEST_FIRST
    if len(value) >= 8:
        with _SECRETS_LOCK:
            if value not in _SECRETS:
                _SECRETS.add(value)
                _SECRETS_LONGEST_FIRST = tuple(sorted(_SECRETS, key=len, reverse=True))


def redact(text: str) -> str:
    """Remove keys, SAS tokens and URL query strings from text meant for status, Events or logs."""
    for secret in _SECRETS_LONGEST_FIRST:
        text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def credential_free_url(url: str) -> str:
    """The URL without query string, fragment or user info: safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class ConnectionInfo:
    account_name: str
    account_key: str | None
    blob_endpoint: str


def parse_connection_string(connection_string: str) -> ConnectionInfo:
    fields: dict[str, str] = {}
    for part in connection_string.split(";"):
        if "=" in part:
            name_, _, value = part.partition("=")
            fields[name_.strip().lower()] = value.strip()
    name = fields.get("accountname", "")
    key = fields.get("accountkey")
    if key:
        register_secret(key)
    sas = fields.get("sharedaccesssignature")
    if sas:
        register_secret(sas)
    scheme = fields.get("defaultendpointsprotocol", "https")
    suffix = fields.get("endpointsuffix", "core.windows.net")
    endpoint = fields.get("blobendpoint") or f"{scheme}://{name}.blob.{suffix}"
    return ConnectionInfo(account_name=name, account_key=key, blob_endpoint=endpoint.rstrip("/"))


class RetryRecorder:
    """Sees every response of the SDK's retry loop and keeps a redacted note of transient ones.

    The service records its own retries in x-ms-copy-status-description; Ferry records the retries
    its worker makes the same way, in statusDescription.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.last: str | None = None
        self.last_at = 0.0

    def note(self, text: str) -> None:
        with self._lock:
            self.count += 1
            self.last = redact(text)
            self.last_at = time.monotonic()

    def hook(self, pipeline_response: Any) -> None:
        response = pipeline_response.http_response
        status = int(getattr(response, "status_code", 0) or 0)
        if status in TRANSIENT_STATUSES:
            code = response.headers.get("x-ms-error-code") or getattr(response, "reason", "") or ""
            request = pipeline_response.http_request
            self.note(
                f"transient {status} {code} on {request.method} "
                f"{credential_free_url(request.url)}; retrying with backoff"
            )


# Backoff 0.5 s, 2.5 s, 4.5 s, 8.5 s, 16.5 s: bounded, a little under half a minute in all.
_BACKOFF: dict[str, Any] = {"initial_backoff": 0.5, "random_jitter_range": 0.25}  # floats work; stubs say int


def _retry_policy() -> ExponentialRetry:
    return ExponentialRetry(increment_base=2, retry_total=5, **_BACKOFF)


class PooledTransport(RequestsTransport):  # type: ignore[misc]  # azure-core re-exports it untyped
    """azure-core's requests transport with a connection pool as large as a worker's concurrency.

    requests keeps 10 connections per host by default: with more requests in flight, every extra one
    opens a connection and throws it away afterwards, which costs the worker (and the service) a TCP
    handshake per request when many small blobs are copied.
    """

    def _init_session(self, session: requests.Session) -> None:
        super()._init_session(session)
        for prefix in self._protocols:
            adapter = session.get_adapter(prefix)
            if isinstance(adapter, HTTPAdapter):
                adapter.init_poolmanager(connections=4, maxsize=POOL_SIZE)


# What the HTTP libraries look up in the environment on every request when allowed to: proxies, and a netrc
# file (credentials for hosts it names; storage requests carry their own).
_ENV_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC")
# CA bundles requests would also take from there; given to both transports once instead.
_CA_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _proxies_configured() -> bool:
    """Whether the environment names a proxy (or a netrc file). Without one, the per-request look at the
    whole environment only costs CPU, which counts when many small blobs move."""
    return any(os.environ.get(name) or os.environ.get(name.lower()) for name in _ENV_PROXIES)


def _ca_bundle() -> str | None:
    # Ferry's own first: a bundle for storage endpoints behind a private CA (the chart's workers.storageCAFile),
    # which leaves the Cosmos DB and Entra clients on the image's bundle.
    return next((os.environ[name] for name in (STORAGE_CA_ENV, *_CA_BUNDLES) if os.environ.get(name)), None)


def _client_kwargs(recorder: RetryRecorder | None) -> dict[str, Any]:
    connection: dict[str, Any] = {
        "connection_timeout": 20,
        "read_timeout": 120,
        # azure-core moves bodies through the socket in 4 KiB pieces by default; block-sized bodies
        # then cost more Python CPU than bytes on the wire, so use larger pieces.
        "connection_data_block_size": DATA_BLOCK_SIZE,
    }
    if bundle := _ca_bundle():
        connection["connection_verify"] = bundle
    kwargs: dict[str, Any] = {
        "retry_policy": _retry_policy(),
        "max_single_put_size": 4 * 1024 * 1024,
        "transport": PooledTransport(use_env_settings=_proxies_configured(), **connection),
        **connection,
    }
    if recorder is not None:
        kwargs["raw_response_hook"] = recorder.hook
    return kwargs


def _async_kwargs(recorder: RetryRecorder | None) -> dict[str, Any]:
    kwargs = {k: v for k, v in _client_kwargs(recorder).items() if k != "transport"}
    # aiohttp, when trusting the environment, looks up proxies and parses ~/.netrc on an executor thread for
    # every request: the same cost as requests' above, plus a thread hop per small blob.
    kwargs["use_env_settings"] = _proxies_configured()
    kwargs["retry_policy"] = AsyncExponentialRetry(increment_base=2, retry_total=5, **_BACKOFF)
    return kwargs


class InvalidConnectionString(ValueError):
    """A storage connection string the SDK cannot use (a permanent error: fix the Secret)."""


def service_client(connection_string: str, recorder: RetryRecorder | None = None) -> BlobServiceClient:
    info = parse_connection_string(connection_string)  # registers the key for redaction
    try:
        return BlobServiceClient.from_connection_string(connection_string, **_client_kwargs(recorder))
    except ValueError as error:
        name = f" of account {info.account_name}" if info.account_name else ""
        raise InvalidConnectionString(
            f"the storage connection string{name} is not usable: {redact(str(error))}; fix it in its Secret"
        ) from None


def container_client(connection_string: str, container: str, recorder: RetryRecorder | None = None) -> ContainerClient:
    return service_client(connection_string, recorder).get_container_client(container)


def token_service_client(
    endpoint: str, credential: TokenCredential, recorder: RetryRecorder | None = None
) -> BlobServiceClient:
    """The client of an account reached by an Entra token credential (its blob endpoint, no key)."""
    return BlobServiceClient(endpoint, credential=credential, **_client_kwargs(recorder))


def async_container_client(
    connection_string: str, container: str, recorder: RetryRecorder | None = None
) -> AsyncContainerClient:
    """The asynchronous (aiohttp) client of a container, with the same retries, timeouts and recording."""
    info = parse_connection_string(connection_string)  # registers the key for redaction
    kwargs = _async_kwargs(recorder)
    try:
        return AsyncContainerClient.from_connection_string(connection_string, container, **kwargs)
    except ValueError as error:
        name = f" of account {info.account_name}" if info.account_name else ""
        raise InvalidConnectionString(
            f"the storage connection string{name} is not usable: {redact(str(error))}; fix it in its Secret"
        ) from None


def async_token_container_client(
    endpoint: str, container: str, credential: AsyncTokenCredential, recorder: RetryRecorder | None = None
) -> AsyncContainerClient:
    """async_container_client's counterpart for an account reached by an Entra token credential."""
    return AsyncContainerClient(endpoint, container, credential=credential, **_async_kwargs(recorder))


def blob_client_from_url(url: str, recorder: RetryRecorder | None = None) -> BlobClient:
    """A client for one blob URL; its SAS (if any) is the credential."""
    query = urlsplit(url).query
    if query:
        register_secret(query)
    return BlobClient.from_blob_url(url, **_client_kwargs(recorder))


def blob_url(client: BlobClient) -> str:
    """The blob's URL without credentials."""
    return credential_free_url(client.url)


def read_sas_url(client: BlobClient, account_key: str, lifetime: timedelta) -> str:
    """The blob's URL with a read-only SAS, for the service to read a source of another account.

    The returned URL is a secret: it is passed to the service and never reported or logged.
    """
    now = datetime.now(UTC)
    token = generate_blob_sas(
        account_name=client.account_name or "",
        container_name=client.container_name,
        blob_name=client.blob_name,
        account_key=account_key,
        permission=BlobSasPermissions(read=True),
        start=now - timedelta(minutes=15),
        expiry=now + lifetime,
    )
    # Not registered: redact() finds its signature by pattern, while one registered token per blob would make
    # the registry, and the cost of every redaction, grow with the copy.
    return f"{credential_free_url(client.url)}?{token}"


def quote_blob_name(name: str) -> str:
    return quote(name, safe="/~")


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying later: 5xx, throttling, timeouts, connection failures."""
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(error, HttpResponseError):
        return (error.status_code or 0) in TRANSIENT_STATUSES
    return isinstance(error, TimeoutError | ConnectionError)


def error_code(error: BaseException) -> str:
    """The storage error code (x-ms-error-code) of an SDK error, or ''."""
    code = getattr(error, "error_code", None)
    if code:
        return str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum prints its Python name
    response = getattr(error, "response", None)
    if response is not None:
        return str(response.headers.get("x-ms-error-code", ""))
    return ""


def status_code(error: BaseException) -> int:
    return int(getattr(error, "status_code", 0) or 0)


def describe(error: BaseException) -> str:
    """A short, redacted, one-line description of an SDK error."""
    status = status_code(error)
    code = error_code(error)
    lines = str(error).splitlines()
    message = lines[0] if lines else type(error).__name__
    head = " ".join(part for part in (str(status) if status else "", code) if part)
    return redact(f"{head}: {message}" if head else message)
