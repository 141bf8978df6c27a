"""BlobCopy helpers shared by the end-to-end tests: the stack's two storage accounts, containers, the
account Secrets and BlobCopy manifests."""

from __future__ import annotations

import re
import urllib.request
import uuid
from typing import Any

import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

from ferry_dev.emulators import StorageAccount
from ferry_dev.stack import DevStack
from integration.faultproxy import FaultProxy
from support.kubectl import Kubectl


def blob_bytes(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def storage_accounts(stack: DevStack) -> tuple[StorageAccount, StorageAccount]:
    assert stack.azurite is not None
    return stack.azurite.accounts["ferrysrc"], stack.azurite.accounts["ferrydst"]


def new_container(account: StorageAccount, connection_string: str | None = None) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(connection_string or account.connection_string)
    container = service.get_container_client(f"c{uuid.uuid4().hex[:10]}")
    container.create_container()
    return container


def via_proxy(proxy: FaultProxy, account: StorageAccount) -> str:
    """The account's connection string with its blob endpoint behind the fault proxy."""
    return re.sub(r"BlobEndpoint=[^;]+", f"BlobEndpoint={proxy.endpoint(account.name)}", account.connection_string)


def account_secrets(kubectl: Kubectl, source: str, destination: str) -> None:
    kubectl("create", "secret", "generic", "src", f"--from-literal=connectionString={source}")
    kubectl("create", "secret", "generic", "dst", f"--from-literal=connectionString={destination}")


def blobcopy_manifest(name: str, src: ContainerClient, dst: ContainerClient, **spec: Any) -> str:
    source: dict[str, Any] = {"account": {"secretRef": {"name": "src", "key": "connectionString"}}}
    source.update({"container": src.container_name, **spec.pop("source", {})})
    destination: dict[str, Any] = {"account": {"secretRef": {"name": "dst", "key": "connectionString"}}}
    destination.update({"container": dst.container_name, **spec.pop("destination", {})})
    return blobcopy_yaml(name, source, destination, **spec)


def blobcopy_yaml(name: str, source: dict[str, Any], destination: dict[str, Any], **spec: Any) -> str:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BlobCopy",
        "metadata": {"name": name},
        "spec": {"source": source, "destination": destination, **spec},
    }
    return yaml.safe_dump(body)


def scrape_metrics(stack: DevStack) -> str:
    """The operator's /metrics page, as Prometheus scrapes it."""
    with urllib.request.urlopen(stack.operator_metrics, timeout=10) as response:
        return str(response.read().decode())
