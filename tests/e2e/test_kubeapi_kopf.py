"""kopf 1.45 end to end against the API emulator: each change is handled exactly once."""

from __future__ import annotations

import asyncio
import collections
import pathlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from kubeapi_fixtures import TEST_CRD, WIDGET, k8s_client, kubeapi_url, kubeconfig, wait_for

__all__ = ["k8s_client", "kubeapi_url", "kubeconfig"]
pytestmark = pytest.mark.e2e
G, V, P = "test.ferry.dev", "v1", "widgets"


@pytest.fixture
def calls() -> collections.Counter[str]:
    return collections.Counter()


@pytest.fixture
def operator(
    kubeconfig: pathlib.Path, k8s_client: Any, calls: collections.Counter[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    kubernetes.client.ApiextensionsV1Api(k8s_client).create_custom_resource_definition(yaml.safe_load(TEST_CRD))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = True
        settings.watching.server_timeout = 10
        settings.networking.request_timeout = 10

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(G, V, P, registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        calls["create"] += 1
        kopf.info(body, reason="Created", message="widget created")  # posted as a core v1 Event
        patch.status["phase"] = "Created"

    @kopf.on.update(G, V, P, registry=registry)
    def updated(spec: Any, patch: kopf.Patch, **_: Any) -> None:
        calls["update"] += 1
        patch.status["phase"] = f"Updated{spec['replicas']}"

    @kopf.on.delete(G, V, P, registry=registry)
    def deleted(**_: Any) -> None:
        calls["delete"] += 1

    stop = threading.Event()
    ready = threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready)
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_kopf_handles_each_change_once(operator: None, k8s_client: Any, calls: collections.Counter[str]) -> None:
    crs = kubernetes.client.CustomObjectsApi(k8s_client)
    body = {**WIDGET, "metadata": {"name": "k"}, "spec": {"source": "s", "mode": "Stream"}}
    crs.create_namespaced_custom_object(G, V, "default", P, body)

    def phase() -> str:
        obj = crs.get_namespaced_custom_object(G, V, "default", P, "k")
        return str((obj.get("status") or {}).get("phase"))

    wait_for(lambda: phase() == "Created")
    obj = crs.get_namespaced_custom_object(G, V, "default", P, "k")
    assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    crs.patch_namespaced_custom_object(G, V, "default", P, "k", {"spec": {"replicas": 2}})
    wait_for(lambda: phase() == "Updated2")
    crs.patch_namespaced_custom_object(G, V, "default", P, "k", {"spec": {"replicas": 3}})
    wait_for(lambda: phase() == "Updated3")
    import time

    time.sleep(1.0)  # a window for any duplicate handling to show up
    assert calls == {"create": 1, "update": 2}

    events = kubernetes.client.CoreV1Api(k8s_client).list_namespaced_event(
        "default", field_selector="involvedObject.name=k"
    )
    assert events.items, "kopf posts k8s events"
    assert events.items[0].reason == "Created" and events.items[0].involved_object.kind == "Widget"

    crs.delete_namespaced_custom_object(G, V, "default", P, "k")

    def gone() -> bool:
        try:
            crs.get_namespaced_custom_object(G, V, "default", P, "k")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone)
    assert calls == {"create": 1, "update": 2, "delete": 1}
