"""Running a failed copy job again: a re-run that resumes reopens the job's record and goes on from its work units'
checkpoints; one that starts over works on a record of its own."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique

from ferry.kinds.containercopyjob.engine import run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer import state as transferstate
from ferry_dev.cosmosproxy import CosmosProxy, Match, item_writes
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]
ITEMS = 200


def _fails_after(writes: int) -> Match:
    """Item writes from the `writes`-th on: the first pages land, then the service refuses (400)."""
    seen = itertools.count(1)
    return lambda method, path, headers: item_writes(method, path, headers) and next(seen) > writes


def test_a_rerun_resumes_from_the_checkpoints_and_one_that_starts_over_copies_all_again(
    access: CosmosAccess, proxy: CosmosProxy, proxied_access: CosmosAccess
) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    fill(source, make_items(ITEMS))
    destination = create_container(access, db, "dst", "/city")
    job = job_spec(db, "src", "dst")
    proxy.fail_next(10_000, 400, match=_fails_after(90), message="One of the specified inputs is invalid")

    failed = run_instance(proxied_access, job, "i-1", Reports(), never, page_size=20)
    assert failed.kind == "failed" and failed.failure is not None and failed.failure.reason == "CosmosError"
    checkpointed = transferstate.get_job(access, job.job_id)
    assert checkpointed is not None and 0 < checkpointed["processedCount"] < ITEMS

    proxy.faults.clear()
    before = len(proxy.requests("POST", "/docs"))
    reports = Reports()
    resumed = run_instance(proxied_access, replace(job, attempt=2), "i-1", reports, never, page_size=20)
    assert resumed.kind == "completed", resumed
    assert contents(destination) == contents(source)
    rewritten = len([r for r in proxy.requests("POST", "/docs")[before:] if item_writes(r.method, r.path, r.headers)])
    assert rewritten <= ITEMS - checkpointed["processedCount"] + 40  # at most the pages that were in flight again
    doc = transferstate.get_job(access, job.job_id)
    assert doc is not None and (doc["state"], doc["attempt"], doc["processedCount"]) == ("Succeeded", 2, ITEMS)
    assert doc["failure"] is None
    assert reports.merged()["transfer"]["attempt"] == 2

    # Starting over: a record of its own, every item written again (the destination's copies are replays).
    over = replace(job, job_id=f"{job.job_id}-3", attempt=3)
    before = len(proxy.requests("POST", "/docs"))
    assert run_instance(proxied_access, over, "i-1", Reports(), never, page_size=20).kind == "completed"
    again = [r for r in proxy.requests("POST", "/docs")[before:] if item_writes(r.method, r.path, r.headers)]
    assert len(again) >= ITEMS
    assert contents(destination) == contents(source)
    fresh = transferstate.get_job(access, over.job_id)
    assert fresh is not None and (fresh["state"], fresh["attempt"], fresh["processedCount"]) == ("Succeeded", 3, ITEMS)
