"""The runtime's passes over an in-memory API server and caches: what it writes, in which order, and what the
next pass sees of it before and after the caches catch up (the real controllers decide throughout)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from builders import WORKERS, account_body, blobcopy_body, job_body, restore_body

from ferry.api.kinds import BLOB_COPY, CONTAINER_COPY_JOB, DATABASE_ACCOUNT, IN_ACCOUNT_RESTORE
from ferry.kinds.blobcopy.controller import BlobCopyController
from ferry.kinds.containercopyjob.controller import ContainerCopyJobController
from ferry.kinds.databaseaccount.controller import DatabaseAccountController
from ferry.kinds.inaccountrestore.controller import InAccountRestoreController
from ferry.runtime.controller import AnyController as Controller
from ferry.runtime.engine import Runtime
from ferry.runtime.objects import FINALIZER, ObjectKey
from ferry.runtime.slots import SlotLimits
from ferry.runtime.world import WorkerSettings
from support.memkube import ROOMY, Cluster

QUOTA = 'pods "{}" is forbidden: exceeded quota: ferry-quota, requested: pods=1, used: pods=10, limited: pods=10'


def cluster(limits: SlotLimits = ROOMY, workers: WorkerSettings = WORKERS) -> Cluster:
    controllers: list[Controller] = [
        BlobCopyController(),
        DatabaseAccountController(),
        ContainerCopyJobController(),
        InAccountRestoreController(),
    ]
    return Cluster(controllers, workers, limits)


def key(kind_name: str, name: str) -> ObjectKey:
    return ObjectKey(kind_name, "ns", name)


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status.get("conditions") or [] if c.get("type") == type_]
    assert found, f"no {type_} condition in {status}"
    return found[0]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[None]:
    """The runtime's own workers and timer, as the operator runs them."""
    task = asyncio.create_task(runtime.run())
    try:
        yield
    finally:
        runtime.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the finalizer -------------------------------------------------------------------------------------------------


async def test_the_finalizer_is_added_before_the_first_pod_and_removed_after_everything_else() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))

    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log() == ["add-finalizer x", "create-pod x-copy-1", "apply-status x Pending", "event x Accepted"]
    assert c.api.get(BLOB_COPY, "x")["metadata"]["finalizers"] == [FINALIZER]  # type: ignore[index]

    c.api.set_pod_status("x-copy-1", "Running")
    c.sync()
    await c.reconcile(BLOB_COPY, "x")
    c.api.set_pod_status("x-copy-1", "Succeeded", exit_code=0)
    c.sync()
    before = len(c.api.calls)
    await c.reconcile(BLOB_COPY, "x")

    assert c.api.log()[before:] == [
        "delete-pod x-copy-1",
        "apply-status x Succeeded",
        "event x Copied",  # Events describe a status that exists
        "remove-finalizer x",  # last: a failure before it leaves the finalizer for the next pass
    ]
    assert c.api.get(BLOB_COPY, "x")["metadata"]["finalizers"] == []  # type: ignore[index]


async def test_a_deleted_copy_stops_its_worker_then_lets_go_and_leaves_the_caches() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))
    await c.reconcile(BLOB_COPY, "x")
    c.api.set_pod_status("x-copy-1", "Running")
    c.sync()
    await c.reconcile(BLOB_COPY, "x")

    c.api.delete(BLOB_COPY, "x")  # held by the finalizer
    c.sync()
    assert await c.queued() == [key("BlobCopy", "x")]
    before = len(c.api.calls)
    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log()[before:] == ["delete-pod x-copy-1"]  # SIGTERM: the worker stops at a checkpoint
    assert c.api.get(BLOB_COPY, "x") is not None

    c.sync()  # the pod is gone
    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log()[-1] == "remove-finalizer x"
    assert c.api.get(BLOB_COPY, "x") is None  # its last finalizer went: the API server deleted it

    before = len(c.api.calls)
    c.sync()
    assert c.caches.object(BLOB_COPY, "x") is None
    assert key("BlobCopy", "x") in await c.queued()
    await c.reconcile(BLOB_COPY, "x")  # nothing left to do, and nothing done
    assert len(c.api.calls) == before


# -- pods the cache has not shown yet ------------------------------------------------------------------------------


async def test_a_pod_created_in_one_pass_is_not_created_again_before_the_cache_shows_it() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))
    await c.reconcile(BLOB_COPY, "x")
    c.sync(pods=False)  # the status write arrived, the pod's ADDED event has not

    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log("create-pod", "delete-pod") == ["create-pod x-copy-1"]
    worker = c.status(BLOB_COPY, "x")["worker"]
    assert (worker["pod"], worker["restarts"]) == ("x-copy-1", 0)  # not taken for a vanished worker

    c.sync()
    await c.reconcile(BLOB_COPY, "x")
    uid = c.api.get(BLOB_COPY, "x")["metadata"]["uid"]  # type: ignore[index]
    assert [p.name for p in c.runtime.pods_of(uid)] == ["x-copy-1"]  # the cached pod, not doubled
    assert c.api.log("create-pod", "delete-pod") == ["create-pod x-copy-1"]


async def test_an_accounts_new_monitor_pod_is_kept_by_a_pass_that_runs_before_the_cache_shows_it() -> None:
    c = cluster()
    c.create(DATABASE_ACCOUNT, account_body("acct"))
    await c.reconcile(DATABASE_ACCOUNT, "acct")
    c.sync(pods=False)

    await c.reconcile(DATABASE_ACCOUNT, "acct")

    # The expected pod carries its template: the decision does not take it for an outdated one and delete it.
    assert c.api.log("create-pod", "delete-pod") == ["create-pod acct-monitor-0"]
    assert c.api.pod_names() == ["acct-monitor-0"]


# -- reading one's own writes --------------------------------------------------------------------------------------


async def test_a_pass_reads_the_status_and_finalizer_the_previous_pass_wrote_while_the_cache_is_stale() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))
    await c.reconcile(BLOB_COPY, "x")
    cached = c.caches.object(BLOB_COPY, "x")
    assert cached is not None and "status" not in cached and "finalizers" not in cached["metadata"]

    latest = c.runtime.latest(key("BlobCopy", "x"))
    assert latest is not None and latest["status"]["phase"] == "Pending"
    assert latest["metadata"]["finalizers"] == [FINALIZER]

    before = len(c.api.calls)
    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log()[before:] == []  # nothing to write again: the pass decided on what it had written


async def test_the_cache_wins_once_its_resource_version_catches_up_with_the_write() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))
    await c.reconcile(BLOB_COPY, "x")
    written = c.runtime.latest(key("BlobCopy", "x"))

    c.api.write_status(BLOB_COPY, "x", {"copyStatus": "pending", "bytesCopied": 512})  # the worker reports
    c.sync()

    latest = c.runtime.latest(key("BlobCopy", "x"))
    assert latest == c.caches.object(BLOB_COPY, "x") and latest != written
    assert latest is not None
    assert (latest["status"]["phase"], latest["status"]["bytesCopied"]) == ("Pending", 512)


# -- pods the API server refuses -----------------------------------------------------------------------------------


async def test_a_refused_copy_pod_puts_the_api_servers_reason_in_the_status() -> None:
    c = cluster()
    c.create(BLOB_COPY, blobcopy_body("x"))
    c.api.refuse_pods(403, QUOTA.format("x-copy-1"))

    await c.reconcile(BLOB_COPY, "x")
    assert await c.queued() == [key("BlobCopy", "x")]  # looked at again at once, to record the cause
    await c.reconcile(BLOB_COPY, "x")

    ready = condition(c.status(BLOB_COPY, "x"), "WorkerReady")
    assert ready["reason"] == "ConfigError"
    assert ready["message"] == (
        "the worker pod cannot start: the API server refused to create pod x-copy-1: " + QUOTA.format("x-copy-1")
    )
    assert [e.reason for _, e in c.api.events if e.warning] == ["ConfigError"]
    assert c.api.log("create-pod") == ["create-pod x-copy-1"]  # not tried again at once


async def test_a_refused_monitor_pod_is_retried_after_a_growing_delay(caplog: pytest.LogCaptureFixture) -> None:
    c = cluster()
    c.create(DATABASE_ACCOUNT, account_body("acct"))
    c.api.refuse_pods(403, QUOTA.format("acct-monitor-0"))
    caplog.set_level(logging.WARNING, logger="ferry.runtime.engine")

    await c.reconcile(DATABASE_ACCOUNT, "acct")
    await c.reconcile(DATABASE_ACCOUNT, "acct")
    ready = condition(c.status(DATABASE_ACCOUNT, "acct"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MonitorFailing")
    assert "exceeded quota" in str(ready["message"])
    assert c.api.log("create-pod", "delete-pod") == ["create-pod acct-monitor-0"]

    await asyncio.sleep(5.2)  # the first retry is due after 5s
    await c.reconcile(DATABASE_ACCOUNT, "acct")
    assert c.api.log("create-pod", "delete-pod") == ["create-pod acct-monitor-0"] * 2
    delays = [int(d) for d in re.findall(r"trying again in (\d+)s", caplog.text)]
    assert delays == [5, 10]


async def test_a_refused_worker_service_account_stops_pods_with_the_reason_and_is_asked_for_once_it_exists() -> None:
    c = cluster(workers=WorkerSettings(image="ferry:test", service_account="ferry-worker", cluster_role="ferry-worker"))
    c.create(BLOB_COPY, blobcopy_body("x"))
    c.api.refuse_worker_access(403, 'serviceaccounts is forbidden: User "ferry" cannot create resource')

    await c.reconcile(BLOB_COPY, "x")
    assert c.api.log("worker-access", "create-pod") == ["worker-access ns"]  # no pod without its account
    await c.reconcile(BLOB_COPY, "x")
    message = str(condition(c.status(BLOB_COPY, "x"), "WorkerReady")["message"])
    assert "cannot provide the worker service account in namespace ns" in message

    c.api.allow_worker_access()
    c.create(BLOB_COPY, blobcopy_body("y"))
    await c.reconcile(BLOB_COPY, "y")
    c.create(BLOB_COPY, blobcopy_body("z"))
    await c.reconcile(BLOB_COPY, "z")
    assert c.api.log("worker-access", "create-pod") == [
        "worker-access ns",
        "worker-access ns",
        "create-pod y-copy-1",
        "create-pod z-copy-1",  # the namespace has it now: not asked for again
    ]


# -- related objects -----------------------------------------------------------------------------------------------


async def test_a_change_to_an_account_requeues_its_jobs_and_unfinished_restores() -> None:
    c = cluster()
    c.create(DATABASE_ACCOUNT, account_body("acct", backup=True))
    c.create(CONTAINER_COPY_JOB, job_body("j1"))
    c.create(CONTAINER_COPY_JOB, job_body("j2"))
    c.create(CONTAINER_COPY_JOB, job_body("elsewhere", account="other"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("r1", "1"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("done", "2", status={"phase": "Succeeded"}))
    await c.queued()

    c.api.write_status(DATABASE_ACCOUNT, "acct", {"writeRegion": "West US"}, manager="ferry-monitor")
    c.sync()

    assert sorted(await c.queued()) == [
        key("ContainerCopyJob", "j1"),
        key("ContainerCopyJob", "j2"),
        key("DatabaseAccount", "acct"),
        key("InAccountRestore", "r1"),  # a finished restore no longer depends on the account
    ]


async def test_a_change_to_a_job_requeues_its_account_and_the_accounts_other_jobs() -> None:
    c = cluster()
    c.create(DATABASE_ACCOUNT, account_body("acct"))
    c.create(CONTAINER_COPY_JOB, job_body("j1"))
    c.create(CONTAINER_COPY_JOB, job_body("j2"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("r1", "1"))
    await c.queued()

    c.api.update_spec(CONTAINER_COPY_JOB, "j1", {"suspend": True})
    c.sync()

    assert sorted(await c.queued()) == [
        key("ContainerCopyJob", "j1"),
        key("ContainerCopyJob", "j2"),
        key("DatabaseAccount", "acct"),
    ]


# -- failures and slots --------------------------------------------------------------------------------------------


async def test_a_failing_pass_is_retried_after_a_growing_backoff_and_a_success_resets_it() -> None:
    c = cluster()
    c.runtime.queue.base_delay = 0.2
    c.api.fail_next(3)  # the connection drops three times
    c.create(BLOB_COPY, blobcopy_body("x"))

    async with running(c.runtime):
        await until(lambda: "create-pod x-copy-1" in c.api.log())
        tries = [call.at for call in c.api.calls if call.verb == "add-finalizer"]
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert len(tries) == 4
        assert [g >= d for g, d in zip(gaps, (0.2, 0.4, 0.8), strict=True)] == [True] * 3

        c.sync()
        c.api.fail_next(1)
        c.api.set_pod_status("x-copy-1", "Running")
        c.sync()
        await until(lambda: "apply-status x Running" in c.api.log())
        statuses = [call.at for call in c.api.calls if call.verb == "apply-status"]
        assert statuses[-1] - statuses[-2] < 1.6  # backoff started over at 0.2s, not at the next 1.6s


async def test_a_deleted_object_leaves_its_place_in_line_for_a_worker_slot() -> None:
    c = cluster(limits=SlotLimits(total=1, per_namespace=1))
    for name in ("a", "b", "c"):
        c.create(BLOB_COPY, blobcopy_body(name))
        await c.reconcile(BLOB_COPY, name)
    assert c.api.pod_names() == ["a-copy-1"]
    assert c.runtime.slots.waiting == 2  # b, then c
    assert condition(c.status(BLOB_COPY, "b"), "WorkerReady")["reason"] == "WaitingForWorkerSlot"

    c.api.delete(BLOB_COPY, "b")  # no pod yet, so no finalizer: gone at once
    c.sync()
    await c.queued()
    await c.reconcile(BLOB_COPY, "b")
    assert c.runtime.slots.waiting == 1

    c.api.set_pod_status("a-copy-1", "Succeeded", exit_code=0)
    c.sync()  # a's pod ends: its slot goes to the next in line
    assert sorted(await c.queued()) == [key("BlobCopy", "a"), key("BlobCopy", "c")]
    await c.reconcile(BLOB_COPY, "c")
    assert c.api.pod_names() == ["a-copy-1", "c-copy-1"]


async def test_a_copy_spread_over_workers_takes_the_free_slots_and_the_rest_as_they_free_up() -> None:
    c = cluster(limits=SlotLimits(total=2, per_namespace=2))
    spread = {"source": {"account": {"secretRef": {"name": "src", "key": "cs"}}, "container": "abc", "prefix": "p/"}}
    c.create(BLOB_COPY, blobcopy_body("a"))
    await c.reconcile(BLOB_COPY, "a")
    c.create(BLOB_COPY, blobcopy_body("w", **spread, workers=3))
    await c.reconcile(BLOB_COPY, "w")
    assert c.api.pod_names() == ["a-copy-1", "w-copy-1"]  # one slot left: the coordinator's
    assert c.runtime.slots.waiting == 1
    assert "helpers" not in c.status(BLOB_COPY, "w")

    c.api.set_pod_status("a-copy-1", "Succeeded", exit_code=0)
    c.sync()  # a's slot frees: w's next helper takes it
    assert key("BlobCopy", "w") in await c.queued()
    await c.reconcile(BLOB_COPY, "w")
    assert c.api.pod_names() == ["a-copy-1", "w-copy-1", "w-copy-1-1"]
    assert c.runtime.slots.waiting == 1  # the third worker still waits in line
    assert [h["pod"] for h in c.status(BLOB_COPY, "w")["helpers"]] == ["w-copy-1-1"]
