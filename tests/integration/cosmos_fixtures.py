"""Cosmos DB integration fixtures: one cosmosdb-server per session, proxies, seeded containers.

Every client reaches cosmosdb-server through one change feed stand-in (support/changefeed.py), as
every Cosmos endpoint of the local stack does: its feed then holds every write of the session. The
fault-injecting `proxy` sits in front of the stand-in.

Import the fixtures a test module uses explicitly (`from cosmos_fixtures import cosmos, ...`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3
from azure.cosmos import ContainerProxy, PartitionKey

from ferry.api.transfer import VerifyMode
from ferry.kinds.containercopyjob.engine import CopyTask, JobSpec
from ferry.storage.cosmos import CosmosAccess, strip_system
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.cosmosproxy import CosmosProxy
from ferry_dev.emulators import CosmosServer

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the emulator's self-signed certificate

_names = itertools.count()


@pytest.fixture(scope="session")
def cosmos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    server = CosmosServer(Path(tmp_path_factory.mktemp("cosmos")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def changefeed(cosmos: CosmosServer) -> Iterator[ChangeFeedProxy]:
    """The session's account: four partition key ranges, with the all-versions-and-deletes feed."""
    server = ChangeFeedProxy(cosmos.endpoint.endpoint, cosmos.endpoint.key, ranges=4, all_versions=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def access(cosmos: CosmosServer, changefeed: ChangeFeedProxy) -> CosmosAccess:
    return CosmosAccess(changefeed.endpoint, cosmos.endpoint.key, verify_tls=False)


@pytest.fixture(scope="session")
def other_account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosAccess]:
    """A second account (its own cosmosdb-server and change feed stand-in): the source of cross-account copies."""
    server = CosmosServer(Path(tmp_path_factory.mktemp("cosmos-other")))
    server.start()
    try:
        feed = ChangeFeedProxy(server.endpoint.endpoint, server.endpoint.key, ranges=2, all_versions=True).start()
        try:
            yield CosmosAccess(feed.endpoint, server.endpoint.key, verify_tls=False)
        finally:
            feed.stop()
    finally:
        server.stop()


@pytest.fixture
def proxy(changefeed: ChangeFeedProxy) -> Iterator[CosmosProxy]:
    server = CosmosProxy(changefeed.endpoint).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxied_access(cosmos: CosmosServer, proxy: CosmosProxy) -> CosmosAccess:
    return CosmosAccess(proxy.endpoint, cosmos.endpoint.key, verify_tls=False)


def unique(stem: str) -> str:
    return f"{stem}{next(_names)}-{uuid.uuid4().hex[:6]}"


def make_items(count: int, groups: int = 7) -> list[dict[str, Any]]:
    """Items with a source key (`tenant`), a destination key (`city`) and varied content."""
    return [
        {
            "id": f"item-{i:04d}",
            "tenant": f"t{i % groups}",
            "city": f"c{i % 5}",
            "n": i,
            "nested": {"tags": ["a", str(i)], "ok": i % 2 == 0},
            **({"ttl": 3600} if i % 10 == 0 else {}),
        }
        for i in range(count)
    ]


def fill(container: ContainerProxy, items: list[dict[str, Any]], threads: int = 16) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(container.upsert_item, items))


def create_container(
    access: CosmosAccess, database: str, name: str, path: str, unique_keys: list[str] | None = None
) -> ContainerProxy:
    db = access.client().create_database_if_not_exists(database)
    policy = {"uniqueKeys": [{"paths": [p]} for p in unique_keys]} if unique_keys else None
    return db.create_container(name, PartitionKey(path), unique_key_policy=policy)


def contents(container: ContainerProxy) -> dict[str, dict[str, Any]]:
    items = container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return {str(item["id"]): strip_system(item) for item in items}


def job_spec(
    database: str, source: str, destination: str, instances: int = 1, rate: int | None = None, **fields: Any
) -> JobSpec:
    job_id = str(uuid.uuid4())
    return JobSpec(
        job_id=job_id,
        name=fields.pop("name", f"default/{unique('copy')}"),
        tasks=[CopyTask(database, source, fields.pop("dest_db", database), destination)],
        max_items_per_second=rate,
        instances=instances,
        write_region=fields.pop("write_region", "South Central US"),
        verify=fields.pop("verify", VerifyMode.COUNT),
    )


def never() -> bool:
    return False


StopFn = Callable[[], bool]
