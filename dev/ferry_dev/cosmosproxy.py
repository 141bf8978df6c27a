"""A fault-injecting HTTPS proxy in front of cosmosdb-server, on the address pods reach (network.listen_host).

It forwards every request unchanged and can:
- answer the first N requests matching a predicate with a given status (429 with
  x-ms-retry-after-ms for throttling, 401 substatus 5202 for "local authorization is disabled", ...);
- act as a serverless account: refuse creating databases or containers with a throughput offer,
  with the service's message;
- authorize as an account with Microsoft Entra data-plane RBAC does (EntraCheck): key-signed requests
  refused, `type=aad` tokens checked for issuer, audience, expiry and a role of their principal;
- rewrite the database account response (GET /): its writable and readable locations always point
  at the proxy itself, so the SDK keeps routing through it, and their region names can be changed
  at runtime (a failover from "West US" to "East US", say).
It logs every request (method, path, headers) so tests can count what a client sent.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from ferry_dev.emulators import find_node_bin
from ferry_dev.network import listen_host
from ferry_dev.tlsserver import TlsHandler, TlsServer

Match = Callable[[str, str, dict[str, str]], bool]  # (method, path, lower-cased headers) -> bool
Reply = tuple[int, dict[str, str], bytes]  # status, headers, body

OFFER_HEADERS = ("x-ms-offer-throughput", "x-ms-cosmos-offer-autopilot-settings", "x-ms-offer-type")
SERVERLESS_MESSAGE = "Shared throughput database creation is not supported for serverless accounts."


def _certificate() -> tuple[Path, Path]:
    """cosmosdb-server's own self-signed certificate and key, shipped with the npm package."""
    package = find_node_bin("cosmosdb-server").resolve().parent.parent
    return package / "cert.pem", package / "key.pem"


def any_request(method: str, path: str, headers: dict[str, str]) -> bool:
    return True


def is_query(headers: dict[str, str]) -> bool:
    return headers.get("x-ms-documentdb-isquery", "").lower() == "true" or "query+json" in headers.get(
        "content-type", ""
    )


def item_writes(method: str, path: str, headers: dict[str, str]) -> bool:
    """Creates, upserts and replaces of items, outside Ferry's own state database."""
    return method in ("POST", "PUT") and "/docs" in path and "__datatransferstate" not in path and not is_query(headers)


@dataclass
class Fault:
    status: int
    count: int
    match: Match
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""


@dataclass
class EntraCheck:
    """Microsoft Entra authorization as an account with data-plane RBAC does it: a request signed with the key
    is refused (401 substatus 5202) unless `local_auth`; a `type=aad` request needs a token of `keys`' issuer
    for the account's resource (`audience`), unexpired, whose principal (`oid`) holds a data-plane role
    (`principals`), else 401, or 403 substatus 5301 naming the principal and the action."""

    keys: Callable[[], dict[str, Any]]  # the JWKS of the token issuer
    audience: str  # https://HOST, the scope's resource (the SDK drops the port)
    account: str = "localaccount"
    principals: set[str] = field(default_factory=set)
    local_auth: bool = False

    def refusal(self, headers: dict[str, str]) -> Fault | None:
        auth = dict(p.split("=", 1) for p in unquote(headers.get("authorization", "")).split("&") if "=" in p)
        if auth.get("type") != "aad":
            if self.local_auth:
                return None
            message = "Local Authorization is disabled. Use an AAD token to authorize all requests."
            return Fault(401, 1, any_request, {"x-ms-substatus": "5202"}, message)
        token = auth.get("sig", "")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys()["keys"] if k.get("kid") == kid)
            # A few seconds of clock skew, as a service allows (Entra's own tokens are checked with minutes).
            claims = jwt.decode(token, jwt.PyJWK(key), algorithms=["RS256"], audience=self.audience, leeway=5)
        except (jwt.PyJWTError, StopIteration, ValueError) as error:
            return Fault(401, 1, any_request, {}, f"The input authorization token can't serve the request: {error}")
        principal = str(claims.get("oid"))
        if principal not in self.principals:
            message = (
                f"Request blocked by Auth {self.account} : Request is blocked because principal [{principal}] does "
                "not have required RBAC permissions to perform action "
                "[Microsoft.DocumentDB/databaseAccounts/readMetadata] on resource [/]. "
                "Learn more: https://aka.ms/cosmos-native-rbac."
            )
            return Fault(403, 1, any_request, {"x-ms-substatus": "5301"}, message)
        return None


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class CosmosProxy:
    def __init__(self, upstream: str, port: int = 0, host: str | None = None) -> None:
        host = host or listen_host()
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 443
        self.log: list[Logged] = []
        self.faults: list[Fault] = []
        self.injected = 0
        self.serverless = False
        self.entra: EntraCheck | None = None  # set: the account authorizes as one with Entra RBAC does
        self.write_regions: list[str] | None = None
        self.read_regions: list[str] | None = None
        self._lock = threading.Lock()
        self._upstream_tls = ssl.create_default_context()
        self._upstream_tls.check_hostname = False
        self._upstream_tls.verify_mode = ssl.CERT_NONE  # cosmosdb-server's certificate is self-signed
        self._server = TlsServer((host, port), self._handler(), *_certificate())
        self.port = self._server.port
        self.endpoint = f"https://{host}:{self.port}/"

    # Configuration, callable while clients run.

    def fail_next(self, count: int, status: int, match: Match = any_request, message: str = "", **headers: str) -> None:
        with self._lock:
            self.faults.append(
                Fault(status, count, match, {k.replace("_", "-"): v for k, v in headers.items()}, message)
            )

    def throttle_next(self, count: int, retry_after_ms: int = 50, match: Match = item_writes) -> None:
        self.fail_next(
            count,
            429,
            match,
            "Request rate is large. More Request Units may be needed, so no changes were made.",
            x_ms_retry_after_ms=str(retry_after_ms),
            x_ms_substatus="3200",
        )

    def set_regions(self, write: list[str] | None, read: list[str] | None = None) -> None:
        with self._lock:
            self.write_regions, self.read_regions = write, read

    def requests(self, method: str, fragment: str = "") -> list[Logged]:
        with self._lock:
            return [e for e in self.log if e.method == method and fragment in e.path]

    def start(self) -> CosmosProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # Request handling.

    def _decide(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.log.append(Logged(method, path, headers))
            if self.entra is not None and (refused := self.entra.refusal(headers)) is not None:
                return refused
            if self.serverless and method == "POST" and any(h in headers for h in OFFER_HEADERS):
                return Fault(400, 1, any_request, {}, SERVERLESS_MESSAGE)
            for fault in self.faults:
                if fault.count > 0 and fault.match(method, path, headers):
                    fault.count -= 1
                    self.injected += 1
                    return fault
        return None

    def exchange(
        self, method: str, path: str, raw_headers: dict[str, str], headers: dict[str, str], body: bytes | None
    ) -> Reply:
        """Answer one request (headers: lower-cased copy of raw_headers); here by forwarding it upstream.

        Subclasses answer some requests themselves or look at what passes through.
        """
        return self.forward(method, path, raw_headers, body)

    def forward(self, method: str, path: str, raw_headers: dict[str, str], body: bytes | None) -> Reply:
        conn = http.client.HTTPSConnection(
            self.upstream_host, self.upstream_port, timeout=60, context=self._upstream_tls
        )
        try:
            conn.request(method, path, body=body, headers=raw_headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        skip = ("transfer-encoding", "content-length", "connection")
        return response.status, {k: v for k, v in response.getheaders() if k.lower() not in skip}, payload

    def _rewrite_account(self, payload: bytes) -> bytes:
        account: dict[str, Any] = json.loads(payload)
        with self._lock:
            names = {"writableLocations": self.write_regions, "readableLocations": self.read_regions}
        for key, wanted in names.items():
            current = [str(loc.get("name", "")) for loc in account.get(key, [])]
            account[key] = [{"name": n, "databaseAccountEndpoint": self.endpoint} for n in (wanted or current)]
        return json.dumps(account).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(TlsHandler):
            def _forward(self) -> None:
                body = self.read_body()
                headers = {key.lower(): value for key, value in self.headers.items()}
                fault = proxy._decide(self.command, self.path, headers)
                if fault is not None:
                    codes = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests"}
                    code = codes.get(fault.status, "Error")
                    payload = json.dumps({"code": code, "message": fault.message}).encode()
                    self.send_whole(
                        fault.status, {"Content-Type": "application/json", **fault.headers}.items(), payload
                    )
                    return
                status, reply_headers, payload = proxy.exchange(
                    self.command, self.path, dict(self.headers.items()), headers, body
                )
                if self.command == "GET" and urlsplit(self.path).path in ("", "/") and status == 200:
                    payload = proxy._rewrite_account(payload)
                self.send_whole(status, reply_headers.items(), payload)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = do_PATCH = _forward

        return Handler
