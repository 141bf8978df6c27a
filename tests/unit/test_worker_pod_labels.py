"""Worker pods carry the recommended labels: `kubectl logs -l app.kubernetes.io/name=ferry` finds them beside the
operator, and the chart's selectors for the operator's own pod still find only that pod."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from builders import NOW, WORKERS, meta, new_blobcopy

from ferry.api.databaseaccount import (
    AccountObservation,
    BackupObservation,
    DatabaseAccountOperatorStatus,
    DatabaseAccountSpec,
)
from ferry.kinds.blobcopy import controller as blobcopy
from ferry.kinds.databaseaccount import controller as databaseaccount
from ferry.kube.manifests import LABEL_KIND, LABEL_OWNER_UID, LABEL_ROLE
from ferry.operator_main import build_runtime
from ferry.settings import OperatorSettings
from ferry.transfer.account_queue import BackupView, copy_jobs, restores

CHART = Path(__file__).resolve().parents[2] / "charts" / "ferry"
RELEASE = "prod-ferry"
NAMESPACE = "ferry-system"
WORKERS_OF_RELEASE = replace(WORKERS, instance=RELEASE)

ACCOUNT_SPEC = {
    "endpoint": "https://shop.documents.azure.com:443/",
    "credentials": {"secretRef": {"name": "key", "key": "primaryKey"}},
    "copyInstances": {"count": 1},
    "backup": {
        "mode": "Continuous",
        "tier": "Continuous7Days",
        "captureInterval": "10s",
        "location": {"account": {"secretRef": {"name": "store", "key": "cs"}}, "container": "backups"},
    },
}
BLOB_SPEC = {
    "source": {"account": {"secretRef": {"name": "src", "key": "cs"}}, "container": "abc", "blob": "a.bin"},
    "destination": {"account": {"secretRef": {"name": "dst", "key": "cs"}}, "container": "def"},
}


def account_pods() -> dict[tuple[str, str], dict[str, Any]]:
    spec = DatabaseAccountSpec.model_validate(ACCOUNT_SPEC)
    o = databaseaccount.Observed(
        meta=meta("acct"),
        spec=spec,
        state=DatabaseAccountOperatorStatus(),
        observation=AccountObservation(),
        backup=BackupObservation(),
        annotations={},
        monitor_pods=(),
        backup_pods=(),
        instance_pods=(),
        restorer_pods=(),
        queue=copy_jobs([], None),
        restores=restores([], BackupView(None, True, None)),
        instance_slots=0,
        now=NOW,
        workers=WORKERS_OF_RELEASE,
    )
    return {
        ("DatabaseAccount", databaseaccount.MONITOR_ROLE): databaseaccount.monitor_manifest(o),
        ("DatabaseAccount", databaseaccount.BACKUP_ROLE): databaseaccount.backup_manifest(o),
        ("DatabaseAccount", databaseaccount.COPY_ROLE): databaseaccount.copy_instance_manifest(o, 0),
        ("DatabaseAccount", databaseaccount.RESTORE_ROLE): databaseaccount.restore_instance_manifest(o, 0),
    }


def blobcopy_pods() -> dict[tuple[str, str], dict[str, Any]]:
    o = new_blobcopy(BLOB_SPEC, WORKERS_OF_RELEASE)
    roles = (blobcopy.COPY_ROLE, blobcopy.CLEANUP_ROLE)
    return {("BlobCopy", role): blobcopy.manifest(o, role, f"x-{role}-1") for role in roles}


@pytest.fixture(scope="module")
def chart_objects() -> Iterator[list[dict[str, Any]]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(None, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc is not None
    ]
    yield objects


def _only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1
    return found[0]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_every_worker_pod_carries_the_recommended_labels_and_its_selection_labels() -> None:
    pods = {**account_pods(), **blobcopy_pods()}
    assert set(pods) == {
        ("DatabaseAccount", "monitor"),
        ("DatabaseAccount", "backup"),
        ("DatabaseAccount", "copy"),
        ("DatabaseAccount", "restore"),
        ("BlobCopy", "copy"),
        ("BlobCopy", "cleanup"),
    }
    for (kind, role), pod in pods.items():
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ferry"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"] == role
        assert labels["app.kubernetes.io/part-of"] == "ferry"
        assert labels["app.kubernetes.io/managed-by"] == "ferry"
        # What the operator selects and counts by is unchanged.
        assert labels[LABEL_ROLE] == role and labels[LABEL_OWNER_UID] and labels[LABEL_KIND] == kind


def test_the_release_reaches_the_workers_through_the_operator_settings(
    chart_objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _only(chart_objects, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRY_INSTANCE"] == RELEASE
    monkeypatch.setenv("FERRY_INSTANCE", env["FERRY_INSTANCE"])
    assert build_runtime(OperatorSettings()).workers.instance == RELEASE
    monkeypatch.delenv("FERRY_INSTANCE")
    assert OperatorSettings().instance == "ferry"  # run outside the chart: the chart's default release name


def test_one_selector_finds_operator_and_workers_and_the_operator_selectors_only_the_operator(
    chart_objects: list[dict[str, Any]],
) -> None:
    deployment = _only(chart_objects, "Deployment")
    operator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    release = {"app.kubernetes.io/name": "ferry", "app.kubernetes.io/instance": RELEASE}
    workers = {"app.kubernetes.io/managed-by": "ferry"}
    assert _matches(release, operator_labels) and not _matches(workers, operator_labels)
    operator_selectors = [deployment["spec"]["selector"]["matchLabels"]]
    operator_selectors += [o["spec"]["selector"] for o in chart_objects if o["kind"] == "Service"]
    for pod in {**account_pods(), **blobcopy_pods()}.values():
        labels = pod["metadata"]["labels"]
        assert _matches(release, labels) and _matches(workers, labels)
        assert not any(_matches(selector, labels) for selector in operator_selectors)
    assert all(_matches(selector, operator_labels) for selector in operator_selectors)
