"""A change feed for cosmosdb-server: a protocol-level stand-in for the service's change feed.

cosmosdb-server's own change feed returns everything once and then nothing, whatever the request.
ChangeFeedProxy is an HTTPS proxy in front of it (a CosmosProxy, so faults, throttling and region
rewriting still apply) that records every item write passing through it and serves the change
feed itself, following the wire protocol the azure-cosmos SDK speaks to the service:

Plays
- Writes recorded: create (POST .../docs), upsert (POST with x-ms-documentdb-is-upsert), replace
  (PUT .../docs/{id}), patch (PATCH, recorded as a replace with the patched body the server
  returns) and delete (DELETE .../docs/{id}); each gets the next LSN of its partition key range and
  a conflict-resolution timestamp (crts, seconds). Writes to one item pass upstream one at a time,
  so the recorded order is the server's order.
- Partition key ranges: GET .../pkranges answers `ranges` ranges (default 1) splitting the
  effective partition key (EPK) space; each change goes to the range its EPK falls in, the EPK
  computed as the service does (the SDK's own MurmurHash3 code, hash V1/V2 per the container's
  partition key definition). Boundaries are spread over 00-3F, where V2 hashes fall. Every range
  has its own LSN sequence, and so its own continuations.
- Change feed, GET .../docs with `A-IM`:
  - `Incremental Feed` (LatestVersion): the newest version of each item changed after the
    continuation, in LSN order, with `_lsn`; deleted items do not appear.
  - `Full-Fidelity Feed` (AllVersionsAndDeletes, wire format 2021-09-15): every create, replace
    and delete as {"current", "metadata": {operationType, lsn, crts, previousImageLSN, ...},
    "previous"}; only when the account has it (`all_versions=True`), else 400 "Change Feed 'All
    Versions and Deletes' mode must be enabled." as the service answers; start from now or a
    continuation only (400 otherwise).
  - Start: no If-None-Match = beginning, `If-None-Match: *` = now, `If-Modified-Since` = changes
    at or after that time (seconds); a continuation is `If-None-Match: "<lsn>"`.
  - `x-ms-max-item-count` pages (default 100); response {"_rid", "Documents", "_count"} with the
    continuation in `etag` and the range's latest LSN in `lsn` (and the session token), as
    change feed estimators read it; `304 Not Modified` with the current LSN as etag when
    nothing is new.
  - `x-ms-documentdb-partitionkeyrangeid` chooses the range; a feed range narrower than a range
    (x-ms-start-epk / x-ms-end-epk) is honoured too.
- Queries carrying a partition key range id (query_items(feed_range=...)) are forwarded without
  it and their results kept to the items of that range, so ranged queries do not see an item N
  times. Results without the partition key (projections, aggregates) go to the range holding
  EPK "" only, so a sum over ranges stays right.

Does not play
- Writes that do not pass through it (made before it started, or straight to cosmosdb-server):
  they are not in its feed. Start it first and point every client at it.
- Transactional batch and bulk (cosmosdb-server refuses them anyway), TTL expiry (no delete is
  recorded; `timeToLiveExpired` is always false), splits and merges (the ranges never change,
  so no 410 Gone), retention limits (everything is kept in memory), session tokens, the
  previous image of replaces (the service gives `previous` only for deletes here too, and
  Ferry does not rely on more), the partition key range id in point operations (the SDK sends
  none in gateway mode).
- Durability: the log lives in this process; a restarted proxy starts an empty feed.
"""

from __future__ import annotations

import bisect
import email.utils
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.cosmos import CosmosClient
from azure.cosmos.partition_key import PartitionKey, _Undefined

from ferry_dev.cosmosproxy import CosmosProxy, Reply, is_query

INCREMENTAL = "incremental feed"
FULL_FIDELITY = "full-fidelity feed"
DEFAULT_PAGE = 100
NOT_ENABLED = "Change Feed 'All Versions and Deletes' mode must be enabled."
AVAD_START = "Change Feed 'All Versions and Deletes' mode supports starting from now or a continuation only."
RANGE_HEADERS = (
    "x-ms-documentdb-partitionkeyrangeid",
    "x-ms-documentdb-readfeed-keytype",
    "x-ms-start-epk",
    "x-ms-end-epk",
)


def boundaries(count: int) -> list[str]:
    """count+1 EPK bounds: "", then even steps over 00-3F (where V2 hashes fall), then "FF"."""
    inner = [f"{(i * 0x40) // count:02X}" for i in range(1, count)]
    return ["", *inner, "FF"]


@dataclass
class Change:
    lsn: int
    crts: int
    op: str  # create | replace | delete
    key: tuple[str, str]  # (partition key as JSON, id)
    epk: str
    body: dict[str, Any] | None  # None for deletes
    previous: Change | None


@dataclass
class Feed:
    """One container's changes, one LSN sequence per partition key range."""

    rid: str
    pk_definition: dict[str, Any]
    bounds: list[str]
    lsns: list[int] = field(default_factory=list)
    logs: list[list[Change]] = field(default_factory=list)
    latest: dict[tuple[str, str], Change] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lsns = [0] * (len(self.bounds) - 1)
        self.logs = [[] for _ in self.lsns]

    def range_of(self, epk: str) -> int:
        return max(0, bisect.bisect_right(self.bounds, epk) - 1) if epk < self.bounds[-1] else len(self.lsns) - 1

    def epk(self, pk_values: list[Any]) -> str:
        definition = PartitionKey(
            path=self.pk_definition.get("paths", ["/id"]),
            kind=self.pk_definition.get("kind", "Hash"),
            version=int(self.pk_definition.get("version", 1)),
        )
        values = [_Undefined() if v == {} else v for v in pk_values]
        return str(definition._get_effective_partition_key_string(values))

    def item_epk(self, item: dict[str, Any]) -> str | None:
        values = []
        for path in self.pk_definition.get("paths", []):
            value: Any = item
            for part in str(path).strip("/").split("/"):
                if not isinstance(value, dict) or part not in value:
                    value = {}
                    break
                value = value[part]
            values.append(value)
        return self.epk(values) if values else None


class ChangeFeedProxy(CosmosProxy):
    """See the module docstring. `key` is the account key: the proxy reads container settings itself."""

    def __init__(
        self,
        upstream: str,
        key: str,
        ranges: int = 1,
        all_versions: bool = False,
        port: int = 0,
        host: str | None = None,
    ) -> None:
        super().__init__(upstream, port, host)
        self.key = key
        self.ranges = ranges
        self.all_versions = all_versions
        self._feeds: dict[tuple[str, str], Feed] = {}
        self._feeds_lock = threading.Lock()
        self._item_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._client: CosmosClient | None = None

    # What tests may inspect.

    def changes(self, database: str, container: str) -> list[Change]:
        with self._feeds_lock:
            feed = self._feeds.get((database, container))
            return sorted((c for log in feed.logs for c in log), key=lambda c: c.crts) if feed else []

    # Request handling.

    def exchange(
        self, method: str, path: str, raw_headers: dict[str, str], headers: dict[str, str], body: bytes | None
    ) -> Reply:
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        if len(parts) == 5 and parts[0] == "dbs" and parts[2] == "colls" and parts[4] == "pkranges" and method == "GET":
            return self._pkranges(parts[1], parts[3], headers)
        if len(parts) == 5 and parts[0] == "dbs" and parts[4] == "docs" and method == "GET" and "a-im" in headers:
            return self._change_feed(parts[1], parts[3], headers)
        if len(parts) in (5, 6) and parts[0] == "dbs" and parts[4] == "docs":
            if method == "POST" and is_query(headers):
                return self._ranged_query(parts[1], parts[3], path, raw_headers, headers, body)
            if method in ("POST", "PUT", "PATCH", "DELETE") and "x-ms-cosmos-is-batch-request" not in headers:
                return self._write(method, parts, path, raw_headers, headers, body)
        reply = self.forward(method, path, raw_headers, body)
        if reply[0] < 300 and parts[0] == "dbs" and not is_query(headers):
            # A database or container dropped or made: its feed starts afresh.
            if method == "DELETE" and len(parts) in (2, 4):
                self._forget(parts[1], parts[3] if len(parts) == 4 else None)
            elif method == "POST" and len(parts) == 3 and parts[2] == "colls":
                self._forget(parts[1], str(json.loads(body or b"{}").get("id", "")))
        return reply

    def _forget(self, database: str, container: str | None) -> None:
        with self._feeds_lock:
            for db, coll in list(self._feeds):
                if db == database and container in (None, coll):
                    del self._feeds[(db, coll)]

    def _metadata(self) -> CosmosClient:
        if self._client is None:
            self._client = CosmosClient(
                f"https://{self.upstream_host}:{self.upstream_port}/", self.key, connection_verify=False
            )
        return self._client

    def _feed(self, database: str, container: str) -> Feed:
        with self._feeds_lock:
            feed = self._feeds.get((database, container))
        if feed is not None:
            return feed
        properties = self._metadata().get_database_client(database).get_container_client(container).read()
        made = Feed(str(properties["_rid"]), dict(properties.get("partitionKey") or {}), boundaries(self.ranges))
        with self._feeds_lock:
            return self._feeds.setdefault((database, container), made)

    def _write(
        self, method: str, parts: list[str], path: str, raw: dict[str, str], headers: dict[str, str], body: bytes | None
    ) -> Reply:
        if "x-ms-documentdb-partitionkey" not in headers:
            return self.forward(method, path, raw, body)
        pk_json = json.dumps(json.loads(headers["x-ms-documentdb-partitionkey"]))
        item_id = parts[5] if len(parts) == 6 else str(json.loads(body or b"{}").get("id", ""))
        lock_key = (parts[1], parts[3], pk_json + "\x00" + item_id)
        with self._feeds_lock:
            lock = self._item_locks.setdefault(lock_key, threading.Lock())
        with lock:  # one write per item at a time: the recorded order is the server's
            status, reply_headers, payload = self.forward(method, path, raw, body)
            if status >= 300:
                return status, reply_headers, payload
            feed = self._feed(parts[1], parts[3])
            stored = json.loads(payload) if payload and method != "DELETE" else None
            with self._feeds_lock:
                key = (pk_json, item_id)
                previous = feed.latest.get(key)
                exists = previous is not None and previous.op != "delete"
                op = "delete" if method == "DELETE" else ("replace" if exists else "create")
                epk = feed.epk(json.loads(pk_json))
                index = feed.range_of(epk)
                feed.lsns[index] += 1
                change = Change(feed.lsns[index], int(time.time()), op, key, epk, stored, previous)
                feed.logs[index].append(change)
                feed.latest[key] = change
        return status, reply_headers, payload

    def _pkranges(self, database: str, container: str, headers: dict[str, str]) -> Reply:
        feed = self._feed(database, container)
        etag = '"1"'
        if headers.get("if-none-match"):
            return 304, {"etag": etag, "Content-Type": "application/json"}, b""
        ranges = [
            {
                "_rid": feed.rid,
                "id": str(i),
                "_etag": f'"pkrange-{i}"',
                "minInclusive": feed.bounds[i],
                "maxExclusive": feed.bounds[i + 1],
                "ridPrefix": i,
                "_self": f"dbs/{database}/colls/{container}/pkranges/{i}/",
                "throughputFraction": 1 / len(feed.lsns),
                "status": "online",
                "parents": [],
                "_ts": int(time.time()),
            }
            for i in range(len(feed.lsns))
        ]
        payload = {"_rid": feed.rid, "PartitionKeyRanges": ranges, "_count": len(ranges)}
        return (
            200,
            {"etag": etag, "Content-Type": "application/json", "x-ms-item-count": str(len(ranges))},
            _dump(payload),
        )

    def _scope(self, feed: Feed, headers: dict[str, str]) -> tuple[int, str, str]:
        """The range a request names, and the EPK bounds within it it asks for."""
        index = int(headers.get("x-ms-documentdb-partitionkeyrangeid", "0").split(",")[-1].split(":")[-1] or 0)
        low, high = feed.bounds[index], feed.bounds[index + 1]
        if headers.get("x-ms-documentdb-readfeed-keytype", "").lower() == "effectivepartitionkeyrange":
            low = max(low, headers.get("x-ms-start-epk", low))
            high = min(high, headers.get("x-ms-end-epk", high))
        return index, low, high

    def _change_feed(self, database: str, container: str, headers: dict[str, str]) -> Reply:
        mode = headers["a-im"].lower()
        if mode not in (INCREMENTAL, FULL_FIDELITY):
            return _error(400, "BadRequest", f"unsupported A-IM {headers['a-im']!r}")
        feed = self._feed(database, container)
        index, low, high = self._scope(feed, headers)
        token = headers.get("if-none-match", "").strip('"')
        since_time = headers.get("if-modified-since")
        if mode == FULL_FIDELITY:
            if not self.all_versions:
                return _error(400, "BadRequest", NOT_ENABLED)
            if not token or since_time:
                return _error(400, "BadRequest", AVAD_START)
        limit = int(headers.get("x-ms-max-item-count") or DEFAULT_PAGE)
        limit = DEFAULT_PAGE if limit <= 0 else limit
        not_before = email.utils.parsedate_to_datetime(since_time).timestamp() if since_time else None
        with self._feeds_lock:
            current = feed.lsns[index]
            if token == "*":
                return 304, {"etag": f'"{current}"', "lsn": str(current)}, b""
            after = int(token) if token else 0
            log = feed.logs[index]
            start = bisect.bisect_right([c.lsn for c in log], after)
            documents: list[dict[str, Any]] = []
            last = after
            for change in log[start:]:
                if len(documents) >= limit:
                    break
                last = change.lsn
                if not (low <= change.epk < high) or (not_before is not None and change.crts < not_before):
                    continue
                if mode == INCREMENTAL:
                    if feed.latest.get(change.key) is not change or change.body is None:
                        continue  # superseded or deleted: the newest version appears at its own LSN
                    documents.append({**change.body, "_lsn": change.lsn})
                else:
                    documents.append(_full_fidelity(change))
            if not documents:
                return 304, {"etag": f'"{max(after, current)}"', "lsn": str(current)}, b""
        payload = {"_rid": feed.rid, "Documents": documents, "_count": len(documents)}
        reply_headers = {
            "etag": f'"{last}"',
            "Content-Type": "application/json",
            "x-ms-item-count": str(len(documents)),
            "lsn": str(current),  # the range's latest LSN: how far behind the reader is
            "x-ms-session-token": f"{index}:-1#{current}",
        }
        return 200, reply_headers, _dump(payload)

    def _ranged_query(
        self, database: str, container: str, path: str, raw: dict[str, str], headers: dict[str, str], body: bytes | None
    ) -> Reply:
        if "x-ms-documentdb-partitionkeyrangeid" not in headers:
            return self.forward("POST", path, raw, body)
        feed = self._feed(database, container)
        _, low, high = self._scope(feed, headers)
        upstream = {k: v for k, v in raw.items() if k.lower() not in RANGE_HEADERS}
        status, reply_headers, payload = self.forward("POST", path, upstream, body)
        if status != 200 or (len(feed.lsns) == 1 and low == "" and high == "FF"):
            return status, reply_headers, payload
        result = json.loads(payload)
        kept = []
        for doc in result.get("Documents", []):
            epk = feed.item_epk(doc) if isinstance(doc, dict) else None
            if (low <= epk < high) if epk is not None else low == "":
                kept.append(doc)
        result["Documents"], result["_count"] = kept, len(kept)
        reply_headers = {k: v for k, v in reply_headers.items() if k.lower() != "x-ms-item-count"}
        reply_headers["x-ms-item-count"] = str(len(kept))
        return status, reply_headers, _dump(result)


def _full_fidelity(change: Change) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "operationType": change.op,
        "lsn": change.lsn,
        "crts": change.crts,
        "previousImageLSN": change.previous.lsn if change.previous is not None else 0,
        "timeToLiveExpired": False,
    }
    if change.op != "delete":
        return {"current": {**(change.body or {}), "_lsn": change.lsn}, "metadata": metadata}
    metadata.update(id=change.key[1], partitionKey=json.loads(change.key[0]))
    previous = change.previous.body if change.previous is not None else None
    return {"current": {}, "metadata": metadata, **({"previous": previous} if previous else {})}


def _dump(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"Content-Type": "application/json"}, _dump({"code": code, "message": message})


def main() -> None:
    """Serve the stand-in in its own process: prints its endpoint on one line, then serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="The change feed stand-in in front of cosmosdb-server.")
    parser.add_argument("--upstream", required=True, help="cosmosdb-server's endpoint, https://host:port/")
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default=None, help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--ranges", type=int, default=1)
    parser.add_argument("--all-versions", action="store_true", help="the account has the all-versions-and-deletes feed")
    args = parser.parse_args()
    proxy = ChangeFeedProxy(
        args.upstream, args.key, args.ranges, args.all_versions, port=args.port, host=args.host
    ).start()
    print(proxy.endpoint, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
