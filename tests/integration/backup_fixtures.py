"""Backup fixtures: a backup location in Azurite, capturers of one database, moments between changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cosmos_fixtures import unique

from ferry.backup.capture import Capturer, CaptureSettings
from ferry.backup.store import BackupStore
from ferry.storage import blobs
from ferry.storage.cosmos import CosmosAccess
from ferry_dev.emulators import Azurite, CosmosServer

SETTINGS = CaptureSettings(retention=timedelta(hours=1), interval=timedelta(seconds=2))


@pytest.fixture
def backup_store(azurite: Azurite) -> BackupStore:
    account = azurite.accounts["ferrydst"]
    container = blobs.container_client(account.connection_string, unique("backup"))
    return BackupStore(container, f"ns/{unique('acct')}")


def tick() -> None:
    """Sleep past the current second: item _ts and capture times are whole seconds."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.05)


def moment() -> datetime:
    """A whole-second time after everything written so far and before anything written next."""
    tick()
    at = datetime.now(UTC).replace(microsecond=0)
    tick()
    return at


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
