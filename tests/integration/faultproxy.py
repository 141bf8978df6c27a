"""A fault-injecting HTTP proxy in front of Azurite, on the address pods reach (ferry_dev.network.listen_host).

It forwards every request unchanged (Host included, so Azurite's same-instance checks still hold)
and can answer 503 ServerBusy to the first N requests matching a predicate, delay requests, or run
a hook before forwarding a request (to change the world between a client's decision and its effect).
It also logs each request (method, path with query) so tests can count what a worker sent.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ferry_dev.network import listen_host

Match = Callable[[str, str], bool]  # (method, path?query) -> bool
Hook = Callable[[str, str, dict[str, str]], None]  # (method, path?query, headers), before forwarding

BUSY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    b"<Message>The server is busy.</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.log: list[tuple[str, str]] = []
        self.busy_left = 0
        self.busy_match: Match = lambda method, path: True
        self.delay = 0.0
        self.delay_match: Match = lambda method, path: False
        self.hook: Hook | None = None
        self.headers_log: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((listen_host(), 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def endpoint(self, account: str) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}/{account}"

    def fail_next(self, count: int, match: Match) -> None:
        with self._lock:
            self.busy_left, self.busy_match = count, match

    def requests(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.log if m == method and fragment in p)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {key.lower(): value for key, value in self.headers.items()}
                with proxy._lock:
                    proxy.log.append((self.command, self.path))
                    proxy.headers_log.append(headers)
                    hook = proxy.hook
                    busy = proxy.busy_left > 0 and proxy.busy_match(self.command, self.path)
                    if busy:
                        proxy.busy_left -= 1
                    delay = proxy.delay if proxy.delay_match(self.command, self.path) else 0.0
                if busy:
                    self.send_response(503, "Server Busy")
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(BUSY)))
                    self.end_headers()
                    self.wfile.write(BUSY)
                    return
                if hook is not None:
                    hook(self.command, self.path, headers)
                if delay:
                    time.sleep(delay)
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                            self.send_header(key, value)
                    length = response.getheader("Content-Length", "0") if self.command == "HEAD" else len(payload)
                    self.send_header("Content-Length", str(length))  # a HEAD answer tells the blob's length
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    conn.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        return Handler
