"""MongoDB wire-protocol access (Azure Cosmos DB for MongoDB, and FerretDB on the local stack): clients, the
account's check, collections, and errors told apart as Ferry's other storage errors are.

Every MongoClient is built here, so that timeouts, retryable writes and TLS are the same everywhere. The key is
the password of the account's connection string and `username` its user: the endpoint
(`mongodb://host:port/?options`) carries neither, and texts that leave Ferry go through redact().
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from ferry.storage.blobs import redact, register_secret

__all__ = [
    "MongoAccess",
    "collection_exists",
    "describe",
    "is_transient",
    "probe",
    "write_host",
]

SERVER_SELECTION_SECONDS = 10.0
SOCKET_SECONDS = 60.0
# Error codes a later try can get past: throttling (Cosmos DB's 16500 "request rate is large"), a primary stepping
# down or not yet elected, and the server's own exceeded time limits.
TRANSIENT_CODES = frozenset({16500, 189, 91, 10107, 13435, 11600, 11602, 50, 262})
AUTH_CODES = frozenset({18, 13})  # AuthenticationFailed, Unauthorized


@dataclass
class MongoAccess:
    """One MongoDB API account: its endpoint (a mongodb:// URI without user or password), user and key."""

    endpoint: str
    key: str = field(repr=False)
    username: str | None = None
    verify_tls: bool = True
    _client: MongoClient[dict[str, Any]] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        register_secret(self.key)

    def client(self) -> MongoClient[dict[str, Any]]:
        with self._lock:
            if self._client is None:
                options: dict[str, Any] = {
                    "serverSelectionTimeoutMS": int(SERVER_SELECTION_SECONDS * 1000),
                    "socketTimeoutMS": int(SOCKET_SECONDS * 1000),
                    "connectTimeoutMS": int(SERVER_SELECTION_SECONDS * 1000),
                    "retryWrites": False,  # Cosmos DB for MongoDB refuses retryable writes; Ferry retries itself
                    "tz_aware": True,
                    "appname": "ferry",
                }
                if self.username:
                    options.update(username=self.username, password=self.key)
                if not self.verify_tls:
                    options["tlsAllowInvalidCertificates"] = True
                self._client = MongoClient(self.endpoint, **options)
            return self._client

    def database(self, name: str) -> Database[dict[str, Any]]:
        return self.client()[name]

    def collection(self, database: str, name: str) -> Collection[dict[str, Any]]:
        return self.client()[database][name]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def probe(access: MongoAccess) -> None:
    """One round trip that needs the key where the server checks it; raises what the server answered."""
    access.client().admin.command("ping")
    access.client().list_database_names()


def write_host(access: MongoAccess) -> str:
    """Where writes go: the primary the server names (a Cosmos DB account's write region's host), else the
    endpoint's host (a server with no replica set, as FerretDB)."""
    hello: Mapping[str, Any] = access.client().admin.command("hello")
    primary = hello.get("primary")
    if primary:
        return str(primary)
    return urlsplit(access.endpoint).hostname or access.endpoint


def collection_exists(access: MongoAccess, database: str, name: str) -> bool:
    return name in access.database(database).list_collection_names(filter={"name": name})


def code_of(error: BaseException) -> int | None:
    return error.code if isinstance(error, OperationFailure) else None


def is_transient(error: BaseException) -> bool:
    if isinstance(error, AutoReconnect | NetworkTimeout | ServerSelectionTimeoutError | ConnectionFailure):
        return True
    return code_of(error) in TRANSIENT_CODES


def is_unauthorized(error: BaseException) -> bool:
    return code_of(error) in AUTH_CODES


def describe(error: BaseException) -> str:
    """The error as a status or Event can show it: its class, code and message, with no key in it."""
    if isinstance(error, OperationFailure):
        text = f"{type(error).__name__} (code {error.code}): {error.details.get('errmsg') if error.details else error}"
    elif isinstance(error, PyMongoError):
        text = f"{type(error).__name__}: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    return redact(text)
