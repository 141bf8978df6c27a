"""BlobCopy: what the operator does for one copy, as a pure decision over what it observes.

The worker pod copies and reports progress (the BlobCopyProgress part of the status); this decision
owns the lifecycle part: phase, conditions, failure, times and the worker bookkeeping. A cleanup pod
runs only when a worker may have left something behind (the worker last said a copy was pending:
an unfinished service copy, Ferry's staged blocks, or leases), when the copy fails that way or when
the BlobCopy is deleted; the finalizer is held only while such a leftover is possible.

A multi-blob copy spread over `spec.workers` pods has one coordinator (index 0, the task worker whose outcome
is the copy's: it lists the source and writes the counts) and helper pods 1..workers-1, each a task worker of
its own with its own restart budget, started once the coordinator has been and stopped with it. A helper that
ends (no page left, or out of retries) is not started again; its pages are claimed by the others.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ferry.api.blobcopy import (
    ALLOW_LINK_LOCAL_ENV,
    DESTINATION_ENV_PREFIX,
    SOURCE_ENV_PREFIX,
    WORKER_INDEX_ENV,
    BlobCopyOperatorStatus,
    BlobCopyPhase,
    BlobCopyProgress,
    BlobCopySpec,
    CopyStatus,
    HelperWorker,
)
from ferry.api.common import Failure, WorkerStatus
from ferry.api.kinds import BLOB_COPY
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.kinds.blobcopy.metrics import BLOBCOPY_BYTES_METRIC, BLOBCOPY_DURATION_METRIC
from ferry.kube.manifests import (
    LABEL_WORKER_INDEX,
    pod_name,
    secret_env,
    storage_env,
    worker_pod,
)
from ferry.runtime.controller import Controller
from ferry.runtime.lifecycle import PodDeletion, TaskInput, TaskResult, TaskState, task_worker
from ferry.runtime.objects import (
    ObjectMeta,
    condition,
    key_of,
    meta_of,
    set_condition,
    without_condition,
)
from ferry.runtime.phases import PhaseDecision
from ferry.runtime.plan import Count, Event, Plan, PodCreation
from ferry.runtime.pods import PodView
from ferry.runtime.world import WorkerSettings, World

COPY_ROLE = "copy"
CLEANUP_ROLE = "cleanup"
CLEANUP_RETRIES = 2
TERMINAL = frozenset({BlobCopyPhase.SUCCEEDED, BlobCopyPhase.FAILED})


@dataclass(frozen=True)
class Observed:
    meta: ObjectMeta
    spec: BlobCopySpec
    state: BlobCopyOperatorStatus
    progress: BlobCopyProgress
    copy_pods: tuple[PodView, ...]  # the coordinator's (index 0, or unlabelled with one worker)
    cleanup_pods: tuple[PodView, ...]
    slots: int  # worker slots this copy would be given now (up to the pods it runs)
    now: datetime
    workers: WorkerSettings
    helper_pods: tuple[PodView, ...] = ()  # the other workers' pods (index 1 up)

    @property
    def slot_granted(self) -> bool:
        return self.slots > 0


class BlobCopyController(Controller[Observed]):
    kind = BLOB_COPY
    status_part = BlobCopyOperatorStatus

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        meta = meta_of(body)
        status = body.get("status") or {}
        spec = BlobCopySpec.model_validate(body.get("spec") or {})
        copy_pods = world.pods(meta.uid, COPY_ROLE)
        return Observed(
            meta=meta,
            spec=spec,
            state=BlobCopyOperatorStatus.part_of(status),
            progress=BlobCopyProgress.part_of(status),
            copy_pods=tuple(p for p in copy_pods if not p.index),
            cleanup_pods=tuple(world.pods(meta.uid, CLEANUP_ROLE)),
            slots=world.slots(key_of(BLOB_COPY, body), meta.order(), spread(spec)),
            now=world.now,
            workers=world.workers,
            helper_pods=tuple(p for p in copy_pods if p.index),
        )

    def decide(self, observed: Observed) -> Plan:
        return decide(observed)


def spread(spec: BlobCopySpec) -> int:
    """How many worker pods share the copy: spec.workers for a prefix or container, one for a single blob."""
    multi_blob = spec.source.account is not None and spec.source.blob is None
    return spec.workers if multi_blob else 1


def worker_env(
    spec: BlobCopySpec, allow_link_local_sources: bool = False, annotations: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """Credentials reach the worker only as Secret references resolved by the kubelet, or as the client and tenant
    IDs of workload identities (by default the worker service account's `annotations`)."""
    env: list[dict[str, Any]] = []
    if allow_link_local_sources:
        env.append({"name": ALLOW_LINK_LOCAL_ENV, "value": "true"})
    source = spec.source
    if source.account is not None:
        env += storage_env(source.account, SOURCE_ENV_PREFIX, annotations)
    if source.url_secret_ref is not None:
        env.append(secret_env("FERRY_SOURCE_URL", source.url_secret_ref.name, source.url_secret_ref.key))
    elif source.url is not None:
        env.append({"name": "FERRY_SOURCE_URL", "value": source.url})
    env += storage_env(spec.destination.account, DESTINATION_ENV_PREFIX, annotations)
    return env


def manifest(o: Observed, role: str, name: str, index: int | None = None) -> dict[str, Any]:
    """A worker pod; `index` numbers the pods of a copy spread over several (0: the coordinator)."""
    args = [BLOB_COPY.singular, role, "--namespace", o.meta.namespace, "--name", o.meta.name]
    env = worker_env(o.spec, o.workers.allow_link_local_sources, o.workers.service_account_annotations)
    sized = o.workers.resources.blob_copy
    if index is not None:
        env.append({"name": WORKER_INDEX_ENV, "value": str(index)})
    return worker_pod(
        kind=BLOB_COPY,
        owner_name=o.meta.name,
        owner_uid=o.meta.uid,
        namespace=o.meta.namespace,
        role=role,
        name=name,
        image=o.workers.image,
        service_account=o.workers.service_account,
        args=args,
        env=env,
        requests=sized.requests,
        limits={"memory": f"{max(512, o.spec.block_size_mi_b * o.spec.parallelism * 3)}Mi", **sized.limits},
        instance=o.workers.instance,
        extra_labels={LABEL_WORKER_INDEX: str(index)} if index is not None else None,
        identity=o.workers.identity_mount(),
        storage_ca_file=o.workers.storage_ca_file,
    )


class _Decision(PhaseDecision[BlobCopyOperatorStatus, BlobCopyPhase]):
    def __init__(self, o: Observed) -> None:
        super().__init__(
            BLOB_COPY.kind,
            o.state.model_copy(deep=True),
            BlobCopyPhase.SUCCEEDED,
            BlobCopyPhase.FAILED,
            TERMINAL,
            o.meta.generation,
            o.now,
            settled=(BlobCopyPhase.PAUSED,),
        )
        self.o = o

    def finishing(self) -> None:
        self.state.conditions = without_condition(self.state.conditions, "WorkerReady")  # no worker any more

    def worker_ready(self, ready: bool, reason: str, message: str, warning: bool = False) -> None:
        """The WorkerReady condition; a changed message is also an Event (a config error, a retry)."""
        o, state = self.o, self.state
        before = condition(state.conditions, "WorkerReady")
        state.conditions = set_condition(
            state.conditions, "WorkerReady", ready, reason, message, o.meta.generation, o.now
        )
        if warning and (before is None or before.message != message):
            self.plan.events.append(Event(reason, message, warning=True))

    def start(self, role: str, name: str, index: int | None = None) -> None:
        self.plan.create.append(PodCreation(manifest(self.o, role, name, index)))
        if not self.o.meta.has_finalizer:
            self.plan.finalizer = "add"  # added before the pod: deletion then always finds it


def decide(o: Observed) -> Plan:
    d = _Decision(o)
    state = d.state
    state.observed_generation = o.meta.generation
    d.plan.progress = {BLOBCOPY_BYTES_METRIC: o.progress.bytes_copied or 0}
    if o.meta.deleting:
        _deleting(d)
    elif state.phase in TERMINAL:
        _finished(d)
    else:
        _copying(d)
    return d.done()


def _copying(d: _Decision) -> None:
    o, state = d.o, d.state
    if state.phase is None:
        d.phase(BlobCopyPhase.PENDING, "Accepted", "the copy waits for its worker")
    task = task_worker(
        TaskInput(
            worker=state.worker or WorkerStatus(),
            pods=o.copy_pods,
            wanted=not o.spec.suspend,
            max_retries=o.spec.max_retries,
            now=o.now,
            slot_granted=o.slot_granted,
            pod_name=lambda n: pod_name(o.meta.name, COPY_ROLE, n),
        )
    )
    _apply_task(d, task)
    if task.start:
        state.start_time = state.start_time or o.now
        d.start(COPY_ROLE, task.start, 0 if spread(o.spec) > 1 else None)
    if task.ended is not None:
        _ended(d, task.ended)
        return
    started = state.worker is not None and state.worker.attempts > 0
    helpers = _helpers(d, wanted=started and not o.spec.suspend, free=o.slots - (1 if task.start else 0))
    if task.retrying is not None:
        retry = task.retrying
        assert state.worker is not None and state.worker.retry_time is not None
        wait = int((state.worker.retry_time - o.now).total_seconds())
        d.worker_ready(
            False,
            "Retrying",
            f"{retry.reason}: {retry.message}; another worker starts in {wait}s "
            f"(restart {state.worker.restarts} of {o.spec.max_retries})",
            warning=True,
        )
    if o.spec.suspend:
        if task.state == TaskState.STOPPING or helpers.stopping:
            d.phase(BlobCopyPhase.PAUSING, "Suspending", "spec.suspend is true; the worker is stopping at a checkpoint")
        else:
            d.phase(BlobCopyPhase.PAUSED, "Suspended", "spec.suspend is true; set it to false to resume")
        return
    if state.phase in (BlobCopyPhase.PAUSED, BlobCopyPhase.PAUSING):
        d.phase(BlobCopyPhase.PENDING, "Resumed", "spec.suspend is false; the copy resumes from its checkpoint")
    if task.state == TaskState.RUNNING:
        d.phase(BlobCopyPhase.RUNNING, "Copying", f"worker pod {state.worker.pod if state.worker else ''} is copying")
        if spread(o.spec) > 1:
            d.worker_ready(True, "Running", f"{1 + helpers.running} of {spread(o.spec)} workers are copying")
        else:
            d.worker_ready(True, "Running", "the worker is copying")
    elif task.config_error:
        d.worker_ready(False, "ConfigError", f"the worker pod cannot start: {task.config_error}", warning=True)
    elif task.unschedulable:
        message = f"no node can run the worker pod (yet): {task.unschedulable}"
        d.worker_ready(False, "Unschedulable", message, warning=True)
    elif task.wants_slot:
        d.worker_ready(
            False,
            "WaitingForWorkerSlot",
            "waiting for a free worker slot: the operator runs a bounded number of worker pods at once",
        )


@dataclass
class _Helpers:
    running: int = 0
    stopping: bool = False
    records: list[HelperWorker] = field(default_factory=list)


def _helpers(d: _Decision, wanted: bool, free: int) -> _Helpers:
    """Converge the helper pods (index 1 up): each a task worker; one that ended is not started again."""
    o = d.o
    result = _Helpers()
    records = {h.index: h for h in d.state.helpers or []}
    count = spread(o.spec)
    last = max([count - 1, *records, *(p.index or 0 for p in o.helper_pods)])
    for index in range(1, last + 1):
        record = records.get(index) or HelperWorker(index=index)
        task = task_worker(
            TaskInput(
                worker=record,
                pods=[p for p in o.helper_pods if p.index == index],
                wanted=wanted and index < count and not record.done,
                max_retries=o.spec.max_retries,
                now=o.now,
                slot_granted=free > 0,
                pod_name=functools.partial(_helper_pod_name, o.meta.name, index),
            )
        )
        d.plan.delete.extend(task.delete)
        d.plan.wants_slot = d.plan.wants_slot or task.wants_slot
        d.plan.after(task.requeue_after)
        if task.start:
            free -= 1
            d.start(COPY_ROLE, task.start, index)
        if task.retrying is not None:
            d.plan.events.append(
                Event("WorkerRetrying", f"worker {index}: {task.retrying.reason}: {task.retrying.message}", True)
            )
        if task.ended is not None and task.ended.result != OutcomeResult.SUCCEEDED:
            d.plan.events.append(
                Event("WorkerGaveUp", f"worker {index} stopped; the others take its pages: {task.ended.message}", True)
            )
        result.running += task.state == TaskState.RUNNING
        result.stopping = result.stopping or task.state == TaskState.STOPPING
        done = record.done or task.ended is not None
        if task.worker.attempts or done:
            result.records.append(HelperWorker.model_validate({**task.worker.wire(), "index": index, "done": done}))
    d.state.helpers = result.records or None
    return result


def _helper_pod_name(owner: str, index: int, attempt: int) -> str:
    return pod_name(owner, COPY_ROLE, f"{index}-{attempt}")


def _apply_task(d: _Decision, task: TaskResult) -> None:
    d.state.worker = task.worker
    d.plan.delete.extend(task.delete)
    d.plan.wants_slot = task.wants_slot
    d.plan.after(task.requeue_after)


def _ended(d: _Decision, outcome: WorkerOutcome) -> None:
    o, state = d.o, d.state
    if outcome.result == OutcomeResult.SUCCEEDED:
        skipped = o.progress.copy_status == CopyStatus.SKIPPED
        d.phase(BlobCopyPhase.SUCCEEDED, "Skipped" if skipped else "Copied", _summary(o.progress))
        if state.start_time is not None:
            seconds = max(0.0, (o.now - state.start_time).total_seconds())
            d.plan.counts.append(Count(BLOBCOPY_DURATION_METRIC, seconds))
        d.plan.delete.extend(_deletion(p) for p in o.helper_pods if not p.deleting)  # their pages are all done
        if o.meta.has_finalizer:
            d.plan.finalizer = "remove"  # the worker finished cleanly: nothing of Ferry's is left behind
        return
    d.fail(Failure(reason=outcome.reason or "CopyFailed", message=outcome.message))
    # The last worker stays for `kubectl logs` (it holds no resources); it goes with the BlobCopy.
    d.plan.delete = [p for p in d.plan.delete if p.name not in {c.name for c in o.copy_pods if c.finished}]
    _finished(d)


def _needs_cleanup(o: Observed) -> bool:
    """A worker last reported a copy in flight and never said how it ended, or a cleanup is under way."""
    cleaning = o.state.cleanup is not None and o.state.cleanup.pod is not None
    return o.progress.copy_status == CopyStatus.PENDING or cleaning


def _finished(d: _Decision) -> None:
    """A terminal copy: clean up what a failed worker may have left, then let go of the finalizer."""
    o = d.o
    for pod in o.copy_pods:
        if pod.active and not pod.deleting:
            d.plan.delete.append(_deletion(pod))
    for pod in o.helper_pods:  # the coordinator's pod tells the story; the helpers' go
        if not pod.deleting:
            d.plan.delete.append(_deletion(pod))
    if not o.meta.has_finalizer:
        return
    if _needs_cleanup(o) and not _cleanup(d):
        return
    d.plan.finalizer = "remove"


def _deleting(d: _Decision) -> None:
    o = d.o
    if not o.meta.has_finalizer:
        return
    task = task_worker(
        TaskInput(
            worker=d.state.worker or WorkerStatus(),
            pods=o.copy_pods,
            wanted=False,
            max_retries=o.spec.max_retries,
            now=o.now,
            slot_granted=False,
            pod_name=lambda n: pod_name(o.meta.name, COPY_ROLE, n),
        )
    )
    d.state.worker = task.worker
    d.plan.delete.extend(task.delete)
    helpers = _helpers(d, wanted=False, free=0)
    if task.state == TaskState.STOPPING or helpers.stopping:
        return  # the workers checkpoint first; their ends wake us
    if _needs_cleanup(o) and not _cleanup(d):
        return
    d.plan.finalizer = "remove"


def _cleanup(d: _Decision) -> bool:
    """Run the cleanup worker; True once it is done, or can never be (then a Warning says what is left)."""
    o, state = d.o, d.state
    task = task_worker(
        TaskInput(
            worker=state.cleanup or WorkerStatus(),
            pods=o.cleanup_pods,
            wanted=True,
            max_retries=CLEANUP_RETRIES,
            now=o.now,
            slot_granted=o.slot_granted,
            pod_name=lambda n: pod_name(o.meta.name, CLEANUP_ROLE, n),
        )
    )
    state.cleanup = task.worker
    _apply_task(d, task)
    if task.start:
        d.start(CLEANUP_ROLE, task.start)
    leftover = "the destination may keep a pending copy or Ferry's leases; abort or break them by hand"
    if task.config_error:
        d.plan.delete.extend(_deletion(p) for p in o.cleanup_pods if not p.deleting)
        d.plan.events.append(
            Event("CleanupFailed", f"the cleanup worker cannot start: {task.config_error}; {leftover}", True)
        )
        return True
    if task.ended is None:
        return False
    if task.ended.result == OutcomeResult.SUCCEEDED:
        d.plan.events.append(Event("CleanedUp", "pending copies aborted and Ferry's leases released"))
    else:
        d.plan.events.append(Event("CleanupFailed", f"{task.ended.message}; {leftover}", True))
    return True


def _deletion(pod: PodView) -> PodDeletion:
    return PodDeletion(pod.name, grace_seconds=0 if pod.finished else None)


def _summary(progress: BlobCopyProgress) -> str:
    blobs = progress.blobs
    if progress.copy_status == CopyStatus.SKIPPED:
        return progress.status_description or "skipped: the overwrite policy kept the destination"
    if blobs is not None and blobs.total > 1:
        return f"{blobs.succeeded} of {blobs.total} blobs copied, {blobs.skipped} skipped"
    return f"copied {progress.progress or '0/0'} bytes"
