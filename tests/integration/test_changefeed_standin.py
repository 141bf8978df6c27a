"""The change feed stand-in (support/changefeed.py) with the unchanged azure-cosmos SDK as its client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError
from cosmos_fixtures import unique

from ferry.storage.cosmos import CosmosAccess
from ferry_dev.changefeed import NOT_ENABLED, ChangeFeedProxy
from ferry_dev.emulators import CosmosServer

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def standin(cosmos: CosmosServer, **options: Any) -> Iterator[tuple[ChangeFeedProxy, CosmosAccess]]:
    proxy = ChangeFeedProxy(cosmos.endpoint.endpoint, cosmos.endpoint.key, **options).start()
    try:
        yield proxy, CosmosAccess(proxy.endpoint, cosmos.endpoint.key, verify_tls=False)
    finally:
        proxy.stop()


@pytest.fixture
def feed(cosmos: CosmosServer) -> Iterator[tuple[ChangeFeedProxy, CosmosAccess]]:
    yield from standin(cosmos)


@pytest.fixture
def ranged(cosmos: CosmosServer) -> Iterator[tuple[ChangeFeedProxy, CosmosAccess]]:
    yield from standin(cosmos, ranges=4, all_versions=True)


def container(access: CosmosAccess) -> ContainerProxy:
    db = access.client().create_database_if_not_exists(unique("cf"))
    return db.create_container(unique("c"), PartitionKey("/pk"))


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [str(i["id"]) for i in items]


def now_token(c: ContainerProxy, **options: Any) -> str:
    """The continuation of a feed started now (the SDK gives it in the last response's etag)."""
    seen: dict[str, Any] = {}
    assert (
        list(c.query_items_change_feed(start_time="Now", response_hook=lambda h, _: seen.update(h=h), **options)) == []
    )
    return str(seen["h"]["etag"])


def test_incremental_from_the_beginning_gives_each_items_newest_version(
    feed: tuple[ChangeFeedProxy, CosmosAccess],
) -> None:
    c = container(feed[1])
    for i in range(5):
        c.create_item({"id": f"i{i}", "pk": f"p{i % 2}", "n": i})
    c.replace_item("i1", {"id": "i1", "pk": "p1", "n": 10})
    c.upsert_item({"id": "i3", "pk": "p1", "n": 30})
    c.patch_item("i0", "p0", [{"op": "add", "path": "/patched", "value": True}])
    c.delete_item("i2", "p0")

    items = list(c.query_items_change_feed(start_time="Beginning"))

    assert ids(items) == ["i4", "i1", "i3", "i0"]  # in the order of their last change; i2 deleted
    assert [i["n"] for i in items] == [4, 10, 30, 0] and items[-1]["patched"] is True
    lsns = [i["_lsn"] for i in items]
    assert lsns == sorted(lsns) and len(set(lsns)) == 4
    assert all(i["_rid"] and i["_etag"] for i in items)  # the server's stored versions


def test_continuation_pages_and_304_when_nothing_is_new(feed: tuple[ChangeFeedProxy, CosmosAccess]) -> None:
    proxy, access = feed
    c = container(access)
    for i in range(5):
        c.create_item({"id": f"i{i}", "pk": "p"})
    pages = c.query_items_change_feed(start_time="Beginning", max_item_count=2).by_page()
    seen, tokens = [], []
    for page in pages:
        seen.append(ids(list(page)))
        tokens.append(pages.continuation_token)
    assert seen == [["i0", "i1"], ["i2", "i3"], ["i4"]]

    # From the middle: the rest, then nothing.
    assert ids(list(c.query_items_change_feed(continuation=tokens[0]))) == ["i2", "i3", "i4"]
    before = len(proxy.requests("GET", "/docs"))
    assert list(c.query_items_change_feed(continuation=tokens[-1])) == []
    answered = proxy.requests("GET", "/docs")[before:]
    assert answered and all(r.headers.get("if-none-match") == '"5"' for r in answered)

    c.upsert_item({"id": "i1", "pk": "p", "v": 2})
    c.create_item({"id": "i5", "pk": "p"})
    assert ids(list(c.query_items_change_feed(continuation=tokens[-1]))) == ["i1", "i5"]


def test_start_from_now_and_from_a_time(feed: tuple[ChangeFeedProxy, CosmosAccess]) -> None:
    c = container(feed[1])
    c.create_item({"id": "old", "pk": "p"})
    token = now_token(c)
    assert list(c.query_items_change_feed(start_time="Now")) == []
    time.sleep(1.1)  # the service's times have second granularity
    since = datetime.now(UTC)
    c.create_item({"id": "new", "pk": "p"})

    assert ids(list(c.query_items_change_feed(continuation=token))) == ["new"]
    assert ids(list(c.query_items_change_feed(start_time=since))) == ["new"]
    assert ids(list(c.query_items_change_feed(start_time="Beginning"))) == ["old", "new"]


def test_all_versions_and_deletes(ranged: tuple[ChangeFeedProxy, CosmosAccess]) -> None:
    c = container(ranged[1])
    c.create_item({"id": "before", "pk": "p"})
    token = now_token(c, mode="AllVersionsAndDeletes")
    c.create_item({"id": "a", "pk": "p", "v": 1})
    c.replace_item("a", {"id": "a", "pk": "p", "v": 2})
    c.delete_item("a", "p")

    changes = list(c.query_items_change_feed(continuation=token))

    assert [(ch["metadata"]["operationType"], ch["current"].get("v")) for ch in changes] == [
        ("create", 1),
        ("replace", 2),
        (
            "delete",
            None,
        ),
    ]
    lsns = [ch["metadata"]["lsn"] for ch in changes]
    assert lsns == sorted(lsns)
    assert [ch["metadata"]["previousImageLSN"] for ch in changes] == [0, lsns[0], lsns[1]]
    deleted = changes[-1]
    assert deleted["metadata"]["id"] == "a" and deleted["metadata"]["partitionKey"] == ["p"]
    assert deleted["previous"]["v"] == 2 and all(ch["metadata"]["crts"] > 0 for ch in changes)
    # The latest-version feed of the same container knows nothing of the deleted item.
    assert ids(list(c.query_items_change_feed(start_time="Beginning"))) == ["before"]


def test_all_versions_and_deletes_only_where_the_account_has_it(feed: tuple[ChangeFeedProxy, CosmosAccess]) -> None:
    c = container(feed[1])
    with pytest.raises(CosmosHttpResponseError) as refused:
        list(c.query_items_change_feed(start_time="Now", mode="AllVersionsAndDeletes"))
    assert refused.value.status_code == 400 and NOT_ENABLED in str(refused.value)


def test_several_feed_ranges_each_with_its_continuation(ranged: tuple[ChangeFeedProxy, CosmosAccess]) -> None:
    c = container(ranged[1])
    ranges = list(c.read_feed_ranges())
    assert len(ranges) == 4
    for i in range(40):
        c.create_item({"id": f"i{i}", "pk": f"p{i}"})

    per_range: list[list[str]] = []
    tokens: list[str] = []
    for feed_range in ranges:
        pages = c.query_items_change_feed(feed_range=feed_range, start_time="Beginning").by_page()
        got = [i for page in pages for i in ids(list(page))]
        per_range.append(got)
        tokens.append(str(pages.continuation_token))
        # A ranged query sees the same items as the range's change feed.
        queried = c.query_items("SELECT * FROM c", feed_range=feed_range, enable_cross_partition_query=True)
        assert sorted(ids(list(queried))) == sorted(got)
    assert sorted(i for got in per_range for i in got) == sorted(f"i{i}" for i in range(40))
    assert sum(1 for got in per_range if got) >= 3  # the items spread over the ranges
    # Point operations and cross-partition queries are unaffected by the ranges.
    assert c.read_item("i7", "p7")["id"] == "i7"
    assert len(list(c.query_items("SELECT * FROM c", enable_cross_partition_query=True))) == 40

    c.upsert_item({"id": "i7", "pk": "p7", "v": 2})
    home = next(n for n, got in enumerate(per_range) if "i7" in got)
    for n, token in enumerate(tokens):
        assert ids(list(c.query_items_change_feed(continuation=token))) == (["i7"] if n == home else [])
