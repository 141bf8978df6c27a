"""What each kind's controller observes of the runtime's caches: its pods by role, its account, its siblings and
the worker slots, read through the World a pass gives it (RuntimeWorld over in-memory indexes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from builders import WORKERS, account_body, blobcopy_body, job_body, restore_body

from ferry.api.kinds import BLOB_COPY, CONTAINER_COPY_JOB, DATABASE_ACCOUNT, IN_ACCOUNT_RESTORE, Kind
from ferry.kinds.blobcopy.controller import CLEANUP_ROLE, BlobCopyController
from ferry.kinds.containercopyjob.controller import AccountView as JobAccountView
from ferry.kinds.containercopyjob.controller import ContainerCopyJobController
from ferry.kinds.databaseaccount.controller import (
    BACKUP_ROLE,
    COPY_ROLE,
    MONITOR_ROLE,
    RESTORE_ROLE,
    DatabaseAccountController,
)
from ferry.kinds.inaccountrestore.controller import AccountView as RestoreAccountView
from ferry.kinds.inaccountrestore.controller import InAccountRestoreController
from ferry.kube.manifests import pod_name, worker_pod
from ferry.runtime.controller import AnyController as Controller
from ferry.runtime.engine import RuntimeWorld
from ferry.runtime.objects import ObjectKey
from ferry.runtime.slots import SlotLimits
from ferry.transfer.account_queue import Queue
from support.memkube import ROOMY, Cluster, stamp

NOW = datetime.now(UTC).replace(microsecond=0)
WEST = {"writeRegion": "West US", "connection": {"state": "Connected", "message": "write region West US"}}


def cluster(limits: SlotLimits = ROOMY) -> Cluster:
    controllers: list[Controller] = [
        BlobCopyController(),
        DatabaseAccountController(),
        ContainerCopyJobController(),
        InAccountRestoreController(),
    ]
    return Cluster(controllers, WORKERS, limits)


def body(c: Cluster, kind: Kind, name: str) -> dict[str, Any]:
    """The object as a pass reads it."""
    found = c.runtime.latest(ObjectKey(kind.kind, "ns", name))
    assert found is not None
    return dict(found)


def add_pod(
    c: Cluster, kind: Kind, owner: dict[str, Any], role: str, index: int, phase: str = "Running", slot: bool = True
) -> str:
    """A worker pod of `owner` that exists already, as its controller would have started it."""
    meta = owner["metadata"]
    name = pod_name(meta["name"], role, index)
    manifest = worker_pod(
        kind=kind,
        owner_name=meta["name"],
        owner_uid=meta["uid"],
        namespace="ns",
        role=role,
        name=name,
        image=WORKERS.image,
        service_account=WORKERS.service_account,
        args=[role],
        takes_slot=slot,
    )
    c.api.add_pod(manifest, phase)
    return name


async def test_a_copy_job_observes_its_accounts_region_readiness_and_instances_and_its_place_in_line() -> None:
    c = cluster()
    not_ready = {"type": "Ready", "status": "False", "reason": "Unreachable", "message": "no answer from the endpoint"}
    account = c.create(DATABASE_ACCOUNT, account_body("acct", status={**WEST, "conditions": [not_ready]}))
    add_pod(c, DATABASE_ACCOUNT, account, COPY_ROLE, 0)
    c.create(CONTAINER_COPY_JOB, job_body("j1"))
    c.create(CONTAINER_COPY_JOB, job_body("j2"))
    c.create(CONTAINER_COPY_JOB, job_body("orphan", account="missing"))
    c.sync()
    world = RuntimeWorld(c.runtime)

    seen = ContainerCopyJobController().observe(body(c, CONTAINER_COPY_JOB, "j2"), world)
    assert seen.account == JobAccountView(
        "acct", "West US", "no answer from the endpoint", instances_running=True, ready_reason="Unreachable"
    )
    assert seen.queue == Queue(running=("j1",), waiting=("j2",))

    orphan = ContainerCopyJobController().observe(body(c, CONTAINER_COPY_JOB, "orphan"), world)
    assert (orphan.account, orphan.queue) == (None, Queue((), ()))


async def test_a_cross_account_job_and_its_accounts_see_each_other() -> None:
    """The job observes its source account; the account it runs on gives its instances the source's endpoint;
    a change of the source account brings both to a pass."""
    c = cluster()
    refused = {
        "type": "Ready",
        "status": "False",
        "reason": "Unauthorized",
        "message": "the key was refused",
        "lastTransitionTime": NOW.isoformat(),
    }
    c.create(DATABASE_ACCOUNT, account_body("acct", status=WEST))
    c.create(DATABASE_ACCOUNT, account_body("legacy", status={**WEST, "conditions": [refused]}))
    c.create(CONTAINER_COPY_JOB, job_body("across", source_account="legacy"))
    c.sync()
    world = RuntimeWorld(c.runtime)

    job = ContainerCopyJobController().observe(body(c, CONTAINER_COPY_JOB, "across"), world)
    assert job.source_account == JobAccountView(
        "legacy", "West US", "the key was refused", instances_running=False, ready_reason="Unauthorized"
    )
    account = DatabaseAccountController().observe(body(c, DATABASE_ACCOUNT, "acct"), world)
    assert account.copy_source is not None and not account.copy_source.readable
    assert account.copy_source.spec.endpoint == "https://legacy.documents.azure.com:443/"
    assert not DatabaseAccountController().observe(body(c, DATABASE_ACCOUNT, "legacy"), world).copy_source

    related = DatabaseAccountController().related(body(c, DATABASE_ACCOUNT, "legacy"), world)
    assert sorted(o["metadata"]["name"] for o in related) == ["acct", "across"]


async def test_a_copy_job_does_not_count_instances_that_do_not_run_yet() -> None:
    c = cluster()
    account = c.create(DATABASE_ACCOUNT, account_body("acct", status=WEST))
    add_pod(c, DATABASE_ACCOUNT, account, COPY_ROLE, 0, phase="Pending")
    add_pod(c, DATABASE_ACCOUNT, account, RESTORE_ROLE, 0)  # another pool's pod
    c.create(CONTAINER_COPY_JOB, job_body("j1"))
    c.sync()

    seen = ContainerCopyJobController().observe(body(c, CONTAINER_COPY_JOB, "j1"), RuntimeWorld(c.runtime))
    assert seen.account is not None and seen.account.instances_running is False


async def test_a_restore_observes_its_accounts_backup_window_its_restorers_and_what_blocks_it() -> None:
    c = cluster()
    window = {"earliestRestorableTime": stamp(NOW - timedelta(hours=1)), "latestRestorableTime": stamp(NOW)}
    account = c.create(DATABASE_ACCOUNT, account_body("acct", backup=True, status={**WEST, **window}))
    add_pod(c, DATABASE_ACCOUNT, account, RESTORE_ROLE, 0)
    c.create(IN_ACCOUNT_RESTORE, restore_body("first", "1", container="orders"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("other", "2", container="customers"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("again", "3", container="orders"))
    c.sync()

    seen = InAccountRestoreController().observe(body(c, IN_ACCOUNT_RESTORE, "again"), RuntimeWorld(c.runtime))
    assert seen.account == RestoreAccountView(
        name="acct",
        write_region="West US",
        ready_message=None,
        backup_enabled=True,
        earliest=NOW - timedelta(hours=1),
        latest=NOW,
        instances_running=True,
    )
    assert seen.blocked_by == "first"
    assert seen.queue == Queue(running=("first", "other"), waiting=())


async def test_a_restore_of_an_account_without_backup_observes_it_as_such() -> None:
    c = cluster()
    c.create(DATABASE_ACCOUNT, account_body("acct", status=WEST))
    c.create(IN_ACCOUNT_RESTORE, restore_body("r", "1"))

    seen = InAccountRestoreController().observe(body(c, IN_ACCOUNT_RESTORE, "r"), RuntimeWorld(c.runtime))
    assert seen.account is not None
    assert (seen.account.backup_enabled, seen.account.latest, seen.queue) == (False, None, Queue((), ()))


async def test_an_account_observes_its_pods_by_role_its_queues_and_the_slots_its_instances_may_take() -> None:
    c = cluster(limits=SlotLimits(total=3, per_namespace=3))
    status = {**WEST, "latestRestorableTime": stamp(NOW)}
    account = c.create(DATABASE_ACCOUNT, account_body("acct", backup=True, status=status))
    monitor = add_pod(c, DATABASE_ACCOUNT, account, MONITOR_ROLE, 0, slot=False)
    capture = add_pod(c, DATABASE_ACCOUNT, account, BACKUP_ROLE, 0, slot=False)
    instance = add_pod(c, DATABASE_ACCOUNT, account, COPY_ROLE, 0)  # takes one of the 3 slots
    stranger = c.create(DATABASE_ACCOUNT, account_body("stranger"))
    add_pod(c, DATABASE_ACCOUNT, stranger, COPY_ROLE, 0, phase="Succeeded")  # not acct's, and done
    c.create(CONTAINER_COPY_JOB, job_body("j1"))
    c.create(CONTAINER_COPY_JOB, job_body("j2"))
    c.create(IN_ACCOUNT_RESTORE, restore_body("r1", "1"))
    c.sync()

    seen = DatabaseAccountController().observe(body(c, DATABASE_ACCOUNT, "acct"), RuntimeWorld(c.runtime))
    assert [p.name for p in seen.monitor_pods] == [monitor]
    assert [p.name for p in seen.backup_pods] == [capture]
    assert [p.name for p in seen.instance_pods] == [instance]
    assert seen.restorer_pods == ()
    assert seen.queue == Queue(running=("j1",), waiting=("j2",))
    assert seen.restores == Queue(running=("r1",), waiting=())
    # One more copy instance and two restore instances are wanted; two slots are free.
    assert seen.instance_slots == 2
    assert seen.workers == WORKERS


async def test_a_blobcopy_observes_its_pods_by_role_and_whether_a_worker_slot_is_free() -> None:
    c = cluster(limits=SlotLimits(total=1, per_namespace=1))
    c.create(BLOB_COPY, blobcopy_body("a"))
    await c.reconcile(BLOB_COPY, "a")  # a takes the only slot; the cache has not shown its pod yet
    x = c.create(BLOB_COPY, blobcopy_body("x"))
    world = RuntimeWorld(c.runtime)

    first = BlobCopyController().observe(body(c, BLOB_COPY, "a"), world)
    assert [(p.name, p.phase) for p in first.copy_pods] == [("a-copy-1", "Pending")]
    assert BlobCopyController().observe(body(c, BLOB_COPY, "x"), world).slot_granted is False

    c.api.set_pod_status("a-copy-1", "Succeeded", exit_code=0)
    cleanup = add_pod(c, BLOB_COPY, x, CLEANUP_ROLE, 1, phase="Failed")
    c.sync()
    seen = BlobCopyController().observe(body(c, BLOB_COPY, "x"), RuntimeWorld(c.runtime))
    assert seen.slot_granted is True
    assert (seen.copy_pods, [p.name for p in seen.cleanup_pods]) == ((), [cleanup])
