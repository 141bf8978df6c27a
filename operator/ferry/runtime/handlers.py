"""kopf's part: one watch per resource kind, indexes that hold what the runtime reads, and thin event handlers
that only put keys in the runtime's queue. No handler waits on anything or holds a thread.

kopf fills every index from its initial listings before it calls any handler, so the first pass of any
object already sees all worker pods and related objects (no pod is started twice after a restart).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ferry.api.kinds import Kind
from ferry.kube.manifests import LABEL_SLOT, MANAGED_BY
from ferry.runtime.engine import (
    PODS_INDEX,
    SLOT_PODS_INDEX,
    Runtime,
    account_of,
    accountref_index,
    objects_index,
    source_account_of,
    sourceref_index,
    trimmed,
)
from ferry.runtime.pods import pod_view

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
WATCH_TIMEOUT = 300  # seconds a watch request lasts before kopf opens the next one


def register(registry: kopf.OperatorRegistry, runtime: Runtime, account_scoped: tuple[Kind, ...]) -> None:
    for controller in runtime.controllers.values():
        _register_kind(registry, runtime, controller.kind, controller.kind in account_scoped)

    @kopf.index("v1", "pods", labels=MANAGED, id=PODS_INDEX, registry=registry)
    async def index_pods(body: kopf.Body, labels: kopf.Labels, **_: Any) -> Any:
        owner = labels.get("ferry.dev/owner-uid")
        return {owner: pod_view(body)} if owner else {}

    @kopf.index("v1", "pods", labels=MANAGED, id=SLOT_PODS_INDEX, registry=registry)
    async def index_slot_pods(body: kopf.Body, labels: kopf.Labels, namespace: str | None, name: str, **_: Any) -> Any:
        if labels.get(LABEL_SLOT) != "true" or pod_view(body).finished:
            return {}  # an empty result removes the pod's earlier entry (None would keep it)
        return {namespace: name}

    @kopf.on.event("v1", "pods", labels=MANAGED, registry=registry)
    async def on_pod(type: str | None, body: kopf.Body, **_: Any) -> None:
        runtime.pod_event(type, body)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        settings.watching.label_selectors["v1", "pods"] = "app.kubernetes.io/managed-by=" + MANAGED_BY
        settings.watching.server_timeout = WATCH_TIMEOUT
        settings.watching.client_timeout = WATCH_TIMEOUT + 10
        settings.posting.enabled = False  # Ferry posts its own Events, after the status they describe
        settings.posting.level = logging.WARNING
        runtime.caches.bind(kwargs)  # the indexes, by id: empty now, filled before any handler runs
        memo.runtime_task = asyncio.create_task(runtime.run(), name="ferry-runtime")

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        runtime.stop()
        task = memo.get("runtime_task")
        if task is not None:
            task.cancel()
        runtime.api.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)


def _register_kind(registry: kopf.OperatorRegistry, runtime: Runtime, kind: Kind, account_scoped: bool) -> None:
    resource = (kind.group, kind.version, kind.plural)

    @kopf.index(*resource, id=objects_index(kind), registry=registry)
    async def index_objects(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
        return {(namespace, name): trimmed(body)}

    if account_scoped:

        @kopf.index(*resource, id=accountref_index(kind), registry=registry)
        async def index_by_account(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> Any:
            account = account_of(spec)
            return {(namespace, account): name} if account else {}

        @kopf.index(*resource, id=sourceref_index(kind), registry=registry)
        async def index_by_source_account(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> Any:
            account = source_account_of(spec)
            return {(namespace, account): name} if account else {}

    @kopf.on.event(*resource, registry=registry)
    async def on_object(type: str | None, body: kopf.Body, **_: Any) -> None:
        runtime.object_event(kind, type, body)
