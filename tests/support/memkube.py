"""An in-memory cluster for the runtime: an API server (MemKube) and kopf's indexes (MemCaches).

MemKube stands in for the runtime's KubeApi: it keeps objects and pods in dicts, bumps one integer
resourceVersion per write as the API server does, records every call in order, and can be told to refuse
pod creations (admission, quota) or to fail calls as a lost connection would. It never reaches a cluster:
a KubeApi method it does not implement fails the test.

MemCaches holds the indexes handlers.py builds with kopf, as plain dicts of lists bound to the runtime's
Caches, and delivers the events kopf would (Runtime.object_event, Runtime.pod_event). The caches learn of
the server's state only when told to (Cluster.sync), so a test chooses how stale they are.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from ferry.api.kinds import Kind
from ferry.kinds.registry import PLUGINS
from ferry.kube.manifests import LABEL_OWNER_UID, LABEL_SLOT
from ferry.runtime.controller import AnyController as Controller
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
from ferry.runtime.kubeapi import KubeApi
from ferry.runtime.lifecycle import PodDeletion
from ferry.runtime.objects import FINALIZER, ObjectKey
from ferry.runtime.plan import Event
from ferry.runtime.pods import pod_view
from ferry.runtime.slots import SlotLimits
from ferry.runtime.world import WorkerSettings

T = TypeVar("T")
ACCOUNT_SCOPED = tuple(p.kind for p in PLUGINS if p.account_scoped)  # the kinds indexed by accountRef
ROOMY = SlotLimits(total=10, per_namespace=10)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refused(status: int, message: str) -> ApiException:
    """An API server's refusal, with its Status body as the server sends it."""
    reason = {403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}.get(status, "Error")
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    return exc


@dataclass(frozen=True)
class Call:
    """One call the runtime made: `verb` is one of add-finalizer, remove-finalizer, create-pod, delete-pod,
    apply-status, event, worker-access; `target` the object's or pod's name (the namespace for worker-access)."""

    verb: str
    target: str
    detail: str = ""  # an event's reason, a status's phase
    at: float = 0.0  # time.monotonic() when it was made

    def __str__(self) -> str:
        return f"{self.verb} {self.target}" + (f" {self.detail}" if self.detail else "")


class MemKube(KubeApi):
    """The API server, in memory. Objects are keyed (kind, namespace, name), pods (namespace, name)."""

    def __init__(self) -> None:  # no thread pool: nothing here blocks
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.events: list[tuple[str, Event]] = []  # (involved object's name, event)
        self._versions = itertools.count(1000)
        self._uids = itertools.count(1)
        self._owned: dict[tuple[str, str, str, str], set[str]] = {}  # (kind, ns, name, manager) -> status fields
        self._refuse_pods: dict[str | None, ApiException] = {}  # pod name (None: any) -> the refusal
        self._refuse_access: ApiException | None = None
        self._failures: list[BaseException] = []

    # -- what a test tells the server ----------------------------------------------------------------------------

    def refuse_pods(self, status: int = 403, message: str = "forbidden", name: str | None = None) -> None:
        """Refuse creating pods (all, or the one named) as admission or a quota would."""
        self._refuse_pods[name] = refused(status, message)

    def allow_pods(self) -> None:
        self._refuse_pods.clear()

    def refuse_worker_access(self, status: int = 403, message: str = "forbidden") -> None:
        self._refuse_access = refused(status, message)

    def allow_worker_access(self) -> None:
        self._refuse_access = None

    def fail_next(self, times: int = 1, exc: BaseException | None = None) -> None:
        """The next `times` calls fail before reaching the server, as with a dropped connection."""
        self._failures += [exc or ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))] * times

    # -- what users and workers do -------------------------------------------------------------------------------

    def create(self, kind: Kind, body: Mapping[str, Any], created: datetime | None = None) -> dict[str, Any]:
        """An object created by a user: the server fills in uid, resourceVersion, generation and creation time."""
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "ns")
        meta.setdefault("uid", f"uid-{meta['name']}-{next(self._uids)}")
        meta.setdefault("creationTimestamp", stamp(created or datetime.now(UTC)))
        meta["generation"] = 1
        meta["resourceVersion"] = self._version()
        obj.setdefault("apiVersion", f"{kind.group}/{kind.version}")
        obj.setdefault("kind", kind.kind)
        obj.setdefault("spec", {})
        self.objects[(kind.kind, meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: Kind, name: str, namespace: str = "ns") -> dict[str, Any] | None:
        found = self.objects.get((kind.kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def write_status(
        self, kind: Kind, name: str, status: Mapping[str, Any], manager: str = "ferry-worker", namespace: str = "ns"
    ) -> dict[str, Any]:
        """A worker's (or another manager's) server-side apply of its part of the status."""
        return self._apply(kind, namespace, name, dict(status), manager)

    def update_spec(self, kind: Kind, name: str, spec: Mapping[str, Any], namespace: str = "ns") -> dict[str, Any]:
        obj = self._object(kind, namespace, name)
        obj["spec"] = {**obj.get("spec", {}), **copy.deepcopy(dict(spec))}
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = self._version()
        return copy.deepcopy(obj)

    def delete(self, kind: Kind, name: str, namespace: str = "ns") -> None:
        """A user's deletion: marked while finalizers remain, gone once none do."""
        obj = self._object(kind, namespace, name)
        if obj["metadata"].get("finalizers"):
            obj["metadata"].setdefault("deletionTimestamp", stamp(datetime.now(UTC)))
            obj["metadata"]["resourceVersion"] = self._version()
        else:
            del self.objects[(kind.kind, namespace, name)]

    def add_pod(self, manifest: Mapping[str, Any], phase: str = "Running") -> dict[str, Any]:
        """A pod that exists already (started by an earlier process, say), in the given phase."""
        pod = copy.deepcopy(dict(manifest))
        meta = pod["metadata"]
        meta.setdefault("namespace", "ns")
        meta.update(uid=f"pod-uid-{next(self._uids)}", creationTimestamp=stamp(datetime.now(UTC)))
        meta["resourceVersion"] = self._version()
        self.pods[(meta["namespace"], meta["name"])] = pod
        return self.set_pod_status(meta["name"], phase, namespace=meta["namespace"])

    def set_pod_status(
        self,
        name: str,
        phase: str,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        waiting: tuple[str, str] | None = None,
        namespace: str = "ns",
    ) -> dict[str, Any]:
        """What the kubelet reports of a pod: its phase, and how its container ended or why it waits."""
        pod = self.pods[(namespace, name)]
        state: dict[str, Any] = {}
        if exit_code is not None:
            state["terminated"] = {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "message": message,
                "finishedAt": stamp(datetime.now(UTC)),
            }
        elif waiting is not None:
            state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
        elif phase == "Running":
            state["running"] = {"startedAt": stamp(datetime.now(UTC))}
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": "worker", "state": state, "restartCount": 0}]}
        pod["metadata"]["resourceVersion"] = self._version()
        return copy.deepcopy(pod)

    def pod_names(self) -> list[str]:
        return sorted(name for _, name in self.pods)

    def log(self, *verbs: str) -> list[str]:
        """The calls made so far, as text (only those of the given verbs, if any)."""
        return [str(c) for c in self.calls if not verbs or c.verb in verbs]

    # -- the KubeApi the runtime calls ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise AssertionError("MemKube does not implement this KubeApi method: it would have reached a cluster")

    def close(self) -> None:
        pass

    async def apply_status(
        self, kind: Kind, namespace: str, name: str, status: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        self._record("apply-status", name, str(status.get("phase") or ""))
        return self._apply(kind, namespace, name, status, manager)

    async def set_finalizer(self, kind: Kind, body: Mapping[str, Any], present: bool) -> dict[str, Any] | None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if present == (FINALIZER in finalizers):
            return None  # as KubeApi: nothing to change, no call
        self._record("add-finalizer" if present else "remove-finalizer", meta["name"])
        key = (kind.kind, meta["namespace"], meta["name"])
        obj = self.objects.get(key)
        if obj is None:
            if not present:
                return None  # gone already
            raise refused(404, f'{kind.plural} "{meta["name"]}" not found')
        if list(obj["metadata"].get("finalizers") or []) != finalizers:  # the JSON patch's "test" op
            raise refused(422, "the finalizers changed meanwhile")
        changed = [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
        obj["metadata"]["finalizers"] = changed
        obj["metadata"]["resourceVersion"] = self._version()
        written = copy.deepcopy(obj)
        if not changed and obj["metadata"].get("deletionTimestamp"):
            del self.objects[key]  # the last finalizer of a deleted object: it goes
        return written

    async def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        self._record("create-pod", name)
        refusal = self._refuse_pods.get(name) or self._refuse_pods.get(None)
        if refusal is not None:
            raise refusal
        if (namespace, name) in self.pods:
            return False
        pod = copy.deepcopy(manifest)
        pod["metadata"].update(
            namespace=namespace,
            uid=f"pod-uid-{next(self._uids)}",
            resourceVersion=self._version(),
            creationTimestamp=stamp(datetime.now(UTC)),
        )
        pod["status"] = {"phase": "Pending"}
        self.pods[(namespace, name)] = pod
        return True

    async def delete_pod(self, namespace: str, deletion: PodDeletion) -> None:
        self._record("delete-pod", deletion.name)
        self.pods.pop((namespace, deletion.name), None)

    async def ensure_worker_access(self, namespace: str, workers: WorkerSettings) -> None:
        self._record("worker-access", namespace)
        if self._refuse_access is not None:
            raise self._refuse_access

    async def emit(self, involved: Mapping[str, Any], event: Event) -> None:
        name = involved["metadata"]["name"]
        self._record("event", name, event.reason)
        self.events.append((name, event))

    # -- inside the server ---------------------------------------------------------------------------------------

    def _record(self, verb: str, target: str, detail: str = "") -> None:
        self.calls.append(Call(verb, target, detail, time.monotonic()))
        if self._failures:
            raise self._failures.pop(0)

    def _version(self) -> str:
        return str(next(self._versions))

    def _object(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((kind.kind, namespace, name))
        if obj is None:
            raise refused(404, f'{kind.plural} "{name}" not found')
        return obj

    def _apply(self, kind: Kind, namespace: str, name: str, status: dict[str, Any], manager: str) -> dict[str, Any]:
        """Server-side apply of a status part: the manager's fields it leaves out are dropped, others' kept."""
        obj = self._object(kind, namespace, name)
        owned = self._owned.setdefault((kind.kind, namespace, name, manager), set())
        kept = {k: v for k, v in (obj.get("status") or {}).items() if k not in owned}
        obj["status"] = {**kept, **copy.deepcopy(status)}
        owned.clear()
        owned.update(status)
        obj["metadata"]["resourceVersion"] = self._version()
        return copy.deepcopy(obj)


class MemCaches:
    """kopf's indexes, as handlers.py fills them, in plain dicts of lists bound to the runtime's Caches.

    Each put/remove updates the indexes first and then delivers the event, in kopf's order."""

    def __init__(self, runtime: Runtime, account_scoped: Sequence[Kind] = ACCOUNT_SCOPED) -> None:
        self.runtime = runtime
        self.kinds = {c.kind.kind: c.kind for c in runtime.controllers.values()}
        self.account_scoped = [k for k in account_scoped if k.kind in self.kinds]
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.indices: dict[str, dict[Any, list[Any]]] = {}
        self._index()
        runtime.caches.bind(self.indices)

    def object(self, kind: Kind, name: str, namespace: str = "ns") -> dict[str, Any] | None:
        """The object as the caches last saw it."""
        return self.objects.get((kind.kind, namespace, name))

    def put_object(self, kind: Kind, body: Mapping[str, Any], event_type: str | None = None) -> None:
        meta = body["metadata"]
        key = (kind.kind, meta["namespace"], meta["name"])
        if event_type is None:
            event_type = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = copy.deepcopy(dict(body))
        self._index()
        self.runtime.object_event(kind, event_type, copy.deepcopy(dict(body)))

    def remove_object(self, kind: Kind, name: str, namespace: str = "ns") -> None:
        body = self.objects.pop((kind.kind, namespace, name))
        self._index()
        self.runtime.object_event(kind, "DELETED", body)

    def put_pod(self, body: Mapping[str, Any], event_type: str | None = None) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type is None:
            event_type = "MODIFIED" if key in self.pods else "ADDED"
        self.pods[key] = copy.deepcopy(dict(body))
        self._index()
        self.runtime.pod_event(event_type, copy.deepcopy(dict(body)))

    def remove_pod(self, name: str, namespace: str = "ns") -> None:
        body = self.pods.pop((namespace, name))
        self._index()
        self.runtime.pod_event("DELETED", body)

    def _index(self) -> None:
        indices: dict[str, dict[Any, list[Any]]] = {}
        for kind in self.kinds.values():
            indices[objects_index(kind)] = {}
        for kind in self.account_scoped:
            indices[accountref_index(kind)] = {}
            indices[sourceref_index(kind)] = {}
        for (kind_name, namespace, name), body in self.objects.items():
            kind = self.kinds[kind_name]
            indices[objects_index(kind)][(namespace, name)] = [trimmed(body)]
            if kind in self.account_scoped:
                spec = body.get("spec") or {}
                for index, account in (
                    (accountref_index, account_of(spec)),
                    (sourceref_index, source_account_of(spec)),
                ):
                    if account:
                        indices[index(kind)].setdefault((namespace, account), []).append(name)
        pods: dict[Any, list[Any]] = {}
        slot_pods: dict[Any, list[Any]] = {}
        for (namespace, name), body in self.pods.items():
            labels = body["metadata"].get("labels") or {}
            view = pod_view(body)
            if owner := labels.get(LABEL_OWNER_UID):
                pods.setdefault(owner, []).append(view)
            if labels.get(LABEL_SLOT) == "true" and not view.finished:
                slot_pods.setdefault(namespace, []).append(name)
        indices[PODS_INDEX] = pods
        indices[SLOT_PODS_INDEX] = slot_pods
        self.indices.clear()
        self.indices.update(indices)


class Cluster:
    """A Runtime over MemKube and MemCaches: the server changes as the runtime and the test write to it, and the
    caches follow when the test calls sync() (objects, pods or both), as kopf's watches would."""

    def __init__(
        self,
        controllers: Sequence[Controller],
        workers: WorkerSettings,
        limits: SlotLimits = ROOMY,
        account_scoped: Sequence[Kind] = ACCOUNT_SCOPED,
    ) -> None:
        self.api = MemKube()
        self.runtime = Runtime(controllers=controllers, workers=workers, limits=limits, api=self.api)
        self.caches = MemCaches(self.runtime, account_scoped)

    def create(self, kind: Kind, body: Mapping[str, Any], created: datetime | None = None) -> dict[str, Any]:
        """A user creates an object and the caches see it."""
        obj = self.api.create(kind, body, created)
        self.sync(pods=False)
        return obj

    def sync(self, objects: bool = True, pods: bool = True) -> None:
        """Deliver what changed on the server since the caches last looked."""
        if objects:
            for (kind_name, namespace, name), body in list(self.api.objects.items()):
                cached = self.caches.objects.get((kind_name, namespace, name))
                if cached is None or cached["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
                    self.caches.put_object(self.caches.kinds[kind_name], body)
            for kind_name, namespace, name in [k for k in self.caches.objects if k not in self.api.objects]:
                self.caches.remove_object(self.caches.kinds[kind_name], name, namespace)
        if pods:
            for key, pod in list(self.api.pods.items()):
                cached = self.caches.pods.get(key)
                if cached is None or cached["metadata"]["resourceVersion"] != pod["metadata"]["resourceVersion"]:
                    self.caches.put_pod(pod)
            for namespace, name in [k for k in self.caches.pods if k not in self.api.pods]:
                self.caches.remove_pod(name, namespace)

    def key(self, kind: Kind, name: str, namespace: str = "ns") -> ObjectKey:
        return ObjectKey(kind.kind, namespace, name)

    async def reconcile(self, kind: Kind, name: str, namespace: str = "ns") -> None:
        """One pass of the object, as a runtime worker runs it."""
        await self.runtime.reconcile(self.key(kind, name, namespace))

    async def queued(self) -> list[ObjectKey]:
        """The keys waiting in the runtime's queue now, taken out of it."""
        keys: list[ObjectKey] = []
        while len(self.runtime.queue):
            key = await self.runtime.queue.get()
            self.runtime.queue.done(key)
            keys.append(key)
        return keys

    def status(self, kind: Kind, name: str, namespace: str = "ns") -> dict[str, Any]:
        """The object's status on the server."""
        found = self.api.get(kind, name, namespace)
        assert found is not None, f"{kind.kind} {namespace}/{name} does not exist"
        return dict(found.get("status") or {})


def names(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(str(o["metadata"]["name"]) for o in objects)
