"""A copy job's verification against cosmosdb-server: a good copy is verified, a destination changed behind
the copy's back fails the job with the ids that differ."""

from __future__ import annotations

from typing import Any

import pytest
from cosmos_fixtures import create_container, fill, job_spec, make_items, never, unique

from ferry.api.common import FerryModel
from ferry.api.transfer import VerifyMode
from ferry.kinds.containercopyjob.engine import run_instance
from ferry.storage.cosmos import CosmosAccess
from ferry.transfer.state import StateStore
from support.reports import Reports

pytest_plugins = ["cosmos_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # self-signed emulator
]


@pytest.mark.parametrize("mode", [VerifyMode.COUNT, VerifyMode.FULL])
def test_a_good_copy_is_verified(access: CosmosAccess, mode: VerifyMode) -> None:
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(120))
    create_container(access, db, "dst", "/city")
    reports = Reports()
    job = job_spec(db, "src", "dst", verify=mode)
    assert run_instance(access, job, "i-1", reports, never, page_size=50).kind == "completed"
    verification = reports.merged()["verification"]
    assert verification["mode"] == mode.value
    assert verification["sourceCount"] == verification["destinationCount"] == 120
    assert (verification["missing"], verification["extra"], verification["differing"]) == (0, 0, 0)
    units = StateStore(access).job_units(job.job_id)
    assert [u["type"] for u in units if u.get("final")] == ["verify"] and all(u["done"] for u in units)


def test_an_item_changed_in_the_destination_during_the_copy_fails_full_verification(access: CosmosAccess) -> None:
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(120))
    destination = create_container(access, db, "dst", "/tenant")
    seen = Reports()
    changed: list[str] = []

    def report(part: FerryModel, force: bool = False) -> None:
        """After the first checkpoint, someone else rewrites an item the copy already wrote."""
        seen(part, force)
        if not changed and (seen.merged().get("processedCount") or 0) > 0:
            item: dict[str, Any] = next(
                iter(destination.query_items("SELECT * FROM c", enable_cross_partition_query=True))
            )
            destination.upsert_item({**item, "n": -999})
            changed.append(str(item["id"]))

    job = job_spec(db, "src", "dst", verify=VerifyMode.FULL)
    outcome = run_instance(access, job, "i-1", report, never, page_size=30)

    assert changed and outcome.kind == "failed" and outcome.failure is not None
    assert outcome.failure.reason == "VerificationFailed"
    assert changed[0] in outcome.failure.message and "1 with other content" in outcome.failure.message
    status = seen.merged()
    assert status["verification"]["differing"] == 1 and status["verification"]["firstDifferences"] == changed
    assert status["transfer"]["state"] == "Failed" and status["transfer"]["failure"]["reason"] == "VerificationFailed"


def test_an_item_added_to_the_destination_fails_count_verification(access: CosmosAccess) -> None:
    db = unique("db")
    fill(create_container(access, db, "src", "/tenant"), make_items(40))
    fill(create_container(access, db, "dst", "/tenant"), [{"id": "stranger", "tenant": "t0"}])
    outcome = run_instance(access, job_spec(db, "src", "dst"), "i-1", Reports(), never)
    assert outcome.failure is not None and outcome.failure.reason == "VerificationFailed"
    assert "expected 40 items, the destination holds 41" in outcome.failure.message
