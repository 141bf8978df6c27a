"""A stand-in for Microsoft Entra ID's token endpoint, as workload identity uses it (protocol level, test tree).

It answers what azure-identity's WorkloadIdentityCredential sends: `POST /{tenant}/oauth2/v2.0/token` with a
client assertion (the pod's projected service account token), `grant_type=client_credentials`, the client ID and
a scope. Like Entra, it
- validates the assertion against its issuer's OpenID keys (here the local API server's service account
  issuer: its JWKS, read with the admin's credentials), its audience (api://AzureADTokenExchange) and expiry;
- looks for a federated credential of the client (application) ID naming that issuer and subject, and without
  one answers 400 with AADSTS70021 ("No matching federated identity record found for presented assertion");
- issues an RS256 access token for the scope's resource (v1 issuer https://sts.windows.net/{tenant}/, the
  principal's oid, tid, appid), valid for `token_seconds`, and publishes its key at
  `/{tenant}/discovery/v2.0/keys` for the services that check such tokens.

It serves HTTPS with a certificate of the stack's CA, which every pod trusts through its service account's
ca.crt, on the address and port the stack reserved for it (the chart's workloadIdentity.authorityHost).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from ferry.api.identity import TOKEN_AUDIENCE
from ferry_dev.tlsserver import TlsHandler, TlsServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Exchange:
    client_id: str
    subject: str
    scope: str
    granted: bool


@dataclass
class EntraStandIn:
    host: str
    port: int
    cert: Path
    key: Path
    issuer: str  # the service account issuer whose tokens it accepts as assertions
    issuer_keys: Callable[[], dict[str, Any]]  # that issuer's JWKS
    token_seconds: int = 3600
    # Federated credentials: client ID -> the (issuer, subject) pairs it accepts.
    federations: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = uuid.uuid4().hex
        # Its JWKS, encoded once: the Cosmos proxy reads it for every request it authorizes.
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._signing.public_key()))
        self._public_keys: dict[str, Any] = {"keys": [{**key, "kid": self._kid, "use": "sig", "alg": "RS256"}]}
        self._lock = threading.Lock()
        self._server = TlsServer((self.host, self.port), self._handler(), self.cert, self.key)

    @property
    def authority(self) -> str:
        return f"https://{self.host}:{self.port}/"

    def start(self) -> EntraStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def federate(self, client_id: str, subject: str) -> None:
        with self._lock:
            self.federations.setdefault(client_id, set()).add((self.issuer, subject))

    @staticmethod
    def principal(client_id: str) -> str:
        """The object ID of the identity's service principal (stable per client ID)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"entra-standin/{client_id}"))

    def public_keys(self) -> dict[str, Any]:
        return self._public_keys

    def granted(self, client_id: str) -> int:
        with self._lock:
            return sum(1 for e in self.exchanges if e.client_id == client_id and e.granted)

    # The token endpoint.

    def _token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id, assertion, scope = form.get("client_id", ""), form.get("client_assertion", ""), form.get("scope", "")
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != ASSERTION_TYPE:
            return 400, _error("unsupported_grant_type", "AADSTS70003: only client credentials with a JWT assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            keys = {k["kid"]: k for k in self.issuer_keys()["keys"]}
            public = jwt.PyJWK(keys[header["kid"]])  # the API server signs with its key's algorithm (ES256 here)
            claims = jwt.decode(
                assertion, public, algorithms=[header["alg"]], audience=TOKEN_AUDIENCE, issuer=self.issuer
            )
        except (jwt.PyJWTError, KeyError, ValueError) as error:
            return 400, _error("invalid_client", f"AADSTS50027: JWT token is invalid or malformed: {error}")
        subject = str(claims.get("sub"))
        with self._lock:
            accepted = (self.issuer, subject) in self.federations.get(client_id, set())
            self.exchanges.append(Exchange(client_id, subject, scope, accepted))
        if not accepted:
            return 400, _error(
                "invalid_request",
                "AADSTS70021: No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{self.issuer}'. Assertion Subject: '{subject}'. "
                f"Assertion Audience: '{TOKEN_AUDIENCE}'.",
            )
        now = int(time.time())
        resource = scope.split()[0].removesuffix("/.default") if scope else ""
        token = jwt.encode(
            {
                "aud": resource,
                "iss": f"https://sts.windows.net/{tenant}/",
                "tid": tenant,
                "oid": self.principal(client_id),
                "appid": client_id,
                "sub": self.principal(client_id),
                "iat": now,
                "nbf": now,
                "exp": now + self.token_seconds,
            },
            self._signing,
            algorithm="RS256",
            headers={"kid": self._kid},
        )
        body = {"token_type": "Bearer", "expires_in": self.token_seconds, "access_token": token}
        return 200, {**body, "ext_expires_in": self.token_seconds}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(TlsHandler):
            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                self.send_whole(status, [("Content-Type", "application/json")], json.dumps(payload).encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                    self._reply(*standin._token(parts[0], form))
                else:
                    self._reply(404, _error("not_found", f"no such endpoint {self.path}"))

            def do_GET(self) -> None:
                if urlsplit(self.path).path.endswith("/discovery/v2.0/keys"):
                    self._reply(200, standin.public_keys())
                else:
                    self._reply(404, _error("not_found", f"no such endpoint {self.path}"))

        return Handler


def _error(code: str, description: str) -> dict[str, Any]:
    number = description.split(":")[0].removeprefix("AADSTS")
    return {
        "error": code,
        "error_description": description,
        "error_codes": [int(number)] if number.isdigit() else [],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
