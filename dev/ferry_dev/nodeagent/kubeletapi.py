"""The part of the kubelet's HTTPS API that `kubectl logs` reaches through the API server.

GET /containerLogs/{namespace}/{pod}/{container} with tailLines, limitBytes and follow. Like the kubelet,
it serves TLS with the node's serving certificate and accepts only clients with a certificate of the
cluster's CA (the API server's kubelet client).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ferry_dev.pki import Pair

LogLocator = Callable[[str, str, str | None], Path | None]
IsRunning = Callable[[str, str], bool]
FOLLOW_POLL = 0.2


class KubeletAPI:
    def __init__(self, serving: Pair, ca: Path, logs: LogLocator, running: IsRunning, host: str = "127.0.0.1") -> None:
        self._logs = logs
        self._running = running
        self._stopping = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(serving.cert), str(serving.key))
        context.load_verify_locations(str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kubelet-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet: the stack has its own logs
                return

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) not in (3, 4) or parts[0] != "containerLogs":
                    self.send_error(404, "not found")
                    return
                namespace, pod = parts[1], parts[2]
                container = parts[3] if len(parts) == 4 else None
                path = api._logs(namespace, pod, container)
                if path is None or not path.exists():
                    self.send_error(404, f"no logs of {namespace}/{pod}")
                    return
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                data = path.read_bytes()
                if "tailLines" in query:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else b""
                if "limitBytes" in query:
                    data = data[: int(query["limitBytes"])]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)
                    if query.get("follow") == "true":
                        self._follow(path, namespace, pod)

            def _follow(self, path: Path, namespace: str, pod: str) -> None:
                offset = path.stat().st_size
                while not api._stopping.is_set():
                    size = path.stat().st_size
                    if size > offset:
                        with path.open("rb") as log:
                            log.seek(offset)
                            chunk = log.read(size - offset)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        offset = size
                    elif not api._running(namespace, pod):
                        return
                    time.sleep(FOLLOW_POLL)

        return Handler
