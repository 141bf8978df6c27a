"""The HTTPS servers of the local stack's stand-ins and proxies: threaded, with each TLS handshake in its
connection's own thread, and whole replies of a known length."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Hop-by-hop or length headers of a forwarded reply, which the reply sets for itself.
_OWN_HEADERS = ("transfer-encoding", "content-length", "connection")


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when a worker opens its pool at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], cert: Path, key: Path) -> None:
        super().__init__(address, handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        # The handshake happens in the connection's own thread (TlsHandler.setup): done in accept(), one slow
        # client on a loaded machine held up every other, and a pod's connect timed out behind it.
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class TlsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.request.settimeout(30)  # a client that never finishes its handshake
        self.request.do_handshake()
        self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def send_whole(self, status: int, headers: Iterable[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _OWN_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
