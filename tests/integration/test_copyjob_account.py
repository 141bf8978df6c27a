"""Throttling, rate limits, regions, probing and the serverless-safe state store, through the proxy."""

from __future__ import annotations

import contextlib

import pytest
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError
from cosmos_fixtures import contents, create_container, fill, job_spec, make_items, never, unique

from ferry.cli.jobs import JobNotFound, list_jobs, show_job
from ferry.kinds.containercopyjob.engine import run_instance
from ferry.storage.cosmos import (
    AccountUnauthorized,
    AccountUnreachable,
    CosmosAccess,
    probe,
    read_account_regions,
    throttled_requests,
)
from ferry.transfer import state as transferstate
from ferry_dev.cosmosproxy import CosmosProxy, item_writes
from ferry_dev.emulators import COSMOS_EMULATOR_KEY, free_port
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]


def test_throttled_writes_are_retried_after_retry_after_and_none_is_lost(
    access: CosmosAccess, proxy: CosmosProxy, proxied_access: CosmosAccess
) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    fill(source, make_items(60))
    destination = create_container(access, db, "dst", "/city")
    before = throttled_requests()
    proxy.throttle_next(25, retry_after_ms=40, match=item_writes)
    reports = Reports()

    outcome = run_instance(proxied_access, job_spec(db, "src", "dst"), "i-1", reports, never)

    assert outcome.kind == "completed", outcome
    assert proxy.injected == 25
    assert throttled_requests() - before == 25
    assert reports.merged()["throttledRequests"] >= 25
    assert contents(destination) == contents(source)
    writes = [r for r in proxy.requests("POST", f"/dbs/{db}/colls/dst/docs") if item_writes("POST", r.path, r.headers)]
    assert len(writes) == 60 + 25  # each throttled write was sent again, nothing else was


def test_rate_limit_keeps_items_per_second_under_the_limit(
    access: CosmosAccess, proxy: CosmosProxy, proxied_access: CosmosAccess
) -> None:
    db = unique("db")
    source = create_container(access, db, "src", "/tenant")
    # One partition key, so one feed range holds every item: the writes measured are one unit's,
    # without the pauses between units (leasing, checkpoints) that are not the limiter's doing.
    fill(source, make_items(90, groups=1))
    destination = create_container(access, db, "dst", "/tenant")
    limit = 30
    job = job_spec(db, "src", "dst", instances=2, rate=limit * 2)  # this instance's share: 30/s
    reports = Reports()
    outcome = run_instance(proxied_access, job, "i-1", reports, never)
    assert outcome.kind == "completed"
    assert len(contents(destination)) == 90
    # Measured where the writes arrive: the proxy's clock for each item write.
    writes = [r.at for r in proxy.log if item_writes(r.method, r.path, r.headers)]
    assert len(writes) == 90
    rate = (len(writes) - 1) / (writes[-1] - writes[0])
    assert rate <= limit * 1.05, f"{rate:.1f} items/s over a limit of {limit}"
    assert rate >= limit * 0.6, f"{rate:.1f} items/s: the limit slowed it far below itself"
    rates = [p["itemsPerSecond"] for p in reports.patches if "itemsPerSecond" in p]
    assert rates and max(rates) <= limit * 1.2


def test_regions_come_from_the_account_and_follow_a_failover(proxy: CosmosProxy, proxied_access: CosmosAccess) -> None:
    regions = read_account_regions(proxied_access)
    assert regions.write_regions == ["South Central US"] and regions.read_regions == ["South Central US"]
    proxy.set_regions(write=["West US"], read=["West US", "East US"])
    assert read_account_regions(proxied_access).write_regions == ["West US"]
    proxy.set_regions(write=["East US"], read=["East US", "West US"])
    regions = read_account_regions(proxied_access)
    assert regions.write_regions == ["East US"] and regions.read_regions == ["East US", "West US"]
    # The SDK still routes through the proxy after the failover.
    seen = len(proxy.log)
    list(proxied_access.client().list_databases())
    assert len(proxy.log) > seen


def test_probe_tells_disabled_local_auth_from_a_wrong_key_and_from_unreachable(proxy: CosmosProxy) -> None:
    probe(CosmosAccess(proxy.endpoint, COSMOS_EMULATOR_KEY, verify_tls=False))

    # Every request is refused while the account is so configured (the SDK reads the account more than once).
    proxy.fail_next(
        10**6,
        401,
        message="Local Authorization is disabled. Use an AAD token to authorize all requests.",
        x_ms_substatus="5202",
    )
    with pytest.raises(AccountUnauthorized, match="local authorization is disabled") as disabled:
        probe(CosmosAccess(proxy.endpoint, COSMOS_EMULATOR_KEY, verify_tls=False))
    assert COSMOS_EMULATOR_KEY not in str(disabled.value)

    proxy.faults.clear()
    proxy.fail_next(10**6, 401, message="The input authorization token can't serve the request.")
    with pytest.raises(AccountUnauthorized, match="rejected the key") as wrong:
        probe(CosmosAccess(proxy.endpoint, COSMOS_EMULATOR_KEY, verify_tls=False))
    assert "local authorization" not in str(wrong.value)

    with pytest.raises(AccountUnreachable):
        probe(CosmosAccess(f"https://127.0.0.1:{free_port('127.0.0.1')}/", COSMOS_EMULATOR_KEY, verify_tls=False))


def test_state_store_is_serverless_safe_kept_and_listed(
    access: CosmosAccess, proxy: CosmosProxy, proxied_access: CosmosAccess
) -> None:
    proxy.serverless = True  # creating anything with a throughput offer fails, as on serverless accounts
    # Start from an account without the state database (earlier tests created it).
    with contextlib.suppress(CosmosResourceNotFoundError):
        access.client().delete_database(transferstate.DATABASE)
    transferstate.StateStore(access).forget()
    transferstate.StateStore(proxied_access).forget()
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(12))
    create_container(access, db, "dst", "/city")
    job = job_spec(db, "src", "dst", name="team-a/repartition")

    assert run_instance(proxied_access, job, "i-1", Reports(), never).kind == "completed"
    created = [
        r for r in proxy.requests("POST") if r.path.rstrip("/") in ("/dbs", f"/dbs/{transferstate.DATABASE}/colls")
    ]
    assert len(created) == 3, created  # the database and its two containers, created on first use
    assert not [r for r in created if any(h.startswith("x-ms-offer") for h in r.headers)], "no throughput anywhere"
    assert transferstate.DATABASE in [d["id"] for d in access.client().list_databases()]
    with pytest.raises(CosmosHttpResponseError, match="serverless"):  # what a shared-throughput database meets
        proxied_access.client().create_database(unique("shared"), offer_throughput=400)

    failed = job_spec(db, "src", "absent", name="team-a/typo")
    assert run_instance(proxied_access, failed, "i-1", Reports(), never).kind == "failed"
    history = {j["id"]: j for j in transferstate.list_jobs(access)}
    assert history[job.job_id]["state"] == "Succeeded" and history[job.job_id]["processedCount"] == 12
    assert history[failed.job_id]["state"] == "Failed"
    assert history[failed.job_id]["failure"]["reason"] == "DestinationNotFound"

    table = list_jobs(access)
    assert table.splitlines()[0].split()[:2] == ["NAME", "STATE"]
    assert any("team-a/repartition" in line and "Succeeded" in line and "12" in line for line in table.splitlines())
    shown = show_job(access, "team-a/repartition")
    assert f"id: {job.job_id}" in shown and "state: Succeeded" in shown and "workUnits:" in shown
    assert "state: Failed" in show_job(access, failed.job_id)
    with pytest.raises(JobNotFound):
        show_job(access, "nope")
    assert not proxy.requests("DELETE")  # Ferry never deletes its history
