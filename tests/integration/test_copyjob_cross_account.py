"""Copies from another account: the job runs on the destination's account (its state, leases and checkpoints
there), and reads the source through the other account's endpoint and key."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique
from source_writer import Writer, wait_for

from ferry.kinds.containercopyjob.engine import InstanceOutcome, run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer import state as transferstate
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def test_a_container_of_another_account_is_copied_under_the_same_names(
    access: CosmosAccess, other_account: CosmosAccess
) -> None:
    db = unique("db")
    source = create_container(other_account, db, "orders", "/tenant")
    items = make_items(130)
    fill(source, items)
    destination = create_container(access, db, "orders", "/city")  # same names, another account
    job = replace(job_spec(db, "orders", "orders"), source_account="orders-account")
    reports = Reports()

    outcome = run_instance(access, job, "i-1", reports, never, page_size=40, source=other_account)

    assert outcome.kind == "completed", outcome
    assert contents(destination) == contents(source)
    assert reports.merged()["processedCount"] == reports.merged()["totalCount"] == 130
    doc = transferstate.get_job(access, job.job_id)  # the job's record is in the account it runs on
    assert doc is not None and doc["state"] == "Succeeded"
    assert doc["source"] == {"database": db, "container": "orders", "account": "orders-account"}
    assert transferstate.get_job(other_account, job.job_id) is None  # nothing of it in the source account


def test_a_source_missing_from_the_other_account_fails_the_job_naming_it(
    access: CosmosAccess, other_account: CosmosAccess
) -> None:
    db = unique("db")
    fill(create_container(access, db, "only-here", "/tenant"), make_items(3))  # in the destination's account only
    create_container(access, db, "dst", "/city")
    job = replace(job_spec(db, "only-here", "dst"), source_account="orders-account")
    outcome = run_instance(access, job, "i-1", Reports(), never, source=other_account)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "SourceNotFound" and f"{db}/only-here" in outcome.failure.message


def test_an_online_copy_from_another_account_applies_its_changes_then_cuts_over(
    access: CosmosAccess, other_account: CosmosAccess
) -> None:
    db = unique("db")
    source = create_container(other_account, db, "src", "/tenant")
    items = make_items(90)
    fill(source, items)
    destination = create_container(access, db, "dst", "/city")
    job = replace(job_spec(db, "src", "dst"), mode="Online", source_account="orders-account")
    cut = threading.Event()
    reports = Reports()
    outcome: list[InstanceOutcome] = []
    instance = threading.Thread(
        target=lambda: outcome.append(
            run_instance(access, job, "i-1", reports, never, page_size=20, cutover=cut.is_set, source=other_account)
        )
    )
    with Writer(source, items, per_second=15) as writer:
        instance.start()
        wait_for(lambda: writer.writes >= 30 or writer.error is not None, 60, "the writer's writes")
    assert writer.error is None and all(writer.ops.values()), writer.ops
    wait_for(lambda: contents(destination) == contents(source), 20, "the copy to catch up")
    cut.set()
    instance.join(timeout=30)
    assert outcome and outcome[0].kind == "completed", outcome
    assert contents(destination) == contents(source)
