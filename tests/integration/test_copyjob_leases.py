"""Instances sharing a job through leases: hand-over at a checkpoint, and SIGKILLed instances."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique

from ferry.kinds.containercopyjob.engine import InstanceOutcome, JobSpec, run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer import state as transferstate
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.emulators import CosmosServer
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]

# One instance as its own process: it reports nothing and is killed before it finishes.
INSTANCE = """
import json, os, sys, urllib3
urllib3.disable_warnings()
from ferry.storage.cosmos import CosmosAccess
from ferry.kinds.containercopyjob.engine import JobSpec, run_instance
access = CosmosAccess(os.environ["ENDPOINT"], os.environ["KEY"], verify_tls=False)
job = JobSpec(**json.loads(os.environ["JOB"]))
print("ready", flush=True)
outcome = run_instance(access, job, os.environ["INSTANCE"], lambda part, force=False: None, lambda: False,
                       lease_seconds=float(os.environ["LEASE"]), page_size=20)
print(outcome.kind, flush=True)
"""


def run_until_done(
    access: CosmosAccess, job: JobSpec, instance: str, reports: Reports, lease: float
) -> InstanceOutcome:
    """Run an instance again while it is idle (others' leases not yet expired)."""
    deadline = time.monotonic() + 30
    while True:
        outcome = run_instance(access, job, instance, reports, never, lease_seconds=lease, page_size=20)
        if outcome.kind != "idle" or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)


def test_second_instance_is_idle_then_takes_over_at_the_checkpoint(access: CosmosAccess) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    fill(source, make_items(120, groups=1))  # one partition key: one unit holds every item
    destination = create_container(access, db, "dst", "/city")
    job = job_spec(db, "src", "dst", instances=2, rate=60)  # 30 items/s per instance: slow enough to watch
    stop_first = threading.Event()
    first: list[InstanceOutcome] = []
    thread = threading.Thread(
        target=lambda: first.append(run_instance(access, job, "a", Reports(), stop_first.is_set, page_size=10))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            units = (
                transferstate.StateStore(access).job_units(job.job_id)
                if transferstate.get_job(access, job.job_id)
                else []
            )
            if any(u.get("owner") == "a" and u.get("processedCount", 0) > 0 for u in units):
                break
            time.sleep(0.1)
        # "b" finishes the empty units, then waits for the one "a" holds.
        assert run_instance(access, job, "b", Reports(), never).kind == "idle"
    finally:
        stop_first.set()
        thread.join(timeout=20)
    assert first and first[0].kind == "stopped"
    handed_over = next(u for u in transferstate.StateStore(access).job_units(job.job_id) if u["processedCount"])
    assert handed_over["owner"] is None and 0 < handed_over["processedCount"] < 120

    reports = Reports()
    assert run_instance(access, job, "b", reports, never, page_size=50).kind == "completed"
    assert contents(destination) == contents(source)
    assert reports.merged()["processedCount"] == reports.merged()["totalCount"] == 120


def test_killed_instances_resume_from_checkpoints(
    access: CosmosAccess, cosmos: CosmosServer, changefeed: ChangeFeedProxy
) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    fill(source, make_items(160))
    destination = create_container(access, db, "dst", "/city")
    job = job_spec(db, "src", "dst", instances=1, rate=40)  # each doomed instance copies < 60 items
    lease = 1.0
    env = {
        **os.environ,
        "ENDPOINT": changefeed.endpoint,  # the instances read the stand-in's change feed
        "KEY": cosmos.endpoint.key,
        "JOB": json.dumps(asdict(job)),
        "LEASE": str(lease),
    }
    rng = random.Random(7)
    progress = []
    for kill in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", INSTANCE],
            env={**env, "INSTANCE": f"doomed-{kill}"},
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.6, 1.4))
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # no chance to checkpoint or release the lease
            proc.wait(timeout=10)
        units = transferstate.StateStore(access).job_units(job.job_id)
        progress.append(sum(u.get("processedCount", 0) for u in units))
    assert progress[-1] < 160, "the instances finished before being killed: slow them down"
    assert progress == sorted(progress), progress

    reports = Reports()
    unlimited = replace(job, max_items_per_second=None)  # the rate limit may change while a job runs
    outcome = run_until_done(access, unlimited, "survivor", reports, lease)
    assert outcome.kind == "completed", outcome
    assert contents(destination) == contents(source)
    doc = transferstate.get_job(access, job.job_id)
    assert doc is not None and doc["processedCount"] == doc["totalCount"] == 160
    assert reports.merged()["processedCount"] == 160 and reports.merged()["percent"] == 100
