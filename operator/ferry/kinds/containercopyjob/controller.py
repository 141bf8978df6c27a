"""ContainerCopyJob: its phase and place in its account's queue, as a pure decision.

The copy instances report the job's progress and its durable record in `__datatransferstate` (the
ContainerCopyProgress part of the status); this decision turns that record, the account's write region
and the queue into the phase, the failure and the times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ferry.api.common import Failure
from ferry.api.containercopyjob import (
    ATTEMPTS_KEPT,
    RERUN_ANNOTATION,
    AttemptRecord,
    ContainerCopyJobOperatorStatus,
    ContainerCopyJobSpec,
    ContainerCopyPhase,
    ContainerCopyProgress,
    CopyMode,
)
from ferry.api.databaseaccount import AccountApi, AccountObservation
from ferry.api.kinds import CONTAINER_COPY_JOB, DATABASE_ACCOUNT
from ferry.api.transfer import TransferState
from ferry.kinds.containercopyjob.metrics import COPYJOB_ITEMS_METRIC, THROTTLED_METRIC
from ferry.kinds.databaseaccount.controller import COPY_ROLE, NEEDS_THE_USER
from ferry.runtime.controller import Controller
from ferry.runtime.objects import ObjectMeta, condition, meta_of, set_condition, without_condition
from ferry.runtime.plan import Event, Plan
from ferry.runtime.world import World
from ferry.transfer.account_queue import FINISHED_PHASES, Queue, copy_jobs
from ferry.transfer.account_ref import account_and_siblings, not_ready_message, not_ready_reason, pods_running
from ferry.transfer.job_decision import AccountJobDecision, JobPhases

# Instances hold a work unit's lease this long without renewing it before it expires; after that no
# instance can still be writing for a suspended job, even one that died before saying it stopped.
LEASE_EXPIRY = timedelta(seconds=20)
AFTER_REGION_CHANGE = "re-create the job, or run it again (ferry jobs rerun), to run it in the new write region"
# Failures after which a re-run starts over: the checkpoints no longer describe what is to copy (another write
# region, containers re-created, the destination changed by others) or the job never got past its start.
STARTS_OVER = frozenset(
    {
        "WriteRegionChanged",
        "SourceNotFound",
        "DestinationNotFound",
        "ItemConflict",
        "VerificationFailed",
        "ChangeFeedModeUnsupported",
        "InvalidResourceName",
    }
)


@dataclass(frozen=True)
class AccountView:
    name: str
    write_region: str | None
    ready_message: str | None  # why the account is not ready, if it is not
    instances_running: bool
    ready_reason: str | None = None  # the Ready condition's reason, when it is not True
    api: AccountApi = AccountApi.NOSQL

    @property
    def needs_the_user(self) -> bool:
        """Its key is refused or missing: nothing changes until the user acts."""
        return self.ready_reason in NEEDS_THE_USER


@dataclass(frozen=True)
class Observed:
    meta: ObjectMeta
    spec: ContainerCopyJobSpec
    state: ContainerCopyJobOperatorStatus
    progress: ContainerCopyProgress
    account: AccountView | None
    queue: Queue
    now: datetime
    source_account: AccountView | None = None  # spec.source.accountRef's, when set and it exists
    rerun: str | None = None  # the ferry.dev/rerun annotation


class ContainerCopyJobController(Controller[Observed]):
    kind = CONTAINER_COPY_JOB
    status_part = ContainerCopyJobOperatorStatus

    def observe(self, body: Mapping[str, Any], world: World) -> Observed:
        meta = meta_of(body)
        status = body.get("status") or {}
        spec = ContainerCopyJobSpec.model_validate(body.get("spec") or {})
        account = _account_view(world, meta.namespace, spec.account_ref.name)
        jobs_queue = Queue((), ())
        if account is not None:
            siblings = world.referencing(CONTAINER_COPY_JOB, meta.namespace, account.name)
            jobs_queue = copy_jobs(siblings, account.write_region)
        source_ref = spec.source_account()
        return Observed(
            meta=meta,
            spec=spec,
            state=ContainerCopyJobOperatorStatus.part_of(status),
            progress=ContainerCopyProgress.part_of(status),
            account=account,
            queue=jobs_queue,
            now=world.now,
            source_account=_account_view(world, meta.namespace, source_ref) if source_ref else None,
            rerun=((body.get("metadata") or {}).get("annotations") or {}).get(RERUN_ANNOTATION),
        )

    def decide(self, observed: Observed) -> Plan:
        return decide(observed)

    def related(self, body: Mapping[str, Any], world: World) -> list[Mapping[str, Any]]:
        """Its account and the account's other jobs."""
        return account_and_siblings(CONTAINER_COPY_JOB, body, world)


def _account_view(world: World, namespace: str, name: str) -> AccountView | None:
    body = world.object(DATABASE_ACCOUNT, namespace, name)
    if body is None:
        return None
    meta, status = meta_of(body), body.get("status") or {}
    return AccountView(
        name=meta.name,
        write_region=AccountObservation.part_of(status).write_region,
        ready_message=not_ready_message(status),
        instances_running=pods_running(world, meta.uid, COPY_ROLE),
        ready_reason=not_ready_reason(status),
        api=AccountApi((body.get("spec") or {}).get("api") or AccountApi.NOSQL.value),
    )


PHASES = JobPhases(
    pending=ContainerCopyPhase.PENDING,
    queued=ContainerCopyPhase.QUEUED,
    running=ContainerCopyPhase.RUNNING,
    succeeded=ContainerCopyPhase.SUCCEEDED,
    failed=ContainerCopyPhase.FAILED,
    finished=frozenset(FINISHED_PHASES),
    settled=(ContainerCopyPhase.PAUSED,),
    job="job",
    pool="copy",
    working="Copying",
)


class _Decision(AccountJobDecision[ContainerCopyJobOperatorStatus, ContainerCopyPhase]):
    def __init__(self, o: Observed) -> None:
        super().__init__(CONTAINER_COPY_JOB.kind, o.state.model_copy(deep=True), PHASES, o.meta.generation, o.now)
        self.o = o


def decide(o: Observed) -> Plan:
    d = _Decision(o)
    state, progress = d.state, o.progress
    state.observed_generation = o.meta.generation
    state.creation_revision = state.creation_revision or o.meta.resource_version
    d.plan.progress = {
        COPYJOB_ITEMS_METRIC: progress.processed_count or 0,
        THROTTLED_METRIC: progress.throttled_requests or 0,
    }
    if o.rerun is not None and o.rerun != state.last_rerun and not o.meta.deleting:
        _rerun(d, o.rerun)
    if o.meta.deleting or state.phase in FINISHED_PHASES:
        return d.done()  # deleted: the instances record the cancellation in the job history
    transfer = progress.transfer
    if transfer is not None and (transfer.attempt or 1) < (state.attempt or 1):
        transfer = None  # the record of an earlier run, until the instances take this one up
    d.verified(progress.verification)
    online = o.spec.mode == CopyMode.ONLINE
    if online and progress.pending_changes is not None:
        caught_up = progress.pending_changes == 0
        state.conditions = set_condition(
            state.conditions,
            "CaughtUp",
            caught_up,
            "CaughtUp" if caught_up else "Behind",
            "every source change is in the destination"
            if caught_up
            else f"{progress.pending_changes} source changes to apply, {progress.seconds_behind or 0}s behind",
            o.meta.generation,
            o.now,
        )
    copied = (
        (
            "CutOver",
            lambda: (
                f"copied {progress.processed_count or 0} items and applied every source change up to "
                "the cutover: it is safe to repoint clients to the destination"
            ),
        )
        if online
        else ("Copied", lambda: f"copied {progress.processed_count or 0} items")
    )
    if d.followed_transfer(
        transfer, copied, Failure(reason="CopyFailed", message="the copy instances report a failure")
    ):
        return d.done()
    if state.phase is None:
        d.phase(ContainerCopyPhase.PENDING, "Accepted", "the job waits for its account")
    account = o.account
    if account is None:
        d.account_missing(o.spec.account_ref.name)
        return d.done()
    if account.write_region is None:
        d.waiting_for_region(account.ready_message)
        return d.done()
    if state.write_region is not None and state.write_region != account.write_region:
        d.region_changed(account.name, state.write_region, account.write_region, AFTER_REGION_CHANGE)
        return d.done()
    state.write_region = account.write_region
    if account.api == AccountApi.MONGODB and (unsupported := _unsupported_for_mongo(o)) is not None:
        d.fail(Failure(reason="NotSupportedForApi", message=unsupported))
        return d.done()
    if (source_account := o.spec.source_account()) is not None and not _source_readable(d, source_account):
        return d.done()
    if o.spec.suspend:
        _suspended(d)
        return d.done()
    if condition(state.conditions, "Suspended") is not None:
        state.conditions = set_condition(
            state.conditions, "Suspended", False, "Resumed", "spec.suspend is false", o.meta.generation, o.now
        )
    position = o.queue.position(o.meta.name)
    state.queue_position = position
    if position is None:
        return d.done()  # not runnable for a reason handled above on the next pass
    d.in_line(position, transfer, account.instances_running, "copying this job")
    return d.done()


def _rerun(d: _Decision, token: str) -> None:
    """A new ferry.dev/rerun value: a Failed or Cancelled job runs again, as its next attempt; a job that has not
    ended, or succeeded, is not run again, and the Rerun condition says why."""
    o, state = d.o, d.state
    state.last_rerun = token
    if state.phase not in (ContainerCopyPhase.FAILED, ContainerCopyPhase.CANCELLED):
        why = (
            "the job succeeded: apply a new ContainerCopyJob to copy again"
            if state.phase == ContainerCopyPhase.SUCCEEDED
            else f"the job has not ended (phase {state.phase.value if state.phase else 'Pending'}): only a Failed "
            "or Cancelled job runs again"
        )
        _rerun_condition(d, False, "RerunRefused", f"ferry.dev/rerun {token!r} refused: {why}")
        d.plan.events.append(Event("RerunRefused", f"ferry.dev/rerun {token!r} refused: {why}", warning=True))
        return
    attempt = (state.attempt or 1) + 1
    failure = state.failure
    earlier = AttemptRecord(
        attempt=attempt - 1,
        phase=state.phase,
        reason=failure.reason if failure else None,
        message=failure.message if failure else None,
        start_time=state.start_time,
        completion_time=state.completion_time,
        processed_count=o.progress.processed_count,
        total_count=o.progress.total_count,
    )
    state.attempts = [*(state.attempts or []), earlier][-ATTEMPTS_KEPT:]
    resume = failure is not None and failure.reason not in STARTS_OVER
    if resume:
        how = f"resumes from the checkpoints attempt {attempt - 1} left ({failure.reason if failure else ''})"
    else:
        state.record_id = f"{o.meta.uid}-{attempt}"
        cause = f"after {failure.reason}" if failure else "after a cancellation"
        how = f"starts over {cause}: the earlier checkpoints do not hold for it"
    state.attempt = attempt
    state.failure = None
    state.start_time = state.completion_time = state.queue_position = None
    state.write_region = state.source_write_region = None  # recorded again when queued
    for stale in ("Verified", "CaughtUp", "Suspended"):
        state.conditions = without_condition(state.conditions, stale)
    _rerun_condition(d, True, "Rerun", f"attempt {attempt} {how}")
    d.phase(ContainerCopyPhase.PENDING, "Rerun", f"attempt {attempt} {how}")


def _rerun_condition(d: _Decision, ok: bool, reason: str, message: str) -> None:
    d.state.conditions = set_condition(d.state.conditions, "Rerun", ok, reason, message, d.o.meta.generation, d.o.now)


def _source_readable(d: _Decision, name: str) -> bool:
    """A cross-account copy's source account: it must exist, answer to its key and keep its write region."""
    source, state = d.o.source_account, d.state
    if source is None:
        field = "spec.tasks[*].source.accountRef" if d.o.spec.tasks else "spec.source.accountRef"
        d.account_missing(name, field, reason="SourceAccountNotFound")
        return False
    if source.needs_the_user:
        message = f'the source account "{name}" cannot be read: {source.ready_message}'
        d.fail(Failure(reason=str(source.ready_reason), message=message))
        return False
    if source.write_region is None:
        d.waiting_for_region(source.ready_message, f'the source account "{name}"\'s')
        return False
    if state.source_write_region is not None and state.source_write_region != source.write_region:
        d.region_changed(name, state.source_write_region, source.write_region, AFTER_REGION_CHANGE)
        return False
    state.source_write_region = source.write_region
    return True


def _unsupported_for_mongo(o: Observed) -> str | None:
    """What a job asks that copies of MongoDB collections do not do (offline, within the account, as the
    service's MongoDB copy jobs)."""
    if o.spec.mode == CopyMode.ONLINE:
        return (
            f'account "{o.spec.account_ref.name}" is of api MongoDB, whose copies are offline (spec.mode: Offline): '
            "online copies read the API for NoSQL change feed"
        )
    if o.spec.source_account() is not None:
        return (
            f'account "{o.spec.account_ref.name}" is of api MongoDB, whose copies read collections of the same '
            "account: remove source.accountRef"
        )
    return None


def _suspended(d: _Decision) -> None:
    o, state = d.o, d.state
    state.queue_position = None
    state.conditions = set_condition(
        state.conditions, "Suspended", True, "Suspended", "spec.suspend is true", o.meta.generation, o.now
    )
    transfer = o.progress.transfer
    was_working = state.phase in (ContainerCopyPhase.RUNNING, ContainerCopyPhase.PAUSING)
    stopped = transfer is None or transfer.state != TransferState.RUNNING
    since = condition(state.conditions, "Suspended")
    expired = since is not None and o.now - since.last_transition_time >= LEASE_EXPIRY
    if was_working and not stopped and not expired:
        d.phase(ContainerCopyPhase.PAUSING, "Suspending", "spec.suspend is true; the instances stop at a checkpoint")
        assert since is not None
        d.plan.after((since.last_transition_time + LEASE_EXPIRY - o.now).total_seconds())
        return
    d.phase(ContainerCopyPhase.PAUSED, "Suspended", "spec.suspend is true; set it to false to resume")
