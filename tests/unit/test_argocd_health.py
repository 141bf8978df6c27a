"""The chart's Argo CD health script, run by a real Lua 5.1 interpreter (Argo CD's gopher-lua is 5.1) on the
statuses Ferry's decisions write, for every phase of every kind."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
from builders import NOW, job_body
from test_decide_account import BACKUP, CAPTURED, CONNECTED, Case, instance, observe

from ferry.api.blobcopy import BlobCopyPhase
from ferry.api.containercopyjob import ContainerCopyPhase
from ferry.api.inaccountrestore import RestorePhase
from ferry.kinds.blobcopy.controller import TERMINAL
from ferry.kinds.databaseaccount.controller import decide
from ferry.runtime.objects import set_health
from ferry.runtime.phases import job_health
from ferry.transfer.account_queue import FINISHED_PHASES, RESTORE_FINISHED

SCRIPT = (Path(__file__).parents[2] / "charts" / "ferry" / "argocd" / "health.lua").read_text()


def argo_health(obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    hs = runtime.execute(SCRIPT)
    return str(hs["status"]), str(hs["message"])


def job(kind: str, phase: StrEnum, succeeded: StrEnum, finished: Any, settled: Any) -> dict[str, Any]:
    ready, activity = job_health(phase, succeeded, finished, settled)
    conditions = set_health(None, ready, activity, f"Reason{phase}", f"the job is {phase}", 1, NOW)
    return {
        "kind": kind,
        "metadata": {"name": "x", "generation": 1},
        "status": {"phase": str(phase), "observedGeneration": 1, "conditions": [c.wire() for c in conditions]},
    }


JOBS = [
    *(
        ("BlobCopy", p, job("BlobCopy", p, BlobCopyPhase.SUCCEEDED, TERMINAL, {BlobCopyPhase.PAUSED}))
        for p in BlobCopyPhase
    ),
    *(
        (
            "ContainerCopyJob",
            p,
            job("ContainerCopyJob", p, ContainerCopyPhase.SUCCEEDED, FINISHED_PHASES, {ContainerCopyPhase.PAUSED}),
        )
        for p in ContainerCopyPhase
    ),
    *(
        ("InAccountRestore", p, job("InAccountRestore", p, RestorePhase.SUCCEEDED, RESTORE_FINISHED, ()))
        for p in RestorePhase
    ),
]
EXPECTED = {"Succeeded": "Healthy", "Failed": "Degraded", "Cancelled": "Degraded", "Paused": "Suspended"}
EXPECTED["Pausing"] = "Suspended"


@pytest.mark.parametrize(("kind", "phase", "obj"), JOBS, ids=[f"{k}-{p}" for k, p, _ in JOBS])
def test_every_phase_of_every_job_kind(kind: str, phase: StrEnum, obj: dict[str, Any]) -> None:
    status, message = argo_health(obj)
    assert status == EXPECTED.get(str(phase), "Progressing")
    assert f"the job is {phase}" in message or status == "Suspended"


def account(case: Case) -> dict[str, Any]:
    plan = decide(observe(case))
    assert plan.status is not None
    return {"kind": "DatabaseAccount", "metadata": {"name": "acct", "generation": 1}, "status": plan.status.wire()}


@pytest.mark.parametrize(
    ("case", "expected", "says"),
    [
        (Case("-", observation=CONNECTED), "Healthy", "Connected"),
        (Case("-", monitor=False), "Progressing", "Connecting"),
        (
            Case("-", observation={"connection": {"state": "Unreachable", "message": "no route"}}),
            "Progressing",
            "no route",
        ),
        (
            Case("-", observation={"connection": {"state": "Unauthorized", "message": "key refused"}}),
            "Degraded",
            "key refused",
        ),
        (
            Case(
                "-",
                observation=CONNECTED,
                spec=BACKUP,
                backup={
                    **CAPTURED,
                    "backup": {
                        "lastCaptureTime": NOW.isoformat(),
                        "gaps": [{"start": NOW.isoformat(), "end": NOW.isoformat()}],
                    },
                },
            ),
            "Degraded",
            "gaps",
        ),
        (
            Case(
                "-",
                observation=CONNECTED,
                jobs=[job_body("b")],
                instances=[
                    instance(0),
                    instance(1, phase="Pending", waiting_reason="FailedCreate", waiting_message="exceeded quota"),
                ],
            ),
            "Degraded",
            "exceeded quota",
        ),
    ],
    ids=["connected", "connecting", "unreachable", "unauthorized", "backup-gap", "instance-refused"],
)
def test_database_accounts(case: Case, expected: str, says: str) -> None:
    status, message = argo_health(account(case))
    assert status == expected and says in message, (status, message)


def test_a_spec_the_operator_has_not_acted_on_is_progressing() -> None:
    obj = job("BlobCopy", BlobCopyPhase.SUCCEEDED, BlobCopyPhase.SUCCEEDED, TERMINAL, ())
    obj["metadata"]["generation"] = 2
    assert argo_health(obj) == ("Progressing", "the Ferry operator has not acted on the latest spec yet")
    assert argo_health({"kind": "BlobCopy", "metadata": {"name": "new", "generation": 1}})[0] == "Progressing"
