"""Integration fixtures: one Azurite (blob) per session with two accounts, ferrysrc and ferrydst."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from ferry_dev.emulators import Azurite, StorageAccount
from support.reports import Reports

_names = itertools.count()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    emulator = Azurite(Path(tmp_path_factory.mktemp("azurite")), accounts=("ferrysrc", "ferrydst"))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def src_account(azurite: Azurite) -> StorageAccount:
    return azurite.accounts["ferrysrc"]


@pytest.fixture
def dst_account(azurite: Azurite) -> StorageAccount:
    return azurite.accounts["ferrydst"]


def _container(account: StorageAccount, stem: str, public: bool = False) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(account.connection_string)
    container = service.get_container_client(f"{stem}{next(_names)}")
    container.create_container(public_access="blob" if public else None)
    return container


@pytest.fixture
def src_container(src_account: StorageAccount) -> ContainerClient:
    return _container(src_account, "src")


@pytest.fixture
def dst_container(dst_account: StorageAccount) -> ContainerClient:
    return _container(dst_account, "dst")


@pytest.fixture
def reports() -> Reports:
    return Reports()


SECRET_REF = {"secretRef": {"name": "s", "key": "connection"}}


def _make_spec(**fields: Any) -> Any:
    """A BlobCopySpec from wire-form fields with account references filled in."""
    from ferry.api.blobcopy import BlobCopySpec

    source = dict(fields.pop("source"))
    if "container" in source:
        source.setdefault("account", SECRET_REF)
    destination = {"account": SECRET_REF, **fields.pop("destination")}
    return BlobCopySpec.model_validate({"source": source, "destination": destination, **fields})


def _assert_no_secrets(texts: list[str], *secrets: str) -> None:
    for text in texts:
        assert "AccountKey" not in text and "sig=" not in text, text
        for secret in secrets:
            assert secret not in text, text


@pytest.fixture
def make_spec() -> Any:
    return _make_spec


@pytest.fixture
def assert_no_secrets() -> Any:
    return _assert_no_secrets


@pytest.fixture
def new_reports() -> type[Reports]:
    return Reports


@pytest.fixture
def fault_proxy(azurite: Azurite) -> Iterator[Any]:
    from faultproxy import FaultProxy

    proxy = FaultProxy(f"http://{azurite.host}:{azurite.blob_port}").start()
    try:
        yield proxy
    finally:
        proxy.stop()


def via_proxy(account: StorageAccount, proxy: Any) -> str:
    """The account's connection string with its blob endpoint behind the proxy."""
    return account.connection_string.replace(account.blob_endpoint, proxy.endpoint(account.name))


@pytest.fixture
def proxied() -> Any:
    return via_proxy
