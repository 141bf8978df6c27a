"""Backup fixtures: a backup location in Azurite and capturers of one database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cosmos_fixtures import unique

from ferry.backup.store import BackupStore
from ferry.kinds.databaseaccount.capture import Capturer, CaptureSettings
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.emulators import Azurite, CosmosServer

SETTINGS = CaptureSettings(retention=timedelta(hours=1), interval=timedelta(seconds=2))


@pytest.fixture
def backup_store(azurite: Azurite) -> BackupStore:
    account = azurite.accounts["ferrydst"]
    container = blobs.container_client(account.connection_string, unique("backup"))
    return BackupStore(container, f"ns/{unique('acct')}")


def capturer(access: Any, store: BackupStore, settings: CaptureSettings = SETTINGS) -> Capturer:
    return Capturer(access, store, settings)


def blob_names(store: BackupStore) -> Iterator[str]:
    for folder in ("segments", "bases", "state"):
        yield from store.list(folder)


@contextlib.contextmanager
def account_of_own(path: Any, all_versions: bool) -> Iterator[tuple[CosmosAccess, ChangeFeedProxy]]:
    """A cosmosdb-server of the caller's own (a capture reads the whole account, and only this test's data),
    reached through the change feed stand-in, with or without the all-versions-and-deletes feed."""
    with CosmosServer(path) as server:
        feed = ChangeFeedProxy(server.endpoint.endpoint, server.endpoint.key, ranges=3, all_versions=all_versions)
        feed.start()
        try:
            yield CosmosAccess(feed.endpoint, server.endpoint.key, verify_tls=False), feed
        finally:
            feed.stop()


@pytest.fixture
def own_account(tmp_path: Any) -> Iterator[CosmosAccess]:
    """An account of the test's own with the all-versions-and-deletes feed."""
    with account_of_own(tmp_path / "cosmos", all_versions=True) as (access, _):
        yield access


@pytest.fixture(params=[True, False], ids=["deletes-feed", "deletion-sweep"])
def either_account(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[CosmosAccess]:
    """An account of the test's own, with the all-versions-and-deletes feed and without (deletions swept)."""
    with account_of_own(tmp_path / "cosmos", all_versions=bool(request.param)) as (access, _):
        yield access
