"""What `ferry status` makes of each kind's status: phase, progress, rate, time left, queue, reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ferry.cli.status_rows import Rates, Row, left_text, rate_text, row_of

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def body(status: dict[str, object], name: str = "x") -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": name}, "status": status}


def test_a_running_blobcopy_has_progress_an_average_rate_and_time_left() -> None:
    started = (NOW - timedelta(seconds=10)).isoformat()
    row = row_of(
        "BlobCopy", body({"phase": "Running", "bytesCopied": 1048576, "totalBytes": 4194304, "startTime": started}), NOW
    )
    assert (row.done, row.total, row.fraction) == (1048576, 4194304, 0.25)
    assert rate_text(row) == "102.4 KiB/s" and left_text(row) == "30s"  # 1 MiB in 10s, 3 MiB left


def test_jobs_use_their_own_rate_and_show_their_queue_position() -> None:
    status = {"phase": "Running", "processedCount": 500, "totalCount": 2000, "itemsPerSecond": 10.0, "queuePosition": 0}
    row = row_of("ContainerCopyJob", body(status), NOW)
    assert rate_text(row) == "10 items/s" and left_text(row) == "2m30s" and row.queue_position == 0
    queued = row_of("InAccountRestore", body({"phase": "Queued", "queuePosition": 2}), NOW)
    assert queued.queue_position == 2 and queued.fraction is None


def test_failures_and_waits_say_why_and_finished_rows_have_no_rate() -> None:
    failure = {"reason": "SourceNotFound", "message": "blob a.bin does not exist"}
    failed = row_of("BlobCopy", body({"phase": "Failed", "failure": failure, "bytesCopied": 0, "totalBytes": 9}), NOW)
    assert (failed.reason, failed.message, failed.rate, failed.finished) == (
        "SourceNotFound",
        failure["message"],
        None,
        True,
    )
    waiting = {"type": "WorkerReady", "status": "False", "reason": "WaitingForWorkerSlot", "message": "3 ahead"}
    pending = row_of("BlobCopy", body({"phase": "Pending", "conditions": [waiting]}), NOW)
    assert pending.reason == "WaitingForWorkerSlot"


def test_accounts_show_their_connection_and_a_failing_backup() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Connected", "message": "ok"}
    account = row_of("DatabaseAccount", body({"conditions": [ready], "writeRegion": "West US"}), NOW)
    assert (account.phase, account.message) == ("Connected", "write region West US")
    gap = {"type": "BackupHealthy", "status": "False", "reason": "GapInWindow", "message": "gaps"}
    assert row_of("DatabaseAccount", body({"conditions": [ready, gap]}), NOW).reason == "GapInWindow"


def test_rates_follow_what_moved_between_two_looks() -> None:
    rates = Rates(smoothing=1.0)
    first = rates.update(Row("BlobCopy", "ns", "x", "Running", done=0, total=1000, unit="B"), at=0.0)
    assert first.rate is None
    second = rates.update(Row("BlobCopy", "ns", "x", "Running", done=200, total=1000, unit="B"), at=2.0)
    assert second.rate == 100.0 and second.seconds_left == 8.0
