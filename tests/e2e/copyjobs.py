"""ContainerCopyJobs and their accounts as the end-to-end tests make them: containers with items, a DatabaseAccount
applied with kubectl, a job's manifest."""

from __future__ import annotations

import uuid
from typing import Any

import yaml
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts")


def stack_cosmos(stack: DevStack) -> CosmosClient:
    assert stack.cosmos is not None
    return CosmosClient(stack.cosmos.endpoint.endpoint, credential=stack.cosmos.endpoint.key, connection_verify=False)


def new_container(
    where: DevStack | CosmosClient, pk: str, items: int = 0, db: str | None = None, name: str | None = None
) -> ContainerProxy:
    """A container (in the stack's cosmosdb-server, or another) with `items` items keyed by tenant and region."""
    client = stack_cosmos(where) if isinstance(where, DevStack) else where
    database = client.create_database_if_not_exists(db or f"db{uuid.uuid4().hex[:8]}")
    container = database.create_container(name or f"c{uuid.uuid4().hex[:8]}", PartitionKey(pk))
    for i in range(items):
        container.upsert_item({"id": f"item-{i:04d}", "tenant": f"t{i % 7}", "region": f"r{i % 3}", "n": i})
    return container


def all_items(container: ContainerProxy) -> dict[str, dict[str, Any]]:
    found = container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return {i["id"]: {k: v for k, v in i.items() if k not in SYSTEM} for i in found}


def apply_account(
    kubectl: Kubectl, stack: DevStack, name: str = "acct", endpoint: str | None = None, **spec: Any
) -> None:
    assert stack.cosmos is not None
    if kubectl.run("get", "secret", "cosmos-key", check=False).returncode != 0:
        kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={stack.cosmos.endpoint.key}")
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": name},
        "spec": {
            "endpoint": endpoint or stack.cosmos.endpoint.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "cosmos-key", "key": "primaryKey"}},
            "copyInstances": {"count": 2, "resources": {"cpu": "300m", "memory": "256Mi"}},
            "regionPollInterval": "2s",
            **spec,
        },
    }
    kubectl.apply(yaml.safe_dump(body))


def path(c: ContainerProxy) -> dict[str, Any]:
    """A container as a job's spec names it."""
    return {"database": c.container_link.split("/")[1], "container": c.id}


def tasks_manifest(name: str, pairs: list[tuple[ContainerProxy, ContainerProxy]], **spec: Any) -> str:
    """A job of several tasks on account acct."""
    tasks = [{"source": path(source), "destination": path(dest)} for source, dest in pairs]
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": {"name": name},
        "spec": {"accountRef": {"name": "acct"}, "tasks": tasks, **spec},
    }
    return yaml.safe_dump(body)


def job_manifest(
    name: str,
    source: ContainerProxy,
    dest: ContainerProxy,
    account: str = "acct",
    source_account: str | None = None,
    **spec: Any,
) -> str:
    source_path = path(source) | ({"accountRef": {"name": source_account}} if source_account else {})
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": {"name": name},
        "spec": {"accountRef": {"name": account}, "source": source_path, "destination": path(dest), **spec},
    }
    return yaml.safe_dump(body)
