"""Online container copies on the change feed stand-in: writes during the copy, cutover, kills, refusal."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace

import pytest
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique
from source_writer import Writer, wait_for

from ferry.kinds.containercopyjob.engine import InstanceOutcome, JobSpec, TransientJobError, run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer import state as transferstate
from ferry_dev.changefeed import ChangeFeedProxy
from ferry_dev.emulators import CosmosServer
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def test_online_copy_applies_changes_made_meanwhile_then_cuts_over(access: CosmosAccess) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    items = make_items(120)
    fill(source, items)
    destination = create_container(access, db, "dst", "/city")
    job = replace(job_spec(db, "src", "dst"), mode="Online")
    cut = threading.Event()
    reports = Reports()
    outcome: list[InstanceOutcome] = []
    instance = threading.Thread(
        target=lambda: outcome.append(
            run_instance(access, job, "i-1", reports, never, page_size=20, cutover=cut.is_set)
        )
    )
    with Writer(source, items, per_second=15) as writer:
        instance.start()
        wait_for(lambda: writer.writes >= 40 or writer.error is not None, 60, "the writer's writes")
        assert not outcome, outcome  # an online copy does not end by itself
    assert writer.error is None and all(writer.ops.values()), writer.ops
    # After the writer stops, the destination catches up within seconds, and the status says so.
    stopped = time.monotonic()
    wait_for(lambda: contents(destination) == contents(source), 20, "the copy to catch up")
    caught_up = time.monotonic() - stopped
    wait_for(lambda: reports.merged().get("pendingChanges") == 0, 10, "the status to show it caught up")
    assert outcome == []

    cut.set()
    instance.join(timeout=30)
    assert outcome and outcome[0].kind == "completed", outcome
    assert contents(destination) == contents(source)
    status = reports.merged()
    assert status["transfer"]["state"] == "Succeeded"
    assert status["pendingChanges"] == 0 and status["secondsBehind"] == 0
    assert caught_up < 10, f"drained in {caught_up:.1f}s"


def test_online_copy_needs_the_all_versions_and_deletes_feed(cosmos: CosmosServer, access: CosmosAccess) -> None:
    plain = ChangeFeedProxy(cosmos.endpoint.endpoint, cosmos.endpoint.key, all_versions=False).start()
    try:
        without = CosmosAccess(plain.endpoint, cosmos.endpoint.key, verify_tls=False)
        db = unique("db")
        fill(create_container(without, db, "src", "/tenant"), make_items(5))
        create_container(without, db, "dst", "/tenant")
        reports = Reports()
        outcome = run_instance(without, replace(job_spec(db, "src", "dst"), mode="Online"), "i-1", reports, never)
    finally:
        plain.stop()
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "ChangeFeedModeUnsupported"
    assert "all-versions-and-deletes" in outcome.failure.message and "spec.mode: Offline" in outcome.failure.message
    assert reports.merged()["transfer"]["failure"]["reason"] == "ChangeFeedModeUnsupported"


INSTANCE = """
import json, os, sys, urllib3
urllib3.disable_warnings()
from ferry.storage.cosmos import CosmosAccess
from ferry.kinds.containercopyjob.engine import JobSpec, run_instance
access = CosmosAccess(os.environ["ENDPOINT"], os.environ["KEY"], verify_tls=False)
job = JobSpec(**json.loads(os.environ["JOB"]))
print("ready", flush=True)
run_instance(access, job, os.environ["INSTANCE"], lambda part, force=False: None, lambda: False,
             lease_seconds=float(os.environ["LEASE"]), page_size=10)
"""


@pytest.fixture
def killed() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_instances_killed_mid_stream_lose_nothing(
    access: CosmosAccess, cosmos: CosmosServer, changefeed: ChangeFeedProxy, killed: list[subprocess.Popen[str]]
) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    items = make_items(80)
    fill(source, items)
    destination = create_container(access, db, "dst", "/city")
    job: JobSpec = replace(job_spec(db, "src", "dst"), mode="Online")
    lease = 1.0
    env = {
        **os.environ,
        "ENDPOINT": changefeed.endpoint,
        "KEY": cosmos.endpoint.key,
        "JOB": json.dumps(asdict(job)),
        "LEASE": str(lease),
    }
    rng = random.Random(11)
    streamed = 0
    with Writer(source, items, per_second=15, seed=5) as writer:
        for kill in range(10):  # until a unit streams, then twice more: kills in both phases
            proc = subprocess.Popen(
                [sys.executable, "-c", INSTANCE],
                env={**env, "INSTANCE": f"doomed-{kill}"},
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            killed.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(1.5, 2.5))
            os.kill(proc.pid, signal.SIGKILL)  # mid-page, mid-checkpoint or between: no chance to release
            proc.wait(timeout=10)
            units = transferstate.StateStore(access).job_units(job.job_id)
            streamed = streamed + 1 if any(u.get("streaming") for u in units) else 0
            if streamed >= 2:
                break
    assert writer.error is None and all(writer.ops.values()), writer.ops
    units = transferstate.StateStore(access).job_units(job.job_id)
    assert any(u.get("streaming") for u in units), "the instances never reached streaming: give them longer"

    reports = Reports()
    outcome: list[InstanceOutcome] = []
    retried: list[str] = []
    cut, gone = threading.Event(), threading.Event()
    survivor = threading.Thread(
        target=lambda: outcome.append(run_until_done(access, job, "survivor", reports, lease, cut, gone, retried))
    )
    survivor.start()
    try:
        wait_for(
            lambda: (
                reports.merged().get("pendingChanges") == 0
                and all(
                    u.get("streaming")
                    for u in transferstate.StateStore(access).job_units(job.job_id)
                    if not u.get("final")  # the verification, once every unit is done
                )
            ),
            45,
            "the survivor to catch up",
            progress=lambda: [reports.merged().get(k) for k in ("processedCount", "pendingChanges")],
            details=lambda: f"survivor {'running' if survivor.is_alive() else 'ended'}, {outcome}, retried {retried}",
        )
        cut.set()
        survivor.join(timeout=60)
    finally:
        gone.set()  # a failed wait leaves no instance running into the next tests
    assert outcome and outcome[0].kind == "completed", outcome
    assert contents(destination) == contents(source)


def run_until_done(
    access: CosmosAccess,
    job: JobSpec,
    instance: str,
    reports: Reports,
    lease: float,
    cut: threading.Event,
    gone: threading.Event,
    retried: list[str],
) -> InstanceOutcome:
    """Run an instance until the job ends (the doomed instances' leases expire meanwhile); like the copy instance
    pods, resume after a transient error."""
    deadline = time.monotonic() + 90
    while True:
        try:
            outcome = run_instance(
                access, job, instance, reports, gone.is_set, lease_seconds=lease, page_size=20, cutover=cut.is_set
            )
        except TransientJobError as error:
            retried.append(str(error))
            outcome = InstanceOutcome("idle")
        if outcome.kind != "idle" or time.monotonic() > deadline or gone.is_set():
            return outcome
        time.sleep(0.2)
