"""A ContainerCopyJob of several tasks, end to end: one queue slot, each task's counts in status.tasks and in
`kubectl describe` and `ferry jobs show`, the job's totals in its printer columns; a task list the API can judge
refused at apply, naming the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from copyjobs import all_items, apply_account, job_manifest, new_container, path, tasks_manifest

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


def test_a_job_of_two_tasks_copies_both_with_their_own_counts(stack: DevStack, kubectl: Kubectl) -> None:
    apply_account(kubectl, stack)
    pairs = [
        (new_container(stack, "/tenant", items=60), new_container(stack, "/region")),
        (new_container(stack, "/tenant", items=25), new_container(stack, "/id")),
    ]
    kubectl.apply(tasks_manifest("two", pairs, verify="Full"))
    # A job after it waits for the whole job: the tasks take one slot of the account's queue.
    later = (new_container(stack, "/tenant", items=5), new_container(stack, "/tenant"))
    kubectl.apply(job_manifest("after", *later))

    done = kubectl.wait_phase("containercopyjob", "two", "Succeeded", timeout=180)["status"]
    for source, dest in pairs:
        assert all_items(dest) == all_items(source)
    assert (done["processedCount"], done["totalCount"], done["percent"]) == (85, 85, 100)
    tasks = [(t["source"], t["destination"], t["totalCount"], t["processedCount"], t["phase"]) for t in done["tasks"]]
    expected = [(_named(s), _named(d), n, n, "Succeeded") for (s, d), n in zip(pairs, (60, 25), strict=True)]
    assert tasks == expected
    assert done["verification"]["sourceCount"] == done["verification"]["destinationCount"] == 85

    after = kubectl.wait_phase("containercopyjob", "after", "Succeeded", timeout=120)["status"]
    assert after["startTime"] >= done["completionTime"]

    table = kubectl("get", "containercopyjob", "two")
    assert re.search(r"two\s+acct\s+Succeeded\s+85\s+85\s+100", table), table
    described = kubectl("describe", "containercopyjob", "two")
    assert "Tasks:" in described and _named(pairs[1][1]) in described
    shown = yaml.safe_load(kubectl.ferry("jobs", "show", f"{kubectl.namespace}/two", "--account", "acct"))
    assert [t["totalCount"] for t in shown["tasks"]] == [60, 25]
    assert {u["task"] for u in shown["workUnits"] if "task" in u} == {0, 1}
    assert "(+1 tasks)" in kubectl.ferry("jobs", "list", "--account", "acct")


def _named(container: Any) -> str:
    where = path(container)
    return f"{where['database']}/{where['container']}"


def _task(source: str, dest: str, db: str = "shop", account: str | None = None) -> dict[str, Any]:
    where = {"database": db, "container": source} | ({"accountRef": {"name": account}} if account else {})
    return {"source": where, "destination": {"database": db, "container": dest}}


def _refusal(kubectl: Kubectl, spec: dict[str, Any]) -> str:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": {"name": "bad"},
        "spec": {"accountRef": {"name": "acct"}, **spec},
    }
    done = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert done.returncode != 0, f"accepted: {spec}"
    return done.stderr


def test_a_task_list_the_api_can_judge_is_refused_at_apply_naming_the_field(kubectl: Kubectl) -> None:
    assert "spec.tasks: Invalid value" in _refusal(kubectl, {"tasks": []})
    many = _refusal(kubectl, {"tasks": [_task(f"s{i}", f"d{i}") for i in range(1000)]})
    assert "spec.tasks: Too many: 1000: must have at most 100 items" in many
    twice = _refusal(kubectl, {"tasks": [_task("a", "same"), _task("b", "same")]})
    assert "spec.tasks: Invalid value" in twice and "two tasks write the same destination container" in twice
    onto_itself = _refusal(kubectl, {"tasks": [_task("a", "a-copy"), _task("b", "b")]})
    assert "spec.tasks" in onto_itself and "each task's source and destination must differ" in onto_itself
    both = _refusal(kubectl, {"tasks": [_task("a", "b")], **_task("c", "d")})
    assert "give either source and destination (one pair) or tasks" in both
    accounts = _refusal(kubectl, {"tasks": [_task("a", "b", account="one"), _task("c", "d", account="two")]})
    assert "spec.tasks" in accounts and "every task reads from the same account" in accounts
    # Another account's container of the same name is a pair that differs.
    kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=_manifest({"tasks": [_task("a", "a", account="o")]}))


def _manifest(spec: dict[str, Any]) -> str:
    body = {"apiVersion": "ferry.dev/v1alpha1", "kind": "ContainerCopyJob", "metadata": {"name": "good"}}
    return yaml.safe_dump(body | {"spec": {"accountRef": {"name": "acct"}, **spec}})
