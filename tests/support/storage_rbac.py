"""Azure RBAC on a storage account's data plane, in front of an Azurite in OAuth mode (which checks a bearer token's
issuer, audience and lifetime but no role assignment).

An HTTPS reverse proxy that, like the Blob service of an account with role assignments:
- checks a bearer token's signature against the token issuer's keys (the Entra stand-in's JWKS) and its audience;
- lets through the principals (`oid`) that hold a Storage Blob Data role (`granted`), and answers the others 403
  AuthorizationPermissionMismatch, the service's code for a token without the role;
- forwards everything else unchanged: requests signed by a key or a SAS (the service authorizes those itself),
  and Azurite's own reads of a copy source.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from ferry_dev.tlsserver import TlsHandler, TlsServer

STORAGE_AUDIENCE = "https://storage.azure.com"
MISMATCH = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
    b"<Message>This request is not authorized to perform this operation using this permission.</Message></Error>"
)


class StorageRbac:
    def __init__(
        self,
        upstream: str,
        host: str,
        cert: Path,
        key: Path,
        ca: Path,
        keys: Callable[[], dict[str, Any]],
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 443)
        self.keys = keys
        self.granted: set[str] = set()  # principals (oid) holding a Storage Blob Data role
        self.refused: list[str] = []  # the principals refused, in order
        self._upstream_context = ssl.create_default_context(cafile=str(ca))
        self._upstream_context.check_hostname = False  # Azurite's certificate names the bridge address
        self._server = TlsServer((host, 0), self._handler(), cert, key)
        self.host, self.port = host, self._server.port

    def endpoint(self, account: str) -> str:
        return f"https://{self.host}:{self.port}/{account}"

    def start(self) -> StorageRbac:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def refusal(self, authorization: str) -> str | None:
        """The principal to refuse, or None to forward the request."""
        if not authorization.lower().startswith("bearer "):
            return None
        token = authorization.split(" ", 1)[1]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys()["keys"] if k.get("kid") == kid)
            claims = jwt.decode(token, jwt.PyJWK(key), algorithms=["RS256"], audience=STORAGE_AUDIENCE, leeway=5)
        except (jwt.PyJWTError, StopIteration, ValueError):
            return "?"
        principal = str(claims.get("oid"))
        return None if principal in self.granted else principal

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(TlsHandler):
            def _forward(self) -> None:
                body = self.read_body()
                refused = proxy.refusal(self.headers.get("Authorization", ""))
                if refused is not None:
                    proxy.refused.append(refused)
                    headers = [
                        ("Content-Type", "application/xml"),
                        ("x-ms-error-code", "AuthorizationPermissionMismatch"),
                    ]
                    self.send_whole(403, headers, MISMATCH)
                    return
                connection = http.client.HTTPSConnection(*proxy.upstream, context=proxy._upstream_context, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = connection.getresponse()
                    payload = response.read()
                    self.send_whole(response.status, response.getheaders(), payload)
                finally:
                    connection.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = do_PATCH = _forward

        return Handler
