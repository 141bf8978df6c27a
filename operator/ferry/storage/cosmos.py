"""Azure Cosmos DB SDK access: clients, account probing and regions, containers, items, throttling.

Every CosmosClient is built here so that retries (429s honoured with their retry-after), TLS
verification, connection pooling and the counting of throttled responses are the same everywhere;
nothing else in Ferry imports the azure.cosmos client constructors.

Texts that leave Ferry (status, Events, logs) go through redact(): account keys never appear.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import requests
import urllib3
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError
from azure.cosmos.partition_key import NonePartitionKeyValue
from urllib3.util.ssl_ import create_urllib3_context

from ferry.retry import TRANSIENT_STATUSES
from ferry.storage.blobs import redact, register_secret

__all__ = [
    "SYSTEM_PROPERTIES",
    "AccountRegions",
    "AccountUnauthorized",
    "AccountUnreachable",
    "CosmosAccess",
    "CosmosAccessError",
    "InvalidAccountKey",
    "change_feed_now",
    "change_feed_page",
    "container_properties",
    "count_items",
    "describe",
    "feed_ranges",
    "is_transient",
    "partition_key_paths",
    "partition_key_value",
    "probe",
    "query_page",
    "read_account_regions",
    "redact",
    "status_code",
    "strip_system",
    "sub_status",
    "throttled_requests",
    "unique_key_paths",
]

# Properties the service adds to every item (and _lsn to change feed items); they are not part of its content.
SYSTEM_PROPERTIES = frozenset({"_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"})

# The built-in data-plane role that lets an identity read and write items (Cosmos DB's RBAC, not Azure RBAC).
DATA_CONTRIBUTOR = "Cosmos DB Built-in Data Contributor"
DATA_CONTRIBUTOR_ID = "00000000-0000-0000-0000-000000000002"

# Substatus of 401 when the account refuses keys altogether ("Local Authorization is disabled").
LOCAL_AUTH_DISABLED_SUBSTATUS = 5202

# The SDK honours x-ms-retry-after-ms on 429 up to this many attempts and this much waiting per
# request; beyond that the error surfaces and callers retry the operation themselves.
THROTTLE_RETRIES = 20
THROTTLE_WAIT_SECONDS = 60
POOL_SIZE = 64  # at least the largest write pool, so threads never queue for a connection


class _ThrottleCounter:
    """Counts 429 responses seen by any client of this process (each attempt, retried or not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def hook(self, pipeline_response: Any) -> None:
        status = int(getattr(pipeline_response.http_response, "status_code", 0) or 0)
        if status == 429:
            with self._lock:
                self.count += 1


_THROTTLED = _ThrottleCounter()


def throttled_requests() -> int:
    """Throttled (429) responses observed by this process so far, for metrics and status."""
    return _THROTTLED.count


class CosmosAccessError(Exception):
    """The account cannot be used; the message is safe to show."""


class AccountUnreachable(CosmosAccessError):
    pass


class AccountUnauthorized(CosmosAccessError):
    pass


class IdentityNotFederated(AccountUnauthorized):
    """Entra refused to exchange the pod's token for the account's workload identity."""


class AccountForbidden(AccountUnauthorized):
    """The workload identity has no Cosmos DB data-plane role on the account (403, substatus 5301)."""


class InvalidAccountKey(CosmosAccessError):
    """The key cannot be an account key at all (the SDK could not even sign a request with it): permanent."""


def check_key(key: str) -> None:
    """Raise InvalidAccountKey unless the SDK can decode `key` (base64) to sign with it; never quotes the key."""
    if not key.strip():
        raise InvalidAccountKey("the account key is empty")
    try:
        base64.b64decode(key)  # as the SDK decodes it: characters outside the alphabet are skipped
    except (binascii.Error, ValueError) as error:
        why = "it holds characters other than ASCII" if not key.isascii() else f"{error}".split(":")[0]
        raise InvalidAccountKey(f"the account key is not valid base64 ({why})") from None


class CosmosAccess:
    """An account's endpoint and key (or Entra token credential), and one shared, lazily built client
    (thread-safe)."""

    def __init__(
        self, endpoint: str, key: str | None = None, verify_tls: bool = True, credential: TokenCredential | None = None
    ) -> None:
        if key is not None:
            register_secret(key)
            check_key(key)
        elif credential is None:
            raise ValueError("an account key or a token credential is needed")
        self.endpoint = endpoint
        self.key = key
        self.credential = credential
        self.verify_tls = verify_tls
        self._lock = threading.Lock()
        self._client: CosmosClient | None = None

    def __repr__(self) -> str:
        return f"CosmosAccess(endpoint={self.endpoint!r}, verify_tls={self.verify_tls})"

    def client(self) -> CosmosClient:
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self) -> CosmosClient:
        session = requests.Session()
        adapter = (
            requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
            if self.verify_tls
            else _UnverifiedAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        kwargs: dict[str, Any] = {
            "transport": RequestsTransport(session=session, session_owner=True),
            "retry_throttle_total": THROTTLE_RETRIES,
            "retry_throttle_backoff_max": THROTTLE_WAIT_SECONDS,
            "retry_total": 3,  # connection-level retries (refused, reset); 429s use the settings above
            "retry_connect": 3,
            "retry_read": 3,
            "connection_timeout": 10,
            "read_timeout": 60,
            "raw_response_hook": _THROTTLED.hook,
        }
        if not self.verify_tls:
            kwargs["connection_verify"] = False  # only for emulators with self-signed certificates
            # The user asked for it in the spec (insecureSkipTLSVerify); a warning per request would drown the log.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        # The constructor reads the database account: unreachable or unauthorized accounts fail here.
        secret: str | TokenCredential | None = self.key if self.key is not None else self.credential
        assert secret is not None  # checked when made
        return CosmosClient(self.endpoint, secret, **kwargs)

    def database(self, name: str) -> DatabaseProxy:
        return self.client().get_database_client(name)

    def container(self, database: str, container: str) -> ContainerProxy:
        return self.database(database).get_container_client(container)


class _UnverifiedAdapter(requests.adapters.HTTPAdapter):
    """Connections without certificate checks (insecureSkipTLSVerify) share one TLS context.

    Without one, urllib3 builds a context for every new connection and loads the system's CA bundle into
    it (tens of milliseconds of CPU), which dominates on servers that close connections after each
    response, as the local emulator does.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        context.check_hostname = False
        kwargs["ssl_context"] = context
        super().init_poolmanager(*args, **kwargs)


def status_code(error: BaseException) -> int:
    return int(getattr(error, "status_code", 0) or 0)


def sub_status(error: BaseException) -> int:
    return int(getattr(error, "sub_status", 0) or 0)


def describe(error: BaseException) -> str:
    """A short, redacted, one-line description of an SDK error."""
    status, sub = status_code(error), sub_status(error)
    text = str(getattr(error, "message", "") or error) or type(error).__name__
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())[:400]
    head = f"{status}" + (f"/{sub}" if sub else "") if status else ""
    return redact(f"{head}: {line}" if head else line)


# What the SDK raises, before any request, for an id Cosmos DB forbids (azure.cosmos._base._validate_resource).
_SDK_ID_REFUSALS = ("Id contains illegal chars", "Id ends with a space or newline")


def is_invalid_resource_name(error: BaseException) -> bool:
    """Whether the SDK refused a database or container id: no request was made, and none ever will succeed."""
    return isinstance(error, ValueError) and str(error).startswith(_SDK_ID_REFUSALS)


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying later: throttling, timeouts, 5xx, connection failures."""
    if isinstance(error, ServiceRequestError | ServiceResponseError | requests.ConnectionError):
        return True
    if isinstance(error, CosmosHttpResponseError):
        return status_code(error) in TRANSIENT_STATUSES
    return isinstance(error, TimeoutError | ConnectionError)


def _unauthorized(error: CosmosHttpResponseError, identity: bool = False) -> AccountUnauthorized:
    text = str(getattr(error, "message", "") or error)
    if identity and status_code(error) == 403:
        return AccountForbidden(
            f"the account refused the workload identity ({status_code(error)}, substatus {sub_status(error)}): "
            f"assign it a Cosmos DB data-plane role on the account, e.g. {DATA_CONTRIBUTOR} "
            "(az cosmosdb sql role assignment create --account-name ACCOUNT --resource-group RG --scope / "
            f"--principal-id PRINCIPAL --role-definition-id {DATA_CONTRIBUTOR_ID})"
        )
    if sub_status(error) == LOCAL_AUTH_DISABLED_SUBSTATUS or "local authorization is disabled" in text.lower():
        return AccountUnauthorized(
            "local authorization is disabled on the account (401, substatus 5202): Ferry authenticates "
            "with the account key, so enable local (key) authorization on the account"
        )
    return AccountUnauthorized(
        f"the account rejected the key ({status_code(error)}): check the key in the DatabaseAccount's Secret"
    )


def probe(access: CosmosAccess, not_federated: Callable[[BaseException], str | None] = lambda _: None) -> None:
    """Raise AccountUnreachable or AccountUnauthorized (IdentityNotFederated, AccountForbidden for an identity)
    unless the account answers to its key or identity; `not_federated` says why a token exchange was refused."""
    try:
        access.client().get_database_account()
    except CosmosHttpResponseError as error:
        if status_code(error) in (401, 403):
            raise _unauthorized(error, identity=access.key is None) from None
        raise AccountUnreachable(f"{access.endpoint} answered {describe(error)}") from None
    except ClientAuthenticationError as error:
        if (why := not_federated(error)) is not None:
            raise IdentityNotFederated(why) from None
        raise AccountUnauthorized(f"Microsoft Entra ID refused a token for the workload identity: {error}") from None
    except (AzureError, requests.RequestException, OSError) as error:
        raise AccountUnreachable(f"{access.endpoint} is unreachable: {describe(error)}") from None


@dataclass(frozen=True)
class AccountRegions:
    write_regions: list[str]
    read_regions: list[str]


def read_account_regions(access: CosmosAccess) -> AccountRegions:
    """The account's writable and readable locations, by region name, as it reports them now."""
    account = access.client().get_database_account()
    return AccountRegions(
        write_regions=[str(loc.get("name", "")) for loc in account.WritableLocations],
        read_regions=[str(loc.get("name", "")) for loc in account.ReadableLocations],
    )


def container_properties(access: CosmosAccess, database: str, container: str) -> dict[str, Any] | None:
    """The container's settings, or None when it (or its database) does not exist."""
    try:
        return cast(dict[str, Any], access.container(database, container).read())
    except CosmosResourceNotFoundError:
        return None


def partition_key_paths(properties: Mapping[str, Any]) -> list[str]:
    paths = properties.get("partitionKey", {}).get("paths", [])
    return [str(p) for p in paths]


def unique_key_paths(properties: Mapping[str, Any]) -> list[list[str]]:
    keys = properties.get("uniqueKeyPolicy", {}).get("uniqueKeys", [])
    return [[str(p) for p in key.get("paths", [])] for key in keys]


_MISSING = object()


def _value_at(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.strip("/").split("/"):
        part = part.strip('"')
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def partition_key_value(item: Mapping[str, Any], paths: list[str]) -> Any:
    """The item's partition key for a container partitioned by `paths` (hierarchical when several).

    An item without the key's property lives in the container's "none" partition, as the service does.
    """
    values = [_value_at(item, path) for path in paths]
    if len(values) == 1:
        return NonePartitionKeyValue if values[0] is _MISSING else values[0]
    return [None if v is _MISSING else v for v in values]


def strip_system(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item's own content: everything but the service's system properties."""
    return {k: v for k, v in item.items() if k not in SYSTEM_PROPERTIES}


def feed_ranges(container: ContainerProxy) -> list[dict[str, Any]]:
    """The container's feed ranges as JSON-serialisable dicts (stored in work units)."""
    return list(container.read_feed_ranges())


def query_page(
    container: ContainerProxy,
    query: str,
    feed_range: dict[str, Any],
    continuation: str | None,
    page_size: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a query restricted to a feed range, and the continuation after it (None at the end).

    enable_cross_partition_query lets the query span the partition keys inside the range; the
    service scopes it by the range itself.
    """
    pages: Any = container.query_items(
        query,
        feed_range=feed_range,
        enable_cross_partition_query=True,
        max_item_count=page_size,
    ).by_page(continuation)
    for page in pages:
        items: list[dict[str, Any]] = list(page)
        token = cast(str | None, pages.continuation_token)
        if items or not token:
            return items, token
        # An empty page with more to come: the pager fetches the next one.
    return [], None


ChangeFeedMode = Literal["LatestVersion", "AllVersionsAndDeletes"]
LATEST_VERSION: ChangeFeedMode = "LatestVersion"
ALL_VERSIONS_AND_DELETES: ChangeFeedMode = "AllVersionsAndDeletes"


def change_feed_page(
    container: ContainerProxy,
    feed_range: dict[str, Any],
    continuation: str | None,
    page_size: int,
    *,
    mode: ChangeFeedMode = LATEST_VERSION,
    headers: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a feed range's change feed after `continuation`, and the continuation after it.

    Without a continuation the latest-version feed is read from the beginning. An empty page means
    nothing more for now (the service answered 304); the continuation is then the one given.
    `headers`, if given, receives the page's response headers (`lsn`: the range's latest LSN).

    The continuation comes from this page's own response headers, which the SDK rewrites into its
    continuation after the hook saw them: the pager's continuation_token reads the client's last
    response headers, which another thread's request may have replaced meanwhile.
    """
    seen: list[Mapping[str, str]] = []

    def hook(response_headers: Mapping[str, str], _: Any) -> None:
        seen.append(response_headers)

    if continuation is None:
        feed: Any = container.query_items_change_feed(
            feed_range=feed_range, start_time="Beginning", max_item_count=page_size, mode=mode, response_hook=hook
        )
    else:
        feed = container.query_items_change_feed(
            continuation=continuation, max_item_count=page_size, response_hook=hook
        )
    for page in feed.by_page():
        items = list(page)
        if headers is not None:
            headers.update(dict(seen[-1]))
        return items, str(seen[-1].get("etag") or "") or continuation
    return [], continuation


def change_feed_now(
    container: ContainerProxy, feed_range: dict[str, Any], mode: ChangeFeedMode = LATEST_VERSION
) -> str:
    """The continuation of a feed range's change feed at this moment: reading from it gives later changes only.

    The SDK gives it in the etag of its last response (a 304), which the response hook sees.
    """
    seen: dict[str, Any] = {}

    def hook(headers: Mapping[str, str], _: Any) -> None:
        seen["headers"] = headers  # the SDK puts the continuation into this mapping after the hook ran

    for _ in container.query_items_change_feed(feed_range=feed_range, start_time="Now", mode=mode, response_hook=hook):
        pass
    return str(seen["headers"]["etag"])


def count_items(container: ContainerProxy) -> int:
    result: Iterable[Any] = container.query_items("SELECT VALUE COUNT(1) FROM c", enable_cross_partition_query=True)
    return sum(int(n) for n in result)
