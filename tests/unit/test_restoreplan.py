"""The restore rules and what a restore brings back, decided from a backup's index alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferry.api.databaseaccount import BackupGap
from ferry.backup.format import BackupIndex, BaseRef, CatalogEvent, Operation, ResourceKind, SegmentRef
from ferry.backup.restoreplan import (
    CaptureBehind,
    LiveCatalog,
    RestoreRefused,
    RestoreRequest,
    plan_restore,
    restorable_at,
)
from ferry.backup.timeline import items_at, restorable_window


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 21, 10, minute, second, tzinfo=UTC)


def event(
    op: Operation, minute: int, name: str, rid: str, *, db: str = "shop", db_rid: str = "D1", **settings: Any
) -> CatalogEvent:
    kind = ResourceKind.DATABASE if rid.startswith("D") else ResourceKind.CONTAINER
    return CatalogEvent(
        operation_type=op,
        event_timestamp=at(minute),
        kind=kind,
        owner_id=name,
        owner_resource_id=rid,
        database=db,
        database_resource_id=db_rid,
        settings=settings,
    )


C, R, X, RC = Operation.CREATE, Operation.REPLACE, Operation.DELETE, Operation.RECREATE

# shop (D1) from 10:00 with orders (C1, dedicated, TTL 60 until a replace at 10:10 sets 120) deleted at 10:30,
# re-created (C3) at 10:35 and deleted again at 10:50; carts (C2) shares the database's throughput and lives on;
# returns (C4) is created at 10:20. Old (D2) lives 10:01 to 10:25 with its container (C5).
EVENTS = [
    event(C, 0, "shop", "D1", throughput=400),
    event(C, 0, "orders", "C1", partitionKey={"paths": ["/id"]}, defaultTtl=60, throughputMode="Dedicated"),
    event(C, 0, "carts", "C2", partitionKey={"paths": ["/id"]}, throughputMode="Shared"),
    event(R, 10, "orders", "C1", partitionKey={"paths": ["/id"]}, defaultTtl=120, throughputMode="Dedicated"),
    event(C, 20, "returns", "C4", partitionKey={"paths": ["/id"]}, throughputMode="Dedicated"),
    event(X, 30, "orders", "C1"),
    event(RC, 35, "orders", "C3", partitionKey={"paths": ["/tenant"]}, throughputMode="Dedicated"),
    event(X, 50, "orders", "C3"),
    event(C, 1, "old", "D2", db="old", db_rid="D2"),
    event(C, 1, "things", "C5", db="old", db_rid="D2", throughputMode="Dedicated"),
    event(X, 25, "things", "C5", db="old", db_rid="D2"),
    event(X, 25, "old", "D2", db="old", db_rid="D2"),
]
NOW = at(59)


def backup(**fields: Any) -> BackupIndex:
    values: dict[str, Any] = {
        "endpoint": "https://cosmos",
        "retention_seconds": 7 * 24 * 3600,
        "capture_interval_seconds": 30,
        "last_capture": at(58),
        "bases": [BaseRef(seq=1, time=at(0, 5), blob="bases/1")],
        "gaps": [BackupGap(start=at(40), end=at(45))],
        "events": EVENTS,
        **fields,
    }
    return BackupIndex(**values)


LIVE = LiveCatalog(databases=frozenset({"shop"}), containers=frozenset({("shop", "carts"), ("shop", "returns")}))


def refused(request: RestoreRequest, index: BackupIndex | None = None, live: LiveCatalog = LIVE) -> RestoreRefused:
    with pytest.raises(RestoreRefused) as caught:
        plan_restore(index or backup(), request, live, NOW)
    return caught.value


def test_without_a_timestamp_the_last_deleted_incarnation_one_second_before_its_deletion() -> None:
    plan = plan_restore(backup(), RestoreRequest("shop", "orders"), LIVE, NOW)
    assert plan.timestamp == at(49, 59)
    assert plan.source_rid == "C3" and not plan.create_database
    assert plan.containers[0].settings["partitionKey"] == {"paths": ["/tenant"]}


def test_any_time_in_the_window_picks_the_incarnation_and_settings_of_that_time() -> None:
    first = plan_restore(backup(), RestoreRequest("shop", "orders", timestamp=at(5)), LIVE, NOW)
    assert first.source_rid == "C1" and first.containers[0].settings["defaultTtl"] == 60
    replaced = plan_restore(backup(), RestoreRequest("shop", "orders", timestamp=at(15)), LIVE, NOW)
    assert replaced.containers[0].settings["defaultTtl"] == 120


def test_ttl_disabled_drops_the_default_ttl() -> None:
    plan = plan_restore(backup(), RestoreRequest("shop", "orders", timestamp=at(15), ttl_disabled=True), LIVE, NOW)
    assert "defaultTtl" not in plan.containers[0].settings


def test_a_live_resource_is_refused() -> None:
    failure = refused(RestoreRequest("shop", "carts", timestamp=at(5))).failure
    assert failure.reason == "ResourceExists" and "spec.target" in failure.message


def test_a_live_resource_comes_back_beside_itself_under_another_name_at_the_latest_time_by_default() -> None:
    request = RestoreRequest("shop", "returns", target_database="shop", target_container="returns-rewound")
    plan = plan_restore(backup(), request, LIVE, NOW)
    assert plan.timestamp == at(57, 59) and plan.containers[0].name == "returns-rewound"


def test_a_target_that_exists_is_refused() -> None:
    request = RestoreRequest("shop", "orders", timestamp=at(5), target_database="shop", target_container="carts")
    failure = refused(request).failure
    assert failure.reason == "TargetExists" and "shop/carts" in failure.message


def test_a_resource_never_captured_is_refused() -> None:
    assert refused(RestoreRequest("shop", "ghost")).failure.reason == "NotInBackup"


def test_a_time_outside_the_window_is_refused_with_the_window() -> None:
    failure = refused(RestoreRequest("shop", "orders", timestamp=at(0, 1))).failure
    assert failure.reason == "OutsideRetentionWindow"
    assert "2026-11-21T10:00:05Z to 2026-11-21T10:57:59Z" in failure.message
    assert refused(RestoreRequest("shop", "orders", timestamp=at(58))).failure.reason == "OutsideRetentionWindow"


def test_the_window_starts_at_the_retention_limit_when_the_first_base_is_older() -> None:
    index = backup(retention_seconds=40 * 60)
    assert restorable_window(index, NOW) == (at(19), at(57, 59))
    assert refused(RestoreRequest("shop", "orders", timestamp=at(15)), index).failure.reason == "OutsideRetentionWindow"


def test_a_time_in_a_gap_is_refused_with_the_gap() -> None:
    failure = refused(RestoreRequest("shop", "orders", timestamp=at(42))).failure
    assert failure.reason == "InBackupGap" and "10:40:00Z to 2026-11-21T10:45:00Z" in failure.message


def test_a_time_when_the_resource_did_not_exist_is_refused_with_its_lifetimes() -> None:
    failure = refused(RestoreRequest("shop", "orders", timestamp=at(32))).failure
    assert failure.reason == "NotFoundAtTime"
    assert "10:00:00Z to 2026-11-21T10:30:00Z; 2026-11-21T10:35:00Z to 2026-11-21T10:50:00Z" in failure.message


def test_a_container_needs_its_database() -> None:
    failure = refused(RestoreRequest("old", "things", timestamp=at(10))).failure
    assert failure.reason == "DatabaseNotFound" and "restore the database first" in failure.message


def test_a_shared_throughput_container_comes_back_only_with_its_database() -> None:
    live = LiveCatalog(databases=frozenset({"shop"}), containers=frozenset())
    failure = refused(RestoreRequest("shop", "carts", timestamp=at(5)), live=live).failure
    assert failure.reason == "SharedThroughputContainer" and "restore database shop" in failure.message


def test_a_database_comes_back_with_its_containers_as_they_were() -> None:
    live = LiveCatalog(databases=frozenset(), containers=frozenset())
    plan = plan_restore(backup(), RestoreRequest("shop", timestamp=at(25)), live, NOW)
    assert plan.create_database and plan.database_settings == {"throughput": 400}
    assert [(c.name, c.source_rid) for c in plan.containers] == [("carts", "C2"), ("orders", "C1"), ("returns", "C4")]
    early = plan_restore(backup(), RestoreRequest("shop", timestamp=at(15)), live, NOW)
    assert [c.name for c in early.containers] == ["carts", "orders"]


def test_a_deleted_database_defaults_to_one_second_before_its_deletion() -> None:
    plan = plan_restore(backup(), RestoreRequest("old"), LIVE, NOW)
    assert plan.timestamp == at(24, 59) and [c.source_rid for c in plan.containers] == ["C5"]


def test_nothing_is_restorable_before_a_second_capture_closed_the_first_bases_second() -> None:
    index = backup(bases=[], last_capture=None)
    assert refused(RestoreRequest("shop", "orders"), index).failure.reason == "BackupNotReady"
    first = backup(bases=[BaseRef(seq=1, time=at(0, 5), blob="bases/1")], last_capture=at(0, 5))
    assert restorable_window(first, NOW) is None
    assert restorable_window(backup(last_capture=at(0, 6)), NOW) == (at(0, 5), at(0, 5))


def test_restorable_at_lists_the_databases_and_what_their_restore_brings_back() -> None:
    found = {r.database: r.containers for r in restorable_at(backup(), at(22))}
    assert found == {"shop": ("carts", "orders", "returns"), "old": ("things",)}
    assert {r.database: r.containers for r in restorable_at(backup(), at(52))} == {"shop": ("carts", "returns")}


def _records(blobs: dict[str, list[dict[str, Any]]]) -> Any:
    def read(name: str) -> Iterator[dict[str, Any]]:
        yield from blobs[name]

    return read


def v(rid: str, ts: int, n: int, container: str = "C1") -> dict[str, Any]:
    return {"t": "v", "c": container, "r": rid, "e": f"e{n}", "ts": ts, "d": {"id": rid, "n": n}}


def test_items_at_replays_the_base_and_the_segments_up_to_the_time() -> None:
    t0 = int(at(0, 5).timestamp())
    blobs = {
        "bases/1": [{"t": "base", "seq": 1, "time": "x"}, v("a", t0 - 3, 1), v("b", t0 - 2, 1), v("z", t0, 9, "C9")],
        "segments/2": [v("a", t0 + 10, 2), v("c", t0 + 12, 1), {"t": "x", "c": "C1", "r": "b", "ts": t0 + 14}],
        "segments/3": [v("a", t0 + 30, 3), {"t": "x", "c": "C1", "r": "c", "ts": t0 + 31}],
    }
    index = backup(
        segments=[
            SegmentRef(seq=2, start=at(0, 5), end=at(0, 20), blob="segments/2", records=3),
            SegmentRef(seq=3, start=at(0, 20), end=at(0, 40), blob="segments/3", records=2),
        ]
    )

    def state(seconds_after: int) -> dict[str, int]:
        found = items_at(index, _records(blobs), "C1", at(0, 5) + timedelta(seconds=seconds_after))
        return {rid: item["n"] for rid, item in found.items()}

    assert state(0) == {"a": 1, "b": 1}
    assert state(12) == {"a": 2, "b": 1, "c": 1}
    assert state(14) == {"a": 2, "c": 1}
    assert state(30) == {"a": 3, "c": 1}
    assert state(31) == {"a": 3}


def test_a_deletion_the_backup_has_not_seen_yet_waits_for_the_next_capture() -> None:
    index = backup(events=EVENTS[:7])  # orders (C3) still live at the last capture, gone from the account now
    with pytest.raises(CaptureBehind):
        plan_restore(index, RestoreRequest("shop", "orders"), LIVE, NOW)
    at_a_time = plan_restore(index, RestoreRequest("shop", "orders", timestamp=at(5)), LIVE, NOW)
    assert at_a_time.source_rid == "C1"


def test_a_swept_backup_says_how_closely_deletions_are_known() -> None:
    from ferry.backup.restoreplan import deletion_note

    assert deletion_note(None, at(0, 5)) is None
    assert deletion_note(0.0, at(0, 5)) is None  # from the deletes feed: to the second
    note = deletion_note(600.0, at(0, 5))
    assert note is not None and "600s" in note and "deletionSweepInterval" in note
