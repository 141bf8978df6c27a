"""Workers honour the proxy and the CA bundle their environment names, with both the threaded and the asynchronous
blob clients.

Without a proxy, the clients skip the HTTP libraries' per-request look at the environment (a cost per small
blob); this checks that the saving never costs a configured proxy or CA bundle.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from azure.core.exceptions import ResourceNotFoundError

from ferry.storage.blobs import async_container_client, container_client
from ferry_dev.pki import Authority

# Nothing listens on port 1: a request that arrives anywhere came through the proxy.
UNREACHABLE = (
    "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5a2V5a2V5;BlobEndpoint=http://127.0.0.1:1/acct;"
)


class _NotFound(BaseHTTPRequestHandler):
    """Answers every HEAD as the service does for a missing blob, and records the paths asked for."""

    seen: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.seen.append(self.path)
        self.send_response(404)
        self.send_header("x-ms-error-code", "BlobNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)  # a proxy that answers itself
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NotFound.seen = []
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        yield _NotFound.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_threaded_client_goes_through_the_proxy(proxy: list[str]) -> None:
    with pytest.raises(ResourceNotFoundError):
        container_client(UNREACHABLE, "box").get_blob_client("a/b").get_blob_properties()
    assert proxy == ["http://127.0.0.1:1/acct/box/a/b"]


def test_the_asynchronous_client_goes_through_the_proxy(proxy: list[str]) -> None:
    async def look() -> None:
        async with async_container_client(UNREACHABLE, "box") as box:
            await box.get_blob_client("a/b").get_blob_properties()

    with pytest.raises(ResourceNotFoundError):
        asyncio.run(look())
    assert proxy == ["http://127.0.0.1:1/acct/box/a/b"]


@pytest.fixture
def tls_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A TLS endpoint whose certificate only the CA in REQUESTS_CA_BUNDLE vouches for; no proxy configured."""
    authority = Authority(tmp_path)
    pair = authority.issue("server", "127.0.0.1", hosts=["127.0.0.1"], server=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NotFound.seen = []
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(authority.cert))
    try:
        yield (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5a2V5a2V5;"
            f"BlobEndpoint=https://127.0.0.1:{server.server_address[1]}/acct;"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_both_clients_trust_the_ca_bundle_the_environment_names(tls_service: str) -> None:
    with pytest.raises(ResourceNotFoundError):  # the answer arrived: the certificate was trusted
        container_client(tls_service, "box").get_blob_client("a/b").get_blob_properties()

    async def look() -> None:
        async with async_container_client(tls_service, "box") as box:
            await box.get_blob_client("a/b").get_blob_properties()

    with pytest.raises(ResourceNotFoundError):
        asyncio.run(look())
    assert _NotFound.seen == ["/acct/box/a/b", "/acct/box/a/b"]
