"""Backup fixtures: a backup location in Azurite and capturers of one database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cosmos_fixtures import unique

from ferry.backup.store import BackupStore
from ferry.kinds.databaseaccount.capture import Capturer, CaptureSettings
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
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


@pytest.fixture
def own_account(tmp_path: Any) -> Iterator[CosmosAccess]:
    """A cosmosdb-server of the test's own: a capture reads the whole account, and only this test's data."""
    with CosmosServer(tmp_path / "cosmos") as server:
        yield CosmosAccess(server.endpoint.endpoint, server.endpoint.key, verify_tls=False)
