"""The runtime's parts that need no API: the work queue, the worker slots, outcomes and the progress meter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from ferry.api.kinds import BLOB_COPY, DATABASE_ACCOUNT
from ferry.api.outcome import OutcomeResult, WorkerOutcome, parse_outcome
from ferry.kinds.blobcopy.metrics import BLOBCOPY_BYTES_METRIC
from ferry.metrics import JobFigures, ObjectsCollector, ProgressMeter
from ferry.runtime.controller import running_figures
from ferry.runtime.pods import pod_view
from ferry.runtime.queue import WorkQueue
from ferry.runtime.slots import SlotLimits, WorkerSlots


async def test_a_key_is_queued_once_and_processed_by_one_worker_at_a_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    first = await queue.get()
    queue.add(first)  # changed while being processed: comes back after done(), not before
    second = await queue.get()
    assert {first, second} == {"a", "b"}
    assert len(queue) == 0
    queue.done(first)
    assert len(queue) == 1 and await queue.get() == first


async def test_scheduled_keys_come_back_when_due_with_one_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    timer = asyncio.create_task(queue.run_timer())
    try:
        queue.add_after("late", 0.3)
        queue.add_after("soon", 0.05)
        queue.add_after("soon", 5.0)  # a later wish does not postpone an earlier one
        assert await asyncio.wait_for(queue.get(), 1) == "soon"
        assert await asyncio.wait_for(queue.get(), 1) == "late"
    finally:
        queue.close()
        timer.cancel()


async def test_failures_back_off_exponentially_and_a_success_resets_them() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=4.0)
    queue.add("k")
    delays = []
    for _ in range(5):
        await queue._wakeup.wait()
        key = queue._ready.popleft()
        queue._queued.discard(key)
        queue._processing.add(key)
        delays.append(queue.failed(key))
        queue.add(key)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    queue.forget("k")
    assert queue.failed("k") == 0.5


def test_slots_go_in_creation_order_within_both_limits() -> None:
    used: dict[str, int] = {"busy": 2}
    slots = WorkerSlots(SlotLimits(total=4, per_namespace=2), lambda: used)
    slots.wait("late", "a", (3,))
    slots.wait("early", "a", (1,))
    slots.wait("full", "busy", (0,))  # first in line, but its namespace has no room
    assert slots.grant("early", "a", (1,)) == 1
    assert slots.grant("late", "a", (3,)) == 1
    assert slots.grant("new", "a", (2,)) == 1  # created before "late": it would go ahead of it
    slots.wait("new", "a", (2,))
    assert set(slots.next_in_line()) == {"early", "new"}  # namespace a is full after these two
    slots.leave("early")
    assert set(slots.next_in_line()) == {"new", "late"}


def test_a_created_pod_counts_until_the_cache_shows_it() -> None:
    used: dict[str, int] = {}
    slots = WorkerSlots(SlotLimits(total=1, per_namespace=1), lambda: used)
    assert slots.grant("a", "ns", (1,)) == 1
    slots.reserve("ns", "a-copy-1")
    assert slots.grant("b", "ns", (2,)) == 0
    used["ns"] = 1
    slots.seen("ns", "a-copy-1")
    assert sum(slots.in_use().values()) == 1


def test_a_worker_outcome_survives_the_kubelets_log_tail() -> None:
    outcome = WorkerOutcome(result=OutcomeResult.FAILED, reason="SourceNotFound", message="x" * 5000)
    tail = "Traceback ...\nsome line\n" + outcome.line()
    parsed = parse_outcome(tail[-2048:])
    assert parsed is not None and parsed.reason == "SourceNotFound" and len(parsed.message) == 1024
    assert parse_outcome("no outcome here") is None
    assert outcome.exit_code == 2


def test_progress_counts_only_what_happens_while_this_process_watches() -> None:
    meter = ProgressMeter()

    def total() -> float:
        return REGISTRY.get_sample_value(f"{BLOBCOPY_BYTES_METRIC}_total") or 0.0

    before = total()
    meter.observe("finished-before-restart", {BLOBCOPY_BYTES_METRIC: 1000})  # first sight: a baseline
    meter.observe("new", {BLOBCOPY_BYTES_METRIC: 0})
    meter.observe("new", {BLOBCOPY_BYTES_METRIC: 300})
    meter.observe("new", {BLOBCOPY_BYTES_METRIC: 200})  # a stale report never counts backwards
    assert total() - before == pytest.approx(300)


def test_running_jobs_have_progress_and_an_eta_at_their_average_rate() -> None:
    started = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    body = {
        "metadata": {"namespace": "ns", "name": "big"},
        "status": {"phase": "Running", "bytesCopied": 250, "totalBytes": 1000, "startTime": "2026-11-21T12:00:00Z"},
    }
    figures = running_figures(BLOB_COPY, body)
    assert figures == JobFigures("BlobCopy", "ns", "big", 250.0, 1000.0, started)
    assert figures.eta_seconds(started + timedelta(seconds=100)) == 300.0  # 750 left at 2.5 per second
    assert JobFigures("BlobCopy", "ns", "new", 0, 1000, started).eta_seconds(started) is None  # no rate yet
    finished = {**body, "status": {**body["status"], "phase": "Succeeded"}}
    assert running_figures(BLOB_COPY, finished) is None
    assert running_figures(DATABASE_ACCOUNT, {"status": {"phase": "Running"}}) is None  # not a job

    collector = ObjectsCollector(lambda: [("BlobCopy", "Running")], jobs=lambda: [figures])
    samples = {s.name: s for family in collector.collect() for s in family.samples}
    assert samples["ferry_job_progress_ratio"].value == 0.25
    assert samples["ferry_job_progress_ratio"].labels == {"kind": "BlobCopy", "namespace": "ns", "name": "big"}
    assert samples["ferry_job_start_time_seconds"].value == started.timestamp()
    assert samples["ferry_job_eta_seconds"].value > 0


def test_an_accounts_instances_and_backup_figures_come_from_its_status() -> None:
    from ferry.kinds.databaseaccount.controller import DatabaseAccountController
    from ferry.runtime.controller import ExportsGauges

    account = {
        "metadata": {"namespace": "ns", "name": "shop"},
        "spec": {"backup": {"mode": "Continuous", "captureInterval": "30s"}},
        "status": {
            "instances": ["shop-copy-0", "shop-copy-1"],
            "backup": {"lastCaptureSeconds": 1.5, "captureLagSeconds": 4.0, "gaps": [{"start": "a", "end": "b"}]},
        },
    }
    controller = DatabaseAccountController()
    assert isinstance(controller, ExportsGauges)
    figures = controller.backup_figures(account)
    assert figures is not None and (figures.interval_seconds, figures.gaps, figures.failing) == (30.0, 1, False)
    assert controller.backup_figures({"metadata": {}, "status": {}}) is None  # no backup, no figures
    other = {"metadata": {"namespace": "ns", "name": "plain"}, "status": {"instances": ["plain-copy-0"]}}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in controller.gauges([account, other])
        for s in f.samples
    }
    assert samples[("ferry_copy_instances", ())] == 3  # every account's instances
    shop = (("account", "shop"), ("namespace", "ns"))
    assert samples[("ferry_backup_gaps", shop)] == 1
    assert samples[("ferry_backup_capture_interval_seconds", shop)] == 30.0
    assert samples[("ferry_backup_failing", shop)] == 0
    assert not any(labels == (("account", "plain"), ("namespace", "ns")) for _, labels in samples)  # no backup


def test_a_pod_the_scheduler_cannot_place_carries_its_message() -> None:
    """The PodScheduled condition as kube-scheduler writes it on a pod that waits for room."""
    message = (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod."
    )
    pending = {
        "metadata": {"name": "w-0", "labels": {}},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        },
    }
    assert pod_view(pending).unschedulable == message
    scheduled = {
        "metadata": {"name": "w-0"},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
    }
    assert pod_view(scheduled).unschedulable is None
    assert pod_view({"metadata": {"name": "w-0"}}).unschedulable is None
