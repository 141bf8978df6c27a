"""A job whose names Cosmos DB forbids, or on which the instances keep meeting an error, fails with the cause in its
own record, and no other job of the account is touched: against cosmosdb-server (and Azurite for the backup)."""

from __future__ import annotations

import uuid

import pytest
from backup_fixtures import backup_store
from cosmos_fixtures import create_container, fill, job_spec, make_items, never, unique

from ferry.backup.restoreplan import RestoreRequest
from ferry.backup.store import BackupStore
from ferry.kinds.containercopyjob.engine import run_instance
from ferry.kinds.inaccountrestore.engine import RestoreJob, run_restore_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.job_document import MAX_JOB_ERRORS, job_error
from ferry.transfer.state import StateStore
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
__all__ = ["backup_store"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]


def sdk_refusal(access: CosmosAccess, name: str) -> ValueError:
    """The error the real SDK raises for a container id Cosmos DB forbids."""
    database = access.client().create_database_if_not_exists(unique("db"))
    with pytest.raises(ValueError) as raised:
        database.create_container(name, partition_key=None)  # type: ignore[arg-type]
    return raised.value


@pytest.mark.parametrize("name", ["orders/2026", "what?", "tail "])
def test_a_restore_into_a_forbidden_name_fails_naming_the_field(
    access: CosmosAccess, backup_store: BackupStore, name: str
) -> None:
    reports = Reports()
    work = RestoreJob(
        job_id=str(uuid.uuid4()),
        name="ns/bad-target",
        request=RestoreRequest(database="shop", container="orders", target_database="shop", target_container=name),
        instances=1,
        write_region="South Central US",
    )
    outcome = run_restore_instance(access, backup_store, work, "i0", reports, never, lease_seconds=2.0)
    assert outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "InvalidResourceName"
    assert "spec.target.container" in outcome.failure.message and repr(name) in outcome.failure.message
    transfer = reports.merged()["transfer"]
    assert transfer["state"] == "Failed" and transfer["failure"]["reason"] == "InvalidResourceName"
    # Another run (another instance, a restarted one) finds the job failed and does no work.
    again = run_restore_instance(access, backup_store, work, "i1", Reports(), never, lease_seconds=2.0)
    assert again.kind == "failed" and again.failure == outcome.failure


def test_a_copy_into_a_forbidden_name_fails_naming_the_field(access: CosmosAccess) -> None:
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(3))
    reports = Reports()
    outcome = run_instance(access, job_spec(db, "src", "dst#1"), "i-1", reports, never)
    assert outcome.failure is not None and outcome.failure.reason == "InvalidResourceName"
    assert "spec.destination.container 'dst#1'" in outcome.failure.message
    assert reports.merged()["transfer"]["failure"]["reason"] == "InvalidResourceName"


def test_the_sdks_refusal_of_a_name_fails_the_job_at_once_with_its_own_reason(access: CosmosAccess) -> None:
    refusal = sdk_refusal(access, "a\\b")
    job_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    store = StateStore(access)
    store.ensure()
    store.create_job({"id": other, "jobId": other, "name": "ns/other", "state": "Running"})
    doc = job_error(access, job_id, "ns/restore", refusal)  # before the job had a document of its own
    assert doc is not None and doc["state"] == "Failed"
    assert doc["failure"]["reason"] == "InvalidResourceName"
    assert "Id contains illegal chars" in doc["failure"]["message"]
    untouched = store.read_job(other)
    assert untouched is not None and untouched["state"] == "Running" and "errors" not in untouched


def test_a_job_on_which_the_instances_keep_crashing_fails_with_the_cause_after_a_bounded_number(
    access: CosmosAccess,
) -> None:
    job = job_spec(unique("db"), "src", "dst")
    store = StateStore(access)
    store.ensure()
    store.create_job({"id": job.job_id, "jobId": job.job_id, "name": job.name, "state": "Running"})
    crash = KeyError("partitionKey")  # an error nobody foresaw, met every time the job is taken up
    for attempt in range(1, MAX_JOB_ERRORS):
        doc = job_error(access, job.job_id, job.name, crash)
        assert doc is not None and doc["state"] == "Running" and doc["errors"] == attempt
    doc = job_error(access, job.job_id, job.name, crash)
    assert doc is not None and doc["state"] == "Failed"
    assert doc["failure"]["reason"] == "WorkerCrashed"
    assert "KeyError" in doc["failure"]["message"] and "partitionKey" in doc["failure"]["message"]
    assert f"{MAX_JOB_ERRORS} times" in doc["failure"]["message"]
    # The instances see the job as failed from then on: a copy instance reports the failure and stops.
    reports = Reports()
    outcome = run_instance(access, job, "i-1", reports, never)
    assert outcome.kind == "failed" and outcome.failure is not None and outcome.failure.reason == "WorkerCrashed"
    assert reports.merged()["transfer"]["state"] == "Failed"


def test_transient_errors_are_retried_without_counting_against_the_job(access: CosmosAccess) -> None:
    from azure.core.exceptions import ServiceResponseError

    job = job_spec(unique("db"), "src", "dst")
    store = StateStore(access)
    store.ensure()
    store.create_job({"id": job.job_id, "jobId": job.job_id, "name": job.name, "state": "Running"})
    for hiccup in [ServiceResponseError("read timed out"), TimeoutError("timed out")] * MAX_JOB_ERRORS:
        assert job_error(access, job.job_id, job.name, hiccup) is None  # retried: nothing recorded
    kept = store.read_job(job.job_id)
    assert kept is not None and kept["state"] == "Running" and "errors" not in kept
