"""A job of several tasks against cosmosdb-server: every pair copied under one record, each task's counts, a task
that cannot run failing the job with the task named, instances sharing the tasks' units."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique

from ferry.api.transfer import VerifyMode
from ferry.kinds.containercopyjob.engine import CopyTask, InstanceOutcome, run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.state import StateStore, get_job
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]


def test_three_tasks_are_copied_with_their_own_counts_and_the_job_totals(access: CosmosAccess) -> None:
    db = unique("db")
    sizes = {"orders": 120, "customers": 45, "empty": 0}
    sources = {}
    for name, size in sizes.items():
        sources[name] = create_container(access, db, name, "/tenant")
        fill(sources[name], make_items(size))
    # Each destination is partitioned differently from its source.
    destinations = {name: create_container(access, db, f"{name}-copy", "/city") for name in sizes}
    tasks = [CopyTask(db, name, db, f"{name}-copy") for name in sizes]
    job = replace(job_spec(db, "orders", "orders-copy", verify=VerifyMode.FULL), tasks=tasks, listed=True)
    reports = Reports()

    outcome = run_instance(access, job, "i-1", reports, never, page_size=25)

    assert outcome.kind == "completed", outcome
    for name in sizes:
        assert contents(destinations[name]) == contents(sources[name])
    status = reports.merged()
    assert status["totalCount"] == status["processedCount"] == sum(sizes.values())
    assert [(t["index"], t["source"], t["destination"]) for t in status["tasks"]] == [
        (i, f"{db}/{name}", f"{db}/{name}-copy") for i, name in enumerate(sizes)
    ]
    assert [(t["totalCount"], t["processedCount"], t["percent"], t["phase"]) for t in status["tasks"]] == [
        (size, size, 100, "Succeeded") for size in sizes.values()
    ]
    verification = status["verification"]
    assert verification["sourceCount"] == verification["destinationCount"] == sum(sizes.values())
    # One record for the job, its pairs listed; each unit knows its task.
    doc = get_job(access, job.job_id)
    assert doc is not None and doc["state"] == "Succeeded"
    assert [t["totalCount"] for t in doc["tasks"]] == list(sizes.values())
    units = [u for u in StateStore(access).job_units(job.job_id) if not u.get("final")]
    assert sorted({u["task"] for u in units}) == [0, 1, 2] and all(u["done"] for u in units)


def test_a_task_whose_destination_is_missing_fails_the_job_naming_it(access: CosmosAccess) -> None:
    db = unique("db")
    for name in ("a", "b"):
        fill(create_container(access, db, name, "/tenant"), make_items(10))
    create_container(access, db, "a-copy", "/tenant")
    tasks = [CopyTask(db, "a", db, "a-copy"), CopyTask(db, "b", db, "b-copy")]
    job = replace(job_spec(db, "a", "a-copy"), tasks=tasks, listed=True)
    reports = Reports()

    outcome = run_instance(access, job, "i-1", reports, never)

    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "DestinationNotFound"
    assert outcome.failure.message.startswith(f"task 1 ({db}/b → {db}/b-copy): destination container")
    status = reports.merged()
    assert status["transfer"]["failure"]["reason"] == "DestinationNotFound"
    assert [t["phase"] for t in status["tasks"]] == ["Cancelled", "Failed"]


def test_two_instances_share_the_units_of_every_task(access: CosmosAccess) -> None:
    db = unique("db")
    names = ["t0", "t1", "t2", "t3", "t4"]  # more tasks than an instance keeps writers open for
    for index, name in enumerate(names):
        fill(create_container(access, db, name, "/tenant"), make_items(30 + index * 10))
        create_container(access, db, f"{name}-copy", "/city")
    tasks = [CopyTask(db, name, db, f"{name}-copy") for name in names]
    job = replace(job_spec(db, "t0", "t0-copy", instances=2), tasks=tasks, listed=True)
    outcomes: list[InstanceOutcome] = []
    reports = Reports()

    def instance(n: int) -> None:
        own = CosmosAccess(access.endpoint, access.key, verify_tls=False)  # its own client, as each pod has
        while True:
            outcome = run_instance(own, job, f"i-{n}", reports, never, lease_seconds=5, page_size=10)
            if outcome.kind != "idle":
                outcomes.append(outcome)
                return

    threads = [threading.Thread(target=instance, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)

    assert [o.kind for o in outcomes] == ["completed", "completed"], outcomes
    for name in names:
        source = access.container(db, name)
        assert contents(access.container(db, f"{name}-copy")) == contents(source)
    units = [u for u in StateStore(access).job_units(job.job_id) if not u.get("final")]
    assert {u["task"] for u in units} == set(range(len(names)))
    assert sum(int(u["processedCount"]) for u in units) == sum(30 + i * 10 for i in range(len(names)))
