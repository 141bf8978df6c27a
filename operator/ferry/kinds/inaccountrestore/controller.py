"""InAccountRestore: its phase, its place in the account's restore queue and the rules it can be judged by here.

The rules that need only the cluster's objects are checked here, before any work: the account exists and has
continuous backup, no earlier restore of the same resource is unfinished, the write region has not changed,
the time is not before the window or in the future. The rules that need the backup and the live account
(deleted resources only, the resource existed at the time, no gap, the database exists, shared throughput)
are checked by the restore instances, which report a failure with its reason. The instances also report the
progress and the job's durable record (the RestoreProgress part of the status); this decision turns that
record, the account and the queue into the phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.api.common import Failure
from ferry.api.databaseaccount import AccountObservation, BackupMode, BackupObservation, DatabaseAccountSpec
from ferry.api.inaccountrestore import (
    InAccountRestoreOperatorStatus,
    InAccountRestoreSpec,
    RestorePhase,
    RestoreProgress,
)
from ferry.api.kinds import DATABASE_ACCOUNT, IN_ACCOUNT_RESTORE
from ferry.kinds.databaseaccount.controller import RESTORE_ROLE
from ferry.kinds.inaccountrestore.metrics import RESTORE_ITEMS_METRIC
from ferry.runtime.controller import Controller
from ferry.runtime.objects import ObjectMeta, meta_of
from ferry.runtime.plan import Plan
from ferry.runtime.world import World
from ferry.timefmt import when
from ferry.transfer.account_queue import RESTORE_FINISHED, BackupView, Queue, blocking_restore, restores
from ferry.transfer.account_ref import account_and_siblings, not_ready_message, pods_running
from ferry.transfer.job_decision import AccountJobDecision, JobPhases


@dataclass(frozen=True)
class AccountView:
    name: str
    write_region: str | None
    ready_message: str | None  # why the account is not ready, if it is not
    backup_enabled: bool
    earliest: datetime | None
    latest: datetime | None
    instances_running: bool


@dataclass(frozen=True)
class Observed:
    meta: ObjectMeta
    spec: InAccountRestoreSpec
    state: InAccountRestoreOperatorStatus
    progress: RestoreProgress
    account: AccountView | None
    queue: Queue
    blocked_by: str | None  # an earlier unfinished restore of the same resource
    now: datetime


class InAccountRestoreController(Controller[Observed]):
    kind = IN_ACCOUNT_RESTORE
    status_part = InAccountRestoreOperatorStatus

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        meta = meta_of(body)
        status = body.get("status") or {}
        spec = InAccountRestoreSpec.model_validate(body.get("spec") or {})
        account_body = world.object(DATABASE_ACCOUNT, meta.namespace, spec.account_ref.name)
        siblings = world.referencing(IN_ACCOUNT_RESTORE, meta.namespace, spec.account_ref.name)
        account: AccountView | None = None
        restore_queue = Queue((), ())
        if account_body is not None:
            account_meta = meta_of(account_body)
            account_status = account_body.get("status") or {}
            account_spec = DatabaseAccountSpec.model_validate(account_body.get("spec") or {})
            observation = AccountObservation.part_of(account_status)
            backup = BackupObservation.part_of(account_status)
            enabled = account_spec.backup.mode == BackupMode.CONTINUOUS
            account = AccountView(
                name=account_meta.name,
                write_region=observation.write_region,
                ready_message=not_ready_message(account_status),
                backup_enabled=enabled,
                earliest=backup.earliest_restorable_time,
                latest=backup.latest_restorable_time,
                instances_running=pods_running(world, account_meta.uid, RESTORE_ROLE),
            )
            view = BackupView(observation.write_region, enabled, backup.latest_restorable_time)
            restore_queue = restores(siblings, view)
        return Observed(
            meta=meta,
            spec=spec,
            state=InAccountRestoreOperatorStatus.part_of(status),
            progress=RestoreProgress.part_of(status),
            account=account,
            queue=restore_queue,
            blocked_by=blocking_restore(body, siblings),
            now=world.now,
        )

    def decide(self, observed: Observed) -> Plan:
        return decide(observed)

    def related(self, body: Mapping[str, Any], world: World) -> list[Mapping[str, Any]]:
        """Its account and the account's other restores."""
        return account_and_siblings(IN_ACCOUNT_RESTORE, body, world)


PHASES = JobPhases(
    pending=RestorePhase.PENDING,
    queued=RestorePhase.QUEUED,
    running=RestorePhase.RESTORING,
    succeeded=RestorePhase.SUCCEEDED,
    failed=RestorePhase.FAILED,
    finished=frozenset(RESTORE_FINISHED),
    settled=(),
    job="restore",
    pool="restore",
    working="Restoring",
)


class _Decision(AccountJobDecision[InAccountRestoreOperatorStatus, RestorePhase]):
    def __init__(self, o: Observed) -> None:
        super().__init__(IN_ACCOUNT_RESTORE.kind, o.state.model_copy(deep=True), PHASES, o.meta.generation, o.now)
        self.o = o


def _what(spec: InAccountRestoreSpec) -> str:
    return f"container {spec.database}/{spec.container}" if spec.container else f"database {spec.database}"


def decide(o: Observed) -> Plan:
    d = _Decision(o)
    state, progress = d.state, o.progress
    state.observed_generation = o.meta.generation
    state.creation_revision = state.creation_revision or o.meta.resource_version
    d.plan.progress = {RESTORE_ITEMS_METRIC: progress.restored_item_count or 0}
    if o.meta.deleting or state.phase in RESTORE_FINISHED:
        return d.done()  # deleted: the instances record the cancellation in the job history
    transfer = progress.transfer
    d.verified(progress.verification)

    def restored() -> str:
        restored_to = when(progress.restore_timestamp) if progress.restore_timestamp else "the restore time"
        return (
            f"restored {_what(o.spec)} as at {restored_to}: {progress.restored_item_count or 0} items, "
            f"instance id {progress.instance_id}"
        )

    failed = Failure(reason="RestoreFailed", message="the restore instances report a failure")
    if d.followed_transfer(transfer, ("Restored", restored), failed):
        return d.done()
    if state.phase is None:
        d.phase(RestorePhase.PENDING, "Accepted", "the restore waits for its account")
    if not _admissible(d):
        return d.done()
    account = o.account
    assert account is not None
    position = o.queue.position(o.meta.name)
    state.queue_position = position
    if position is None:
        wanted = o.spec.restore_timestamp
        message = "waiting for the backup's first capture"
        if wanted is not None and account.latest is not None:
            message = f"waiting for the backup to capture up to {when(wanted)} (captured to {when(account.latest)})"
        d.phase(RestorePhase.PENDING, "WaitingForCapture", message)
        return d.done()
    d.in_line(position, transfer, account.instances_running, f"restoring {_what(o.spec)}")
    return d.done()


def _admissible(d: _Decision) -> bool:
    """The rules this decision can judge from the cluster's objects; False when the restore cannot go on now."""
    o, state = d.o, d.state
    account = o.account
    if account is None:
        d.account_missing(o.spec.account_ref.name)
        return False
    if not account.backup_enabled:
        d.fail(
            Failure(
                reason="BackupNotEnabled",
                message=f"DatabaseAccount {account.name} has no continuous backup (spec.backup.mode is Off): restores "
                "read Ferry's backup, so only resources deleted after it is turned on can be restored",
            )
        )
        return False
    if o.blocked_by is not None:
        d.fail(
            Failure(
                reason="RestoreInProgress",
                message=f"InAccountRestore {o.blocked_by} of the same resource is in progress; one restore of a "
                "resource at a time: create this one again when it has finished",
            )
        )
        return False
    if account.write_region is None:
        d.waiting_for_region(account.ready_message)
        return False
    if state.write_region is not None and state.write_region != account.write_region:
        then = (
            f"delete what it restored so far ({_what(o.spec)}, if it was created), then create the restore again "
            "to restore in the new write region"
        )
        d.region_changed(account.name, state.write_region, account.write_region, then)
        return False
    state.write_region = account.write_region
    wanted = o.spec.restore_timestamp
    if wanted is not None and wanted > o.now:
        d.fail(Failure(reason="FutureTimestamp", message=f"restoreTimestamp {when(wanted)} is in the future"))
        return False
    if wanted is not None and account.earliest is not None and wanted < account.earliest:
        d.fail(
            Failure(
                reason="OutsideRetentionWindow",
                message=f"{when(wanted)} is before the earliest restorable time {when(account.earliest)}; "
                "choose a restoreTimestamp inside the window",
            )
        )
        return False
    return True
