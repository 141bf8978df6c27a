"""What a restore brings back, and the rules that refuse one: pure, from the backup's index and the live catalog.

The rules are those of Azure's in-account restore, each with a reason of its own and a message saying what
to do; restoring under another name (`target`) lifts the "deleted resources only" rule, since nothing live
is replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ferry.api.common import Failure
from ferry.backup.format import BackupIndex, ResourceKind
from ferry.backup.timeline import Incarnation, containers_of, gap_at, incarnations, named, restorable_window
from ferry.timefmt import when

ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class RestoreRequest:
    database: str
    container: str | None = None
    timestamp: datetime | None = None
    target_database: str | None = None
    target_container: str | None = None
    ttl_disabled: bool = False

    @property
    def kind(self) -> ResourceKind:
        return ResourceKind.CONTAINER if self.container else ResourceKind.DATABASE

    @property
    def into_database(self) -> str:
        return self.target_database or self.database

    @property
    def into_container(self) -> str | None:
        return self.target_container or self.container

    def describe(self) -> str:
        return f"container {self.database}/{self.container}" if self.container else f"database {self.database}"


@dataclass(frozen=True)
class LiveCatalog:
    """The databases and containers that exist in the account now."""

    databases: frozenset[str]
    containers: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class ContainerRestore:
    name: str  # the name it is created under
    source_rid: str  # the incarnation whose items come back
    settings: dict[str, Any]


@dataclass
class RestorePlan:
    timestamp: datetime
    database: str  # the database restored into
    create_database: bool
    database_settings: dict[str, Any] = field(default_factory=dict)
    source_rid: str = ""  # the restored incarnation: the database's, or the container's
    containers: list[ContainerRestore] = field(default_factory=list)


class CaptureBehind(Exception):
    """The resource is gone but the backup has not captured its deletion yet: plan again after the next capture."""


class RestoreRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(reason=reason, message=message)


def _lifetimes(found: list[Incarnation]) -> str:
    return "; ".join(f"{when(i.created)} to {when(i.deleted) if i.deleted else 'now'}" for i in found)


def default_timestamp(found: list[Incarnation], latest: datetime) -> datetime:
    """The last deleted incarnation, one second before its deletion; for a live resource restored under
    another name, the latest restorable time."""
    deleted = [i.deleted for i in found if i.deleted is not None]
    return max(deleted) - ONE_SECOND if deleted else latest


def deletion_note(precision_seconds: float | None, t: datetime) -> str | None:
    """Where the backup's item deletions come from a sweep, a restore to `t` may bring back items deleted up to
    one sweep interval before it: said in the restore's status."""
    if not precision_seconds:
        return None
    return (
        f"item deletions are known to within {precision_seconds:g}s (the account has no all-versions-and-deletes "
        f"change feed: they are found by a sweep every spec.backup.deletionSweepInterval); items deleted up to "
        f"{precision_seconds:g}s before {when(t)} may be restored"
    )


def plan_restore(index: BackupIndex, request: RestoreRequest, live: LiveCatalog, now: datetime) -> RestorePlan:
    """The restore to carry out, or RestoreRefused naming the rule it breaks."""
    what = request.describe()
    found = incarnations(index.events)
    mine = named(found, request.kind, request.database, request.container or request.database)
    if not mine:
        raise RestoreRefused(
            "NotInBackup",
            f"the backup has no {what}: it was never captured, or it left the retention window; "
            "`ferry restorable list` shows what can be restored",
        )
    _check_live(request, live)
    window = restorable_window(index, now)
    if window is None:
        raise RestoreRefused("BackupNotReady", "the backup has no complete capture yet; try again after the first one")
    earliest, latest = window
    if request.timestamp is None and request.target_database is None and any(i.deleted is None for i in mine):
        # Not live (checked above), yet live in the backup: the deletion happens after the last capture.
        raise CaptureBehind(f"waiting for the backup to capture the deletion of {what}")
    t = request.timestamp or default_timestamp(mine, latest)
    if not earliest <= t <= latest:
        raise RestoreRefused(
            "OutsideRetentionWindow",
            f"{when(t)} is outside the restorable window {when(earliest)} to {when(latest)}; "
            "choose a restoreTimestamp inside it",
        )
    gap = gap_at(index, t)
    if gap is not None:
        raise RestoreRefused(
            "InBackupGap",
            f"{when(t)} falls in a gap of the backup (no capture from {when(gap[0])} to {when(gap[1])}); "
            "choose a restoreTimestamp outside it",
        )
    at_t = next((i for i in mine if i.live_at(t)), None)
    if at_t is None:
        raise RestoreRefused(
            "NotFoundAtTime",
            f"{what} did not exist at {when(t)}; it existed {_lifetimes(mine)}: choose a restoreTimestamp then",
        )
    if request.kind == ResourceKind.CONTAINER:
        return _container_plan(request, at_t, live, t)
    return _database_plan(request, at_t, found, t)


def _check_live(request: RestoreRequest, live: LiveCatalog) -> None:
    into_db, into_container = request.into_database, request.into_container
    exists = (into_db, into_container) in live.containers if into_container else into_db in live.databases
    if not exists:
        return
    if request.target_database is None:
        raise RestoreRefused(
            "ResourceExists",
            f"{request.describe()} exists: an in-account restore brings back deleted resources only; delete it "
            "first, or restore its past state beside it under another name with spec.target",
        )
    place = f"{into_db}/{into_container}" if into_container else into_db
    raise RestoreRefused(
        "TargetExists", f"the target {place} exists; choose a target name that is not in use, or delete it first"
    )


def _settings(incarnation: Incarnation, t: datetime, request: RestoreRequest) -> dict[str, Any]:
    settings = incarnation.settings_at(t)
    if request.ttl_disabled:
        settings.pop("defaultTtl", None)
    return settings


def _container_plan(request: RestoreRequest, found: Incarnation, live: LiveCatalog, t: datetime) -> RestorePlan:
    assert request.into_container is not None
    if request.into_database not in live.databases:
        raise RestoreRefused(
            "DatabaseNotFound",
            f"database {request.into_database} does not exist: a container is restored into an existing database; "
            f"restore the database first (an InAccountRestore without spec.container)",
        )
    settings = _settings(found, t, request)
    if settings.get("throughputMode") == "Shared":
        raise RestoreRefused(
            "SharedThroughputContainer",
            f"{request.describe()} shared its database's throughput: it comes back only with its database; "
            f"restore database {request.database}",
        )
    return RestorePlan(
        timestamp=t,
        database=request.into_database,
        create_database=False,
        source_rid=found.rid,
        containers=[ContainerRestore(name=request.into_container, source_rid=found.rid, settings=settings)],
    )


def _database_plan(
    request: RestoreRequest, found: Incarnation, everything: list[Incarnation], t: datetime
) -> RestorePlan:
    containers = sorted(containers_of(everything, found.rid, t), key=lambda i: i.name)
    return RestorePlan(
        timestamp=t,
        database=request.into_database,
        create_database=True,
        database_settings=found.settings_at(t),
        source_rid=found.rid,
        containers=[
            ContainerRestore(name=c.name, source_rid=c.rid, settings=_settings(c, t, request)) for c in containers
        ],
    )


@dataclass(frozen=True)
class RestorableResource:
    """A database and the containers a restore of it at a time would bring back (Azure's restorableSqlResources)."""

    database: str
    containers: tuple[str, ...]


def restorable_at(index: BackupIndex, t: datetime) -> list[RestorableResource]:
    found = incarnations(index.events)
    return [
        RestorableResource(db.name, tuple(sorted(c.name for c in containers_of(found, db.rid, t))))
        for db in sorted(found, key=lambda i: i.name)
        if db.kind == ResourceKind.DATABASE and db.live_at(t)
    ]
