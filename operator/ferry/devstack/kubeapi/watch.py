"""Watch streams: newline-delimited JSON events, history replay, bookmarks and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp.web

from ferry.devstack.kubeapi import selectors, tables
from ferry.devstack.kubeapi.api import ObjectAPI
from ferry.devstack.kubeapi.resources import ResourceDef
from ferry.devstack.kubeapi.store import Change

Match = Callable[[dict[str, Any]], bool]


def _matcher(res: ResourceDef, ns: str | None, name: str | None, params: dict[str, str]) -> Match:
    lsel = selectors.label_selector(params.get("labelSelector"))
    fsel = selectors.field_selector(params.get("fieldSelector"))

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        if res.namespaced and ns is not None and meta.get("namespace") != ns:
            return False
        if name is not None and meta.get("name") != name:
            return False
        return lsel(obj) and fsel(obj)

    return match


def _event(change: Change, match: Match) -> tuple[str, dict[str, Any]] | None:
    """Translate a change into what a selective watcher sees (objects entering/leaving the selection)."""
    if change.type == "ADDED":
        return ("ADDED", change.obj) if match(change.obj) else None
    if change.type == "DELETED":
        return ("DELETED", change.obj) if match(change.old or change.obj) else None
    now_in, was_in = match(change.obj), change.old is not None and match(change.old)
    if now_in and was_in:
        return ("MODIFIED", change.obj)
    if now_in:
        return ("ADDED", change.obj)
    if was_in:
        return ("DELETED", change.obj)
    return None


async def serve_watch(
    api: ObjectAPI,
    raw: aiohttp.web.BaseRequest,
    res: ResourceDef,
    ns: str | None,
    name: str | None,
    params: dict[str, str],
    accept: str,
    bookmark_interval: float,
) -> aiohttp.web.StreamResponse:
    store = api.store
    match = _matcher(res, ns, name, params)
    as_table = tables.wants_table(accept)
    include = params.get("includeObject", "Metadata")
    bookmarks = params.get("allowWatchBookmarks") == "true"
    timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
    deadline = time.monotonic() + timeout if timeout else None

    # Subscribing before computing the initial events loses nothing: both happen without awaiting.
    watcher = store.subscribe(res.group_key)
    try:
        initial: list[tuple[str, dict[str, Any]]] = []
        since = params.get("resourceVersion") or "0"
        gone = False
        if since == "0":
            initial = [("ADDED", obj) for obj in store.items(res.group_key) if match(obj)]
        else:
            try:
                changes = store.since(res.group_key, int(since))
            except ValueError:
                changes = None
            if changes is None:
                gone = True
            else:
                initial = [ev for ev in (_event(c, match) for c in changes) if ev is not None]
        initial_rv = store.rv

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(raw)

        async def send(type_: str, obj: dict[str, Any]) -> None:
            out = api._out(res, obj)
            if as_table and type_ != "BOOKMARK":
                out = tables.table(res, [out], out["metadata"].get("resourceVersion", ""), include)
            await response.write(json.dumps({"type": type_, "object": out}).encode() + b"\n")

        async def bookmark(rv: int, initial_end: bool = False) -> None:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
            await response.write(json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n")

        with contextlib.suppress(ConnectionError, RuntimeError):
            if gone:
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({store.history[0].rv - 1})",
                    "reason": "Expired",
                    "code": 410,
                }
                await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return response
            for type_, obj in initial:
                await send(type_, obj)
            if bookmarks and params.get("sendInitialEvents") == "true":
                await bookmark(initial_rv, initial_end=True)
            last_bookmark = time.monotonic()
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break
                tick = min(1.0, bookmark_interval)  # also how soon a disconnected client is noticed
                wait = tick if deadline is None else min(tick, deadline - now)
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() - last_bookmark >= bookmark_interval:
                        await bookmark(store.rv)
                        last_bookmark = time.monotonic()
                    continue
                if change is None or watcher.overflowed:
                    break
                event = _event(change, match)
                if event is not None:
                    await send(*event)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response
    finally:
        store.unsubscribe(watcher)
