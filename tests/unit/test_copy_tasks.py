"""A job's tasks: the spec's pairs, the account a job of tasks reads from, and each task's phase as the copy
instances report it."""

from __future__ import annotations

from typing import Any

from ferry.api.containercopyjob import ContainerCopyJobSpec
from ferry.kinds.containercopyjob.engine import task_progress
from ferry.runtime.engine import source_account_of
from ferry.transfer.progress import GroupCount


def _task(n: int, account: str | None = None) -> dict[str, Any]:
    where = {"accountRef": {"name": account}} if account else {}
    return {
        "source": {"database": "db", "container": f"s{n}", **where},
        "destination": {"database": "db", "container": f"d{n}"},
    }


def test_one_pair_and_a_task_list_are_the_same_tasks() -> None:
    pair = ContainerCopyJobSpec.model_validate({"accountRef": {"name": "acct"}, **_task(0, "other")})
    listed = ContainerCopyJobSpec.model_validate({"accountRef": {"name": "acct"}, "tasks": [_task(0, "other")]})
    assert pair.copy_tasks() == listed.copy_tasks()
    assert pair.source_account() == listed.source_account() == "other"


def test_the_source_index_reads_the_account_of_a_job_of_tasks() -> None:
    assert source_account_of({"tasks": [_task(0, "other"), _task(1, "other")]}) == "other"
    assert source_account_of({"tasks": [_task(0)]}) is None
    assert source_account_of(_task(0, "pair")) == "pair"


def _record(state: str, failed_task: int | None = None) -> dict[str, Any]:
    place = {"database": "db", "container": "c"}
    tasks = [{"source": place, "destination": place, "totalCount": n} for n in (10, 0, 5)]
    return {"state": state, "tasks": tasks, "failedTask": failed_task}


def test_each_task_has_the_phase_of_its_units() -> None:
    groups = {0: GroupCount(10, 2, 2), 1: GroupCount(0, 1, 0), 2: GroupCount(3, 1, 0)}
    running = task_progress(_record("Running"), groups)
    assert running is not None
    assert [(t.phase, t.processed_count, t.percent) for t in running] == [
        ("Succeeded", 10, 100),
        ("Pending", 0, 100),  # nothing to copy, not yet visited
        ("Running", 3, 60),
    ]
    failed = task_progress(_record("Failed", failed_task=2), groups) or []
    assert [t.phase for t in failed] == ["Succeeded", "Cancelled", "Failed"]
    paused = task_progress(_record("Paused"), groups) or []
    assert [t.phase for t in paused] == ["Succeeded", "Paused", "Paused"]
    assert task_progress({"state": "Running"}, {}) is None  # a record from before jobs had tasks
