"""Workers honour the proxy their environment names, with both the threaded and the asynchronous blob clients.

Without one, the clients skip the HTTP libraries' per-request look at the environment (a cost per small
blob); this checks that the saving never costs a configured proxy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from azure.core.exceptions import ResourceNotFoundError

from ferry.storage.blobs import async_container_client, container_client

# Nothing listens on port 1: a request that arrives anywhere came through the proxy.
UNREACHABLE = (
    "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5a2V5a2V5;BlobEndpoint=http://127.0.0.1:1/acct;"
)


class _Proxy(BaseHTTPRequestHandler):
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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Proxy.seen = []
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        yield _Proxy.seen
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
