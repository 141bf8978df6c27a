"""Continuous backup end to end: a cosmosdb-server of the test's own (the `cosmos` fixture), a
DatabaseAccount backing it up into the stack's Azurite, and what to wait for and compare."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey

from ferry_dev.emulators import CosmosServer
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts")
INTERVAL = "2s"


@dataclass
class OwnCosmos:
    """The test's cosmosdb-server, reached (by the test and by Ferry) through the change feed stand-in, whose
    feed captures read (cosmosdb-server's own is a stub); `endpoint` is the stand-in's."""

    server: CosmosServer
    endpoint: str

    @property
    def client(self) -> CosmosClient:
        return CosmosClient(self.endpoint, credential=self.server.endpoint.key, connection_verify=False)

    def database(self, name: str) -> DatabaseProxy:
        return self.client.create_database_if_not_exists(name)

    def container(
        self, database: str, name: str, pk: str = "/tenant", items: int = 0, **options: Any
    ) -> ContainerProxy:
        created = self.database(database).create_container(name, PartitionKey(pk), **options)
        for i in range(items):
            created.upsert_item(item(i))
        return created

    def names(self, database: str) -> set[str]:
        return {c["id"] for c in self.client.get_database_client(database).list_containers()}


def item(i: int, version: int = 1) -> dict[str, Any]:
    return {"id": f"item-{i:04d}", "tenant": f"t{i % 5}", "n": i, "version": version}


def contents(container: ContainerProxy) -> dict[str, dict[str, Any]]:
    found = container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return {i["id"]: {k: v for k, v in i.items() if k not in SYSTEM} for i in found}


def when(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def backed_up_account(
    kubectl: Kubectl,
    stack: DevStack,
    cosmos: OwnCosmos,
    name: str = "acct",
    annotations: dict[str, str] | None = None,
    backup: dict[str, Any] | None = None,
    endpoint: str | None = None,
) -> None:
    """A DatabaseAccount of the test's server with continuous backup into the stack's Azurite."""
    assert stack.azurite is not None
    if kubectl.run("get", "secret", "cosmos-key", check=False).returncode != 0:
        key = cosmos.server.endpoint.key
        kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={key}")
        storage = stack.azurite.accounts["ferrydst"].connection_string
        kubectl("create", "secret", "generic", "backup-storage", f"--from-literal=connectionString={storage}")
    policy = backup or {
        "mode": "Continuous",
        "tier": "Continuous7Days",
        "captureInterval": INTERVAL,
        "location": {
            "account": {"secretRef": {"name": "backup-storage", "key": "connectionString"}},
            "container": "backups",
        },
    }
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "endpoint": endpoint or cosmos.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "cosmos-key", "key": "primaryKey"}},
            "copyInstances": {"count": 2, "resources": {"cpu": "300m", "memory": "256Mi"}},
            "regionPollInterval": "2s",
            "idleTimeout": "20s",
            "backup": policy,
        },
    }
    kubectl.apply(yaml.safe_dump(body))


def captured(kubectl: Kubectl, account: str = "acct", past: datetime | None = None, timeout: float = 90) -> datetime:
    """Wait for the backup to be restorable up to `past` (or at all); the latest restorable time."""

    def done(o: dict[str, Any]) -> bool:
        latest = (o.get("status") or {}).get("latestRestorableTime")
        return bool(latest) and (past is None or datetime.fromisoformat(latest) >= past)

    found = kubectl.wait_for("databaseaccount", account, done, timeout=timeout)
    return datetime.fromisoformat(found["status"]["latestRestorableTime"])


def restore(name: str, database: str, container: str | None = None, account: str = "acct", **spec: Any) -> str:
    body: dict[str, Any] = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InAccountRestore",
        "metadata": {"name": name},
        "spec": {"accountRef": {"name": account}, "database": database, **spec},
    }
    if container:
        body["spec"]["container"] = container
    return yaml.safe_dump(body)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
    return found.get(kind) or {}
