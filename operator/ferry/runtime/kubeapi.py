"""The runtime's writes to the Kubernetes API, as coroutines.

The official client is synchronous; each call borrows a thread from a small pool for its duration
only, so no object ever holds a thread between passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from ferry.api.kinds import Kind
from ferry.kube import client
from ferry.kube import status_apply as status_writer
from ferry.kube.events import event_body
from ferry.metrics import API_WRITES
from ferry.runtime.lifecycle import PodDeletion
from ferry.runtime.objects import FINALIZER
from ferry.runtime.plan import Event
from ferry.runtime.workeraccess import role_binding, service_account
from ferry.runtime.world import WorkerSettings

T = TypeVar("T")
JSON_PATCH = "application/json-patch+json"


def describe_error(exc: BaseException) -> str:
    """One line about a failed API call, for a log line without a traceback."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def is_refusal(exc: ApiException) -> bool:
    """The API server refused the request for a reason a user can act on (not a conflict, not throttling)."""
    return 400 <= (exc.status or 0) < 500 and exc.status not in (409, 429)


def refusal(exc: ApiException) -> str:
    """The API server's own message of a refusal (its Status body), else the status line."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else describe_error(exc)


class KubeApi:
    def __init__(self, threads: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ferry-api")

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def apply_status(
        self, kind: Kind, namespace: str, name: str, status: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        """Server-side apply of the fields `manager` owns in the status (fields it leaves out are dropped);
        returns the object as written."""
        API_WRITES.labels(verb="apply-status").inc()
        return await self._call(status_writer.apply_status, kind, namespace, name, status, manager)

    async def set_finalizer(self, kind: Kind, body: Mapping[str, Any], present: bool) -> dict[str, Any] | None:
        """Add or remove Ferry's finalizer with a JSON patch that fails if the list changed meanwhile."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if present == (FINALIZER in finalizers):
            return None
        if present:
            ops: list[dict[str, Any]] = (
                [
                    {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
                ]
                if finalizers
                else [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
            )
        else:
            index = finalizers.index(FINALIZER)
            ops = [
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ]
        API_WRITES.labels(verb="finalizer").inc()
        try:
            written: Any = await self._call(
                client.custom().patch_namespaced_custom_object,
                kind.group,
                kind.version,
                meta["namespace"],
                kind.plural,
                meta["name"],
                ops,
                _content_type=JSON_PATCH,
            )
        except ApiException as exc:
            if exc.status == 404 and not present:
                return None  # gone already
            raise
        return dict(written)

    async def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create a pod; False when one of that name exists already (an earlier pass created it)."""
        API_WRITES.labels(verb="create-pod").inc()
        try:
            await self._call(client.core().create_namespaced_pod, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def ensure_worker_access(self, namespace: str, workers: WorkerSettings) -> None:
        """The worker service account and its RoleBinding in a namespace (kept as they are if they exist)."""
        for body, create in (
            (service_account(namespace, workers), client.core().create_namespaced_service_account),
            (role_binding(namespace, workers), client.rbac().create_namespaced_role_binding),
        ):
            API_WRITES.labels(verb=f"create-{body['kind'].lower()}").inc()
            try:
                await self._call(create, namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    async def delete_pod(self, namespace: str, deletion: PodDeletion) -> None:
        API_WRITES.labels(verb="delete-pod").inc()
        try:
            await self._call(
                client.core().delete_namespaced_pod,
                deletion.name,
                namespace,
                grace_period_seconds=deletion.grace_seconds,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def emit(self, involved: Mapping[str, Any], event: Event) -> None:
        """Record an Event; losing one never fails the pass that sent it."""
        API_WRITES.labels(verb="event").inc()
        namespace = involved["metadata"]["namespace"]
        with contextlib.suppress(ApiException):
            await self._call(
                client.core().create_namespaced_event,
                namespace,
                event_body(involved, event.reason, event.message, event.warning),
            )
