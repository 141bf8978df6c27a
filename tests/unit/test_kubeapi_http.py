"""HTTP-level behaviour of the API emulator, served in the test's own event loop."""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import sys
from typing import Any

import aiohttp
import yaml

from ferry.devstack.kubeapi import KubeAPI

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from kubeapi_fixtures import TEST_CRD, WIDGET, kubeapi

__all__ = ["kubeapi"]
CRS = "/apis/test.ferry.dev/v1/namespaces/default/widgets"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


async def call(
    api: KubeAPI, method: str, path: str, body: Any = None, ctype: str = "application/json", **headers: str
) -> tuple[int, Any]:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, data=data, headers={"Content-Type": ctype, **headers}) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


async def with_crd(api: KubeAPI) -> None:
    status, _ = await call(
        api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(TEST_CRD)
    )
    assert status == 201


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {**WIDGET, "metadata": {"name": name}, "spec": {"source": "s", "mode": "Stream", **spec}}


async def watch(api: KubeAPI, path: str, count: int, timeout: float = 3) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.get(api.url + path) as resp:

        async def read() -> None:
            async for line in resp.content:
                events.append(json.loads(line))
                if len(events) >= count:
                    return

        await asyncio.wait_for(read(), timeout)
    return events


async def test_discovery_and_crd_status(kubeapi: KubeAPI) -> None:
    await with_crd(kubeapi)
    _, groups = await call(kubeapi, "GET", "/apis")
    assert "test.ferry.dev" in [g["name"] for g in groups["groups"]]
    _, resources = await call(kubeapi, "GET", "/apis/test.ferry.dev/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["widgets"]["shortNames"] == ["wdg"] and by_name["widgets"]["categories"] == ["ferry"]
    assert by_name["widgets"]["namespaced"] is True and "widgets/status" in by_name
    _, core = await call(kubeapi, "GET", "/api/v1")
    assert {"pods", "pods/status", "pods/log", "secrets", "namespaces"} <= {r["name"] for r in core["resources"]}
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.ferry.dev"
    _, crd = await call(kubeapi, "GET", crd_path)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert crd["status"]["acceptedNames"]["listKind"] == "WidgetList"
    _, root = await call(kubeapi, "GET", "/openapi/v3")
    assert "apis/test.ferry.dev/v1" in root["paths"]
    status, _ = await call(kubeapi, "GET", "/openapi/v2")
    assert status == 404
    status, err = await call(kubeapi, "GET", "/apis/nope.dev/v1/things")
    assert status == 404 and err["kind"] == "Status"


async def test_watch_replay_selectors_bookmarks_and_gone(kubeapi: KubeAPI) -> None:
    await with_crd(kubeapi)
    _, listing = await call(kubeapi, "GET", CRS)
    rv = listing["metadata"]["resourceVersion"]
    labelled = widget("a")
    labelled["metadata"]["labels"] = {"app": "x"}
    await call(kubeapi, "POST", CRS, labelled)
    await call(kubeapi, "PATCH", f"{CRS}/a", {"metadata": {"labels": {"app": "y"}}}, "application/merge-patch+json")
    await call(kubeapi, "PATCH", f"{CRS}/a", {"metadata": {"labels": {"app": "x"}}}, "application/merge-patch+json")
    events = await watch(kubeapi, f"{CRS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx", 3)
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3

    kubeapi.emulator.bookmark_interval = 0.1
    events = await watch(kubeapi, f"{CRS}?watch=true&allowWatchBookmarks=true&fieldSelector=metadata.name%3Da", 2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]

    kubeapi.emulator.api.store.history = collections.deque(maxlen=2)
    for i in range(3):
        await call(kubeapi, "POST", CRS, widget(f"n{i}"))
    events = await watch(kubeapi, f"{CRS}?watch=true&resourceVersion={rv}", 1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_watch_timeout_and_tables(kubeapi: KubeAPI) -> None:
    await with_crd(kubeapi)
    await call(kubeapi, "POST", CRS, widget("a"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{kubeapi.url}{CRS}?watch=true&timeoutSeconds=1", headers={"Accept": TABLE}) as resp,
    ):
        lines = [json.loads(line) async for line in resp.content]
    assert len(lines) == 1 and lines[0]["object"]["kind"] == "Table"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{kubeapi.url}{CRS}?includeObject=Object", headers={"Accept": TABLE}) as resp,
    ):
        table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Mode", "Phase", "Age"]
    assert table["rows"][0]["cells"][:3] == ["a", "Stream", None]
    assert table["rows"][0]["object"]["kind"] == "Widget"


async def test_status_subresource_put_and_conflicts(kubeapi: KubeAPI) -> None:
    await with_crd(kubeapi)
    _, obj = await call(kubeapi, "POST", CRS, widget("a"))
    obj["status"] = {"phase": "Done"}
    obj["spec"]["replicas"] = 5
    status, updated = await call(kubeapi, "PUT", f"{CRS}/a/status", obj)
    assert status == 200 and updated["status"] == {"phase": "Done"} and updated["spec"]["replicas"] == 1
    assert updated["metadata"]["generation"] == 1
    status, err = await call(kubeapi, "PUT", f"{CRS}/a/status", obj)
    assert status == 409 and err["reason"] == "Conflict"
    status, err = await call(
        kubeapi, "PATCH", f"{CRS}/a/status", {"status": {"phase": 1}}, "application/merge-patch+json"
    )
    assert status == 422 and err["details"]["causes"][0]["field"] == "status.phase"
    status, err = await call(kubeapi, "POST", CRS, {**widget("b"), "kind": "Gadget"})
    assert status == 400


async def test_dry_run_delete_collection_and_propagation(kubeapi: KubeAPI) -> None:
    await with_crd(kubeapi)
    status, _ = await call(kubeapi, "POST", f"{CRS}?dryRun=All", widget("dry"))
    assert status == 201
    assert (await call(kubeapi, "GET", f"{CRS}/dry"))[0] == 404
    _, owner = await call(kubeapi, "POST", CRS, widget("owner"))
    ref = {"apiVersion": "test.ferry.dev/v1", "kind": "Widget", "name": "owner", "uid": owner["metadata"]["uid"]}
    await call(
        kubeapi,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "dep", "ownerReferences": [ref]}},
    )
    await call(kubeapi, "DELETE", f"{CRS}/owner", {"propagationPolicy": "Orphan"})
    _, dep = await call(kubeapi, "GET", "/api/v1/namespaces/default/configmaps/dep")
    assert "ownerReferences" not in dep["metadata"]
    for name in ("x1", "x2"):
        body = widget(name)
        body["metadata"]["labels"] = {"batch": "1"}
        await call(kubeapi, "POST", CRS, body)
    status, _ = await call(kubeapi, "DELETE", f"{CRS}?labelSelector=batch%3D1")
    assert status == 200
    _, listing = await call(kubeapi, "GET", CRS)
    assert listing["items"] == []


async def test_namespace_termination_and_kmock_fallback(kubeapi: KubeAPI) -> None:
    await call(kubeapi, "POST", "/api/v1/namespaces", {"metadata": {"name": "t"}})
    await call(
        kubeapi, "POST", "/api/v1/namespaces/t/configmaps", {"metadata": {"name": "held", "finalizers": ["x/y"]}}
    )
    _, ns = await call(kubeapi, "DELETE", "/api/v1/namespaces/t")
    assert ns["status"]["phase"] == "Terminating"
    status, err = await call(kubeapi, "POST", "/api/v1/namespaces/t/configmaps", {"metadata": {"name": "new"}})
    assert status == 403 and err["reason"] == "Forbidden"
    await call(
        kubeapi,
        "PATCH",
        "/api/v1/namespaces/t/configmaps/held",
        {"metadata": {"finalizers": None}},
        "application/merge-patch+json",
    )
    assert (await call(kubeapi, "GET", "/api/v1/namespaces/t"))[0] == 404
    kubeapi.emulator["get /custom"] << b"hello"
    assert (await call(kubeapi, "GET", "/custom")) == (200, "hello")
    assert (await call(kubeapi, "GET", "/healthz")) == (200, "ok")
