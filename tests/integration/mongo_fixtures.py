"""MongoDB API fixtures: one FerretDB (SQLite backend, built from its Go module) per session, and an account on it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.storage.mongo import MongoAccess
from ferry_dev.emulators import FERRETDB_USER, FerretDB

_names = itertools.count()


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    server = FerretDB(Path(tmp_path_factory.mktemp("ferretdb")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mongo(ferretdb: FerretDB) -> Iterator[MongoAccess]:
    access = MongoAccess(ferretdb.endpoint.endpoint, ferretdb.endpoint.key, FERRETDB_USER)
    try:
        yield access
    finally:
        access.close()


def unique_db(prefix: str = "db") -> str:
    return f"{prefix}{next(_names)}"
