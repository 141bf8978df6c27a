"""The HTTP front: a kmock ``KubernetesEmulator`` whose Kubernetes routes are served by ``ObjectAPI``."""

from __future__ import annotations

import json
import logging
import pathlib
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from ferry.devstack.kubeapi import discovery, errors, protobuf, tables
from ferry.devstack.kubeapi.api import ObjectAPI, Options
from ferry.devstack.kubeapi.resources import ResourceDef
from ferry.devstack.kubeapi.watch import serve_watch

log = logging.getLogger(__name__)
FALLBACK_REQUESTS_KEPT = 1000

_PATH_RE = re.compile(
    r"^/(?:api/(?P<cv>[^/]+)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?"
    r"(?:/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>.+))?)?)?/?$"
)


def _json(data: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    headers = {"Content-Type": "application/json"}
    response = aiohttp.web.Response(body=json.dumps(data).encode(), status=status, headers=headers)
    for warning in warnings or []:
        response.headers.add("Warning", f'299 - "{warning}"')
    return response


LogSource = Callable[[str, str, str | None], pathlib.Path | None]


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """Kubernetes requests go to ``ObjectAPI``; anything else falls through to kmock's DSL reactions."""

    api: ObjectAPI = attrs.field(factory=ObjectAPI)
    bookmark_interval: float = 5.0
    # Where a pod's container log is kept (the local pod runner knows); None serves empty logs.
    log_source: LogSource | None = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Not recording requests (unlike kmock): a long-running emulator must not grow unboundedly.
        try:
            body = await raw_request.read()
            if raw_request.content_type == "application/vnd.kubernetes.protobuf":
                body = json.dumps(protobuf.decode(body)).encode()
            return await self._route(raw_request, body)
        except kmock.KubernetesError as e:
            return _json(errors.status_body(e), e.status)
        except Exception as e:
            log.exception("Unexpected failure serving %s %s", raw_request.method, raw_request.path)
            return await self._render_error(e)

    async def _route(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        path = raw.path
        method = raw.method.upper()
        resources = self.api.all_resources()
        if method == "GET":
            if path in ("/healthz", "/livez", "/readyz"):
                return aiohttp.web.Response(text="ok")
            if path == "/version":
                return _json(discovery.SERVER_VERSION)
            if path == "/api":
                return _json(discovery.api_versions())
            if path == "/apis":
                return _json(discovery.api_groups(resources))
            if path == "/openapi/v3":
                return _json(discovery.openapi_root(resources))
            if path.startswith("/openapi/v3/"):
                gv = path.removeprefix("/openapi/v3/").split("/")
                group, version = ("", gv[1]) if gv[0] == "api" else (gv[1], gv[2]) if len(gv) > 2 else ("", "")
                doc = discovery.openapi_gv(resources, group, version)
                if not doc["paths"]:
                    raise errors.api_error(404, "NotFound", "the server could not find the requested resource")
                return _json(doc)
            m = re.fullmatch(r"/apis/([^/]+)/?", path)
            if m:
                group_doc = discovery.api_group(resources, m.group(1))
                if group_doc is None:
                    raise errors.api_error(404, "NotFound", "the server could not find the requested resource")
                return _json(group_doc)
            m = re.fullmatch(r"/(?:api/(v1)|apis/([^/]+)/([^/]+))/?", path)
            if m:
                group, version = ("", m.group(1)) if m.group(1) else (m.group(2), m.group(3))
                res_list = discovery.resource_list(resources, group, version)
                if res_list is None:
                    raise errors.api_error(404, "NotFound", "the server could not find the requested resource")
                return _json(res_list)
        m = _PATH_RE.match(path)
        if m is None or not m.group("plural"):
            return await self._fallback(raw)
        group = m.group("g") or ""
        version = m.group("cv") or m.group("v")
        ns, plural, name, sub = m.group("ns"), m.group("plural"), m.group("name"), m.group("sub")
        ns, name = (urllib.parse.unquote(ns) if ns else None), (urllib.parse.unquote(name) if name else None)
        if group == "" and ns is not None and name is None and plural in ("status", "finalize"):
            ns, plural, name, sub = None, "namespaces", ns, plural  # namespaces/{name}/status
        res = self.api.find(group, version, plural)
        if ns is not None and not res.namespaced:
            raise errors.api_error(404, "NotFound", "the server could not find the requested resource")
        params = dict(raw.query)
        return await self._serve(raw, body, res, ns, name, sub, params, method)

    async def _fallback(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            request = await rendering.Request._parse(raw)
        except ValueError as e:
            raise errors.api_error(404, "NotFound", "the server could not find the requested resource") from e
        # kmock's views match only recorded requests; only these non-API ones are kept, and only recently.
        self._requests.append(request)
        del self._requests[:-FALLBACK_REQUESTS_KEPT]
        try:
            return await super()._handle(request)
        except NotImplementedError as e:  # no DSL reaction declared for this path
            raise errors.api_error(404, "NotFound", "the server could not find the requested resource") from e

    async def _serve(
        self,
        raw: aiohttp.web.BaseRequest,
        body: bytes,
        res: ResourceDef,
        ns: str | None,
        name: str | None,
        sub: str | None,
        params: dict[str, str],
        method: str,
    ) -> aiohttp.web.StreamResponse:
        api = self.api
        accept = raw.headers.get("Accept", "")
        opts = Options(params)
        if sub is not None and not (sub == "status" and res.status_subresource) and sub not in res.extra_subresources:
            raise errors.api_error(404, "NotFound", "the server could not find the requested resource")
        if sub == "log":
            api.get(res, ns, name or "")
            return aiohttp.web.Response(text=self._log(ns or "", name or "", params), content_type="text/plain")
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await serve_watch(api, raw, res, ns, name, params, accept, self.bookmark_interval)
        if name is None:
            if method == "GET":
                items, rv, cont = api.list_objects(res, ns, params)
                if tables.wants_table(accept):
                    return _json(tables.table(res, items, rv, params.get("includeObject", "Metadata"), cont))
                meta: dict[str, Any] = {"resourceVersion": rv}
                if cont:
                    meta["continue"] = cont
                return _json({"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta, "items": items})
            if method == "POST":
                new_obj = api.create(res, ns, body, opts)
                return _json(new_obj, 201, opts.warnings)
            if method == "DELETE":
                deleted = api.delete_collection(res, ns, params, opts)
                return _json(
                    {
                        "kind": res.list_kind,
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(api.store.rv)},
                        "items": deleted,
                    }
                )
            raise errors.method_not_allowed()
        if method == "GET":
            obj = api.get(res, ns, name)
            if tables.wants_table(accept):
                return _json(
                    tables.table(
                        res, [obj], obj["metadata"]["resourceVersion"], params.get("includeObject", "Metadata")
                    )
                )
            return _json(obj)
        if method == "PUT":
            return _json(api.update(res, ns, name, body, sub, opts), 200, opts.warnings)
        if method == "PATCH":
            patched, created = api.patch(res, ns, name, body, raw.headers.get("Content-Type", ""), sub, opts)
            return _json(patched, 201 if created else 200, opts.warnings)
        if method == "DELETE" and sub is None:
            return _json(api.delete(res, ns, name, body, params, opts))
        raise errors.method_not_allowed()

    def _log(self, namespace: str, pod: str, params: dict[str, str]) -> str:
        path = self.log_source(namespace, pod, params.get("container")) if self.log_source else None
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace")
        tail = params.get("tailLines")
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        return text
