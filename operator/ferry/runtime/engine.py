"""The runtime: kopf's watches feed caches and a work queue; a few async workers reconcile one key at a time.

A pass reads the object and what it depends on from the caches (never from the API), asks the kind's
controller for a Plan and carries it out. Passes are triggered by events of the object, of its worker
pods and of related objects (a job's account), and by the Plan's own requeue wishes (backoff, timeouts):
an object that nothing happens to costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from prometheus_client.core import Metric

from ferry.api.kinds import Kind
from ferry.kube.manifests import LABEL_KIND, LABEL_ROLE, LABEL_SLOT
from ferry.metrics import (
    QUEUE_DEPTH,
    RECONCILE_SECONDS,
    RECONCILES,
    SLOTS_IN_USE,
    SLOTS_WAITING,
    WORKER_RESTARTS,
    WORKERS_STARTED,
    JobFigures,
    ObjectsCollector,
    ProgressMeter,
    count,
)
from ferry.retry import backoff
from ferry.runtime.controller import AnyController, ExportsGauges
from ferry.runtime.kubeapi import KubeApi, describe_error, is_refusal, refusal
from ferry.runtime.objects import ObjectKey, key_of, meta_of
from ferry.runtime.plan import Plan, PodCreation
from ferry.runtime.pods import FAILED_CREATE, PodView, pod_view
from ferry.runtime.queue import WorkQueue
from ferry.runtime.slots import SlotLimits, WorkerSlots
from ferry.runtime.world import WorkerSettings

log = logging.getLogger(__name__)

EXPECTATION_SECONDS = 30.0  # how long a created pod is assumed to exist before the cache shows it
REFUSED_RETRY_SECONDS = 5.0  # a refused pod is created again after this, doubling up to the maximum
REFUSED_RETRY_MAX_SECONDS = 300.0


class Index(Protocol):
    def get(self, key: Any, default: Any = ...) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __getitem__(self, key: Any) -> Any: ...


def objects_index(kind: Kind) -> str:
    return f"ferry_{kind.plural}"


def accountref_index(kind: Kind) -> str:
    return f"ferry_{kind.plural}_by_account"


def sourceref_index(kind: Kind) -> str:
    return f"ferry_{kind.plural}_by_source_account"


def account_of(spec: Mapping[str, Any]) -> str | None:
    """The account an object runs on (spec.accountRef): the key of its accountref index."""
    return (spec.get("accountRef") or {}).get("name") or None


def source_account_of(spec: Mapping[str, Any]) -> str | None:
    """The account a copy reads from when it is another (spec.source.accountRef, or that of its tasks, which all
    name the same): the key of its sourceref index."""
    tasks = spec.get("tasks")
    source = (tasks[0] if isinstance(tasks, list) and tasks else spec).get("source") or {}
    return (source.get("accountRef") or {}).get("name") or None


PODS_INDEX = "ferry_pods"
SLOT_PODS_INDEX = "ferry_slot_pods"


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """An object as the caches keep it: without managedFields and kubectl's copy of the last applied spec."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return {**{k: body[k] for k in body if k != "metadata"}, "metadata": meta}


class Caches:
    """Reads kopf's indexes, which kopf fills before any handler runs and keeps current from its watches."""

    def __init__(self) -> None:
        self._indices: Mapping[str, Index] = {}

    def bind(self, indices: Mapping[str, Any]) -> None:
        self._indices = indices

    def object(self, kind: Kind, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = list(self._indices[objects_index(kind)].get((namespace, name), []))
        return found[0] if found else None

    def objects(self, kind: Kind) -> Iterator[Mapping[str, Any]]:
        index = self._indices.get(objects_index(kind))
        if index is None:  # not bound yet: the operator is starting
            return
        for key in index:
            yield from index[key]

    def referencing(self, kind: Kind, namespace: str, account: str) -> list[Mapping[str, Any]]:
        return self._named(kind, namespace, self._indices[accountref_index(kind)].get((namespace, account), []))

    def reading_from(self, kind: Kind, namespace: str, account: str) -> list[Mapping[str, Any]]:
        index = self._indices.get(sourceref_index(kind))
        return [] if index is None else self._named(kind, namespace, index.get((namespace, account), []))

    def _named(self, kind: Kind, namespace: str, names: Any) -> list[Mapping[str, Any]]:
        return [obj for name in names if (obj := self.object(kind, namespace, name)) is not None]

    def pods(self, owner_uid: str) -> list[PodView]:
        return list(self._indices[PODS_INDEX].get(owner_uid, []))

    def slot_usage(self) -> dict[str, int]:
        index = self._indices.get(SLOT_PODS_INDEX)
        return {} if index is None else {namespace: len(index[namespace]) for namespace in index}


class RuntimeWorld:
    """The World a controller reads during one pass."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.workers = runtime.workers

    def object(self, kind: Kind, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._runtime.caches.object(kind, namespace, name)

    def referencing(self, kind: Kind, namespace: str, account: str) -> Sequence[Mapping[str, Any]]:
        return self._runtime.caches.referencing(kind, namespace, account)

    def reading_from(self, kind: Kind, namespace: str, account: str) -> Sequence[Mapping[str, Any]]:
        return self._runtime.caches.reading_from(kind, namespace, account)

    def pods(self, owner_uid: str, role: str) -> Sequence[PodView]:
        return [p for p in self._runtime.pods_of(owner_uid) if p.role == role]

    def slots(self, key: ObjectKey, order: tuple[Any, ...], wanted: int = 1) -> int:
        namespace = key.namespace
        return self._runtime.slots.grant(key, namespace, order, wanted)


class Runtime:
    def __init__(
        self,
        controllers: Sequence[AnyController],
        workers: WorkerSettings,
        limits: SlotLimits,
        api: KubeApi,
        concurrency: int = 8,
    ) -> None:
        self.controllers = {c.kind.kind: c for c in controllers}
        self.workers = workers
        self.api = api
        self.concurrency = concurrency
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.caches = Caches()
        self.slots = WorkerSlots(limits, self.caches.slot_usage)
        self.meter = ProgressMeter()
        # Pods created by this process that the cache has not shown yet: (namespace, name) -> (owner, view, until)
        self._expected: dict[tuple[str, str], tuple[str, PodView, float]] = {}
        # Objects as this process last wrote them, until the cache catches up (read your own writes).
        self._written: dict[ObjectKey, Mapping[str, Any]] = {}
        # Namespaces where this process made sure the worker service account exists.
        self._worker_access: set[str] = set()
        # Pods the API server refused to create, and how many times in a row.
        self._refusals: dict[tuple[str, str], int] = {}
        # Each worker pod's restart count and whether it failed, as last seen: (namespace, name, uid) -> figures.
        self._pod_restarts: dict[tuple[str, str, str], tuple[int, int]] = {}

    def collector(self) -> ObjectsCollector:
        def phases() -> Iterator[tuple[str, str | None]]:
            for controller in self.controllers.values():
                for body in self.caches.objects(controller.kind):
                    yield controller.kind.kind, (body.get("status") or {}).get("phase")

        def jobs() -> Iterator[JobFigures]:
            for controller in self.controllers.values():
                for body in self.caches.objects(controller.kind):
                    if (figures := controller.figures(body)) is not None:
                        yield figures

        def gauges() -> Iterator[Metric]:
            for controller in self.controllers.values():
                if isinstance(controller, ExportsGauges):
                    yield from controller.gauges(self.caches.objects(controller.kind))

        return ObjectsCollector(phases, jobs, gauges)

    # -- events from kopf --------------------------------------------------------------------------------------

    def object_event(self, kind: Kind, event_type: str | None, body: Mapping[str, Any]) -> None:
        controller = self.controllers[kind.kind]
        self.queue.add(key_of(kind, body))
        if event_type == "DELETED":
            self.meter.forget(str((body.get("metadata") or {}).get("uid")))
        for other in controller.related(body, RuntimeWorld(self)):
            self.queue.add(self._key_of(other))

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        self._expected.pop((namespace, name), None)
        self.slots.seen(namespace, name)
        owner = self._owner_key(body)
        if owner is not None:
            self.queue.add(owner)
        view = pod_view(body)
        self._count_restarts(event_type, namespace, view, meta)
        if (event_type == "DELETED" or view.finished) and (meta.get("labels") or {}).get(LABEL_SLOT) == "true":
            woken = self.slots.next_in_line()
            log.info(
                "slot freed by %s/%s: %d in use, waking %d",
                namespace,
                name,
                sum(self.slots.in_use().values()),
                len(woken),
            )
            for key in woken:
                self.queue.add(key)  # type: ignore[arg-type]

    def _count_restarts(self, event_type: str | None, namespace: str, view: PodView, meta: Mapping[str, Any]) -> None:
        """ferry_worker_restarts: a worker pod seen running that failed, or that the kubelet restarted. A pod first
        seen by this process is its baseline (what happened before was counted by the process that saw it)."""
        key = (namespace, view.name, str(meta.get("uid")))
        if event_type == "DELETED":
            self._pod_restarts.pop(key, None)
            return
        failed = 1 if view.phase == "Failed" else 0
        now = (view.restart_count, failed)
        before = self._pod_restarts.get(key)
        self._pod_restarts[key] = now
        if before is not None and (more := (now[0] - before[0]) + max(0, now[1] - before[1])) > 0:
            labels = meta.get("labels") or {}
            WORKER_RESTARTS.labels(kind=labels.get(LABEL_KIND, ""), role=view.role).inc(more)

    def _owner_key(self, pod: Mapping[str, Any]) -> ObjectKey | None:
        meta = pod.get("metadata") or {}
        kind = (meta.get("labels") or {}).get(LABEL_KIND)
        if kind not in self.controllers:
            return None
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == kind and ref.get("controller"):
                return ObjectKey(kind, str(meta.get("namespace")), str(ref.get("name")))
        return None

    def _key_of(self, body: Mapping[str, Any]) -> ObjectKey:
        meta = body.get("metadata") or {}
        return ObjectKey(str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))

    def pods_of(self, owner_uid: str) -> list[PodView]:
        seen = self.caches.pods(owner_uid)
        names = {p.name for p in seen}
        now = time.monotonic()
        for (namespace, name), (owner, view, until) in list(self._expected.items()):
            if until < now:
                del self._expected[(namespace, name)]
            elif owner == owner_uid and name not in names:
                seen.append(view)
        return seen

    # -- the workers ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.queue.run_timer(), name="ferry-queue-timer")]
        tasks += [asyncio.create_task(self._work(), name=f"ferry-reconciler-{i}") for i in range(self.concurrency)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        self.queue.close()

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            QUEUE_DEPTH.set(len(self.queue))
            started = time.monotonic()
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                RECONCILES.labels(kind=key.kind, result="error").inc()
                delay = self.queue.failed(key)
                if isinstance(exc, ApiException | OSError) or _is_connection_error(exc):
                    log.warning("%s: %s; retrying in %.1fs", key, describe_error(exc), delay)
                else:
                    log.exception("%s: reconcile failed; retrying in %.1fs", key, delay)
            else:
                RECONCILES.labels(kind=key.kind, result="ok").inc()
                self.queue.forget(key)
                self.queue.done(key)
            finally:
                RECONCILE_SECONDS.labels(kind=key.kind).observe(time.monotonic() - started)
                SLOTS_WAITING.set(self.slots.waiting)
                SLOTS_IN_USE.set(sum(self.slots.in_use().values()))

    def latest(self, key: ObjectKey) -> Mapping[str, Any] | None:
        """The object as cached, or as this process last wrote it when the cache has not caught up yet.

        Resource versions of one resource compare as integers (Kubernetes 1.35+)."""
        cached = self.caches.object(self.controllers[key.kind].kind, key.namespace, key.name)
        written = self._written.get(key)
        if written is None:
            return cached
        if cached is None or _version(cached) >= _version(written):
            del self._written[key]
            return cached
        return written

    async def reconcile(self, key: ObjectKey) -> None:
        controller = self.controllers[key.kind]
        body = self.latest(key)
        if body is None:
            self.slots.leave(key)
            self.queue.drop(key)
            return
        meta = meta_of(body)
        plan = controller.reconcile(body, RuntimeWorld(self))
        await self.execute(controller, body, plan)
        if plan.wants_slot:
            self.slots.wait(key, key.namespace, meta.order())
        else:
            self.slots.leave(key)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)
        if plan.progress:
            self.meter.observe(meta.uid, plan.progress)

    async def execute(self, controller: AnyController, body: Mapping[str, Any], plan: Plan) -> None:
        kind = controller.kind
        meta = body["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        key = ObjectKey(kind.kind, namespace, meta["name"])
        # Before the first await: the slots the decision was granted are taken in the same step as the grant,
        # so no other pass can be given them meanwhile.
        for creation in plan.create:
            if creation.takes_slot:
                self.slots.reserve(namespace, creation.name)
            placeholder = pod_view(creation.manifest)  # as the cache will show it: Pending, with its template
            self._expected[(namespace, creation.name)] = (uid, placeholder, time.monotonic() + EXPECTATION_SECONDS)
        if plan.finalizer == "add":
            self._wrote(key, await self.api.set_finalizer(kind, body, present=True))
        for deletion in {d.name: d for d in plan.delete}.values():
            await self.api.delete_pod(namespace, deletion)
        refused = await self._provide_worker_access(namespace) if plan.create else None
        for creation in plan.create:
            why = refused or await self._create_pod(kind.kind, namespace, creation)
            if why is not None:
                self._refused(key, uid, namespace, creation, why)
            else:
                self._refusals.pop((namespace, creation.name), None)
        if plan.status is not None:
            current = controller.status_part.part_of(body.get("status")).wire()
            wanted = plan.status.wire()
            if wanted != current:
                self._wrote(
                    key, await self.api.apply_status(kind, namespace, meta["name"], wanted, controller.field_manager)
                )
        for event in plan.events:
            await self.api.emit(body, event)
        for increment in plan.counts:
            count(increment.metric, increment.amount, increment.labels)
        if plan.finalizer == "remove":
            self._wrote(key, await self.api.set_finalizer(kind, body, present=False))

    async def _provide_worker_access(self, namespace: str) -> str | None:
        """Make sure the namespace has the worker service account; why not, when the API server refuses."""
        if not self.workers.cluster_role or namespace in self._worker_access:
            return None
        try:
            await self.api.ensure_worker_access(namespace, self.workers)
        except ApiException as exc:
            if not is_refusal(exc):
                raise
            return f"the operator cannot provide the worker service account in namespace {namespace}: {refusal(exc)}"
        self._worker_access.add(namespace)
        return None

    async def _create_pod(self, kind: str, namespace: str, creation: PodCreation) -> str | None:
        """Create a worker pod; why not, when the API server refuses it (quota, admission, RBAC)."""
        try:
            if await self.api.create_pod(namespace, creation.manifest):
                WORKERS_STARTED.labels(kind=kind, role=_role(creation.manifest)).inc()
        except ApiException as exc:
            if not is_refusal(exc):
                raise
            return f"the API server refused to create pod {creation.name}: {refusal(exc)}"
        return None

    def _refused(self, key: ObjectKey, uid: str, namespace: str, creation: PodCreation, why: str) -> None:
        """The decision sees a refused pod as one that cannot start (like a pod whose Secret is missing), so the
        cause reaches the object's status and Events; creation is tried again after a growing delay."""
        tries = self._refusals.get((namespace, creation.name), 0) + 1
        self._refusals[(namespace, creation.name)] = tries
        delay = backoff(tries, REFUSED_RETRY_SECONDS, REFUSED_RETRY_MAX_SECONDS)
        view = replace(pod_view(creation.manifest), waiting_reason=FAILED_CREATE, waiting_message=why)
        self._expected[(namespace, creation.name)] = (uid, view, time.monotonic() + delay)
        self.slots.seen(namespace, creation.name)
        self.queue.add(key)  # the next pass records the cause
        self.queue.add_after(key, delay + 0.1)
        log.warning("%s: %s; trying again in %.0fs", key, why, delay)

    def _wrote(self, key: ObjectKey, written: Mapping[str, Any] | None) -> None:
        if written is not None:
            self._written[key] = trimmed(written)


def _role(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["labels"].get(LABEL_ROLE, ""))


def _version(body: Mapping[str, Any]) -> int:
    text = str((body.get("metadata") or {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def _is_connection_error(exc: BaseException) -> bool:
    name = type(exc).__module__
    return name.startswith("urllib3") or name.startswith("aiohttp")
