"""Small builders for the decision tests: objects, pods and the moments they are looked at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.api.blobcopy import BlobCopyOperatorStatus, BlobCopyProgress, BlobCopySpec
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.kinds.blobcopy import controller as blobcopy
from ferry.runtime.objects import FINALIZER, ObjectMeta
from ferry.runtime.pods import PodView
from ferry.runtime.world import WorkerSettings

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
WORKERS = WorkerSettings(image="ferry:test", service_account="ferry-worker")


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def meta(
    name: str = "x",
    *,
    finalizer: bool = False,
    deleting: bool = False,
    created: datetime = NOW,
    revision: str = "100",
    generation: int = 1,
) -> ObjectMeta:
    return ObjectMeta(
        name=name,
        namespace="ns",
        uid=f"uid-{name}",
        generation=generation,
        resource_version=revision,
        created=created,
        deleting=deleting,
        finalizers=(FINALIZER,) if finalizer else (),
    )


def pod(name: str, role: str, phase: str = "Running", **fields: Any) -> PodView:
    return PodView(name=name, role=role, phase=phase, **fields)


def finished(name: str, role: str, code: int, outcome: WorkerOutcome | None = None, log: str = "") -> PodView:
    message = "\n".join(part for part in (log, outcome.line() if outcome else "") if part) or None
    return PodView(
        name=name,
        role=role,
        phase="Succeeded" if code == 0 else "Failed",
        exit_code=code,
        termination_message=message if code else None,
        finished_at=NOW,
    )


def outcome(result: OutcomeResult, reason: str = "", message: str = "") -> WorkerOutcome:
    return WorkerOutcome(result=result, reason=reason, message=message)


def job_body(
    name: str,
    *,
    account: str = "acct",
    revision: str = "100",
    created: str = "2026-11-21T12:00:00Z",
    suspend: bool = False,
    status: dict[str, Any] | None = None,
    deleting: bool = False,
    source_account: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "resourceVersion": revision,
        "creationTimestamp": created,
        "generation": 1,
    }
    if deleting:
        metadata["deletionTimestamp"] = created
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCopyJob",
        "metadata": metadata,
        "spec": {
            "accountRef": {"name": account},
            "source": {
                "database": "db",
                "container": f"{name}-src",
                **({"accountRef": {"name": source_account}} if source_account else {}),
            },
            "destination": {"database": "db", "container": f"{name}-dst"},
            "suspend": suspend,
        },
        "status": status or {},
    }


def restore_body(
    name: str,
    revision: str,
    *,
    database: str = "db",
    container: str | None = "c",
    at: datetime | None = None,
    status: dict[str, Any] | None = None,
    target: dict[str, str] | None = None,
    account: str = "acct",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"accountRef": {"name": account}, "database": database}
    if container:
        spec["container"] = container
    if at:
        spec["restoreTimestamp"] = at.isoformat()
    if target:
        spec["target"] = target
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "InAccountRestore",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": revision,
            "creationTimestamp": "2026-11-21T12:00:00Z",
            "generation": 1,
        },
        "spec": spec,
        "status": status or {},
    }


def blobcopy_body(name: str, **spec: Any) -> dict[str, Any]:
    """A BlobCopy of one blob between two storage accounts (metadata beyond the name is the API server's)."""
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BlobCopy",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "source": {"account": {"secretRef": {"name": "src", "key": "cs"}}, "container": "abc", "blob": "a.bin"},
            "destination": {"account": {"secretRef": {"name": "dst", "key": "cs"}}, "container": "def"},
            **spec,
        },
    }


def account_body(name: str = "acct", *, backup: bool = False, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A DatabaseAccount with two copy instances, with continuous backup when asked (metadata beyond the name is
    the API server's)."""
    spec: dict[str, Any] = {
        "endpoint": f"https://{name}.documents.azure.com:443/",
        "credentials": {"secretRef": {"name": "key", "key": "primaryKey"}},
        "copyInstances": {"count": 2},
        "idleTimeout": "60s",
    }
    if backup:
        spec["backup"] = {
            "mode": "Continuous",
            "tier": "Continuous7Days",
            "location": {"account": {"secretRef": {"name": "backup", "key": "cs"}}, "container": "backups"},
        }
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
        "status": status or {},
    }


def new_blobcopy(spec: dict[str, Any], workers: WorkerSettings = WORKERS) -> blobcopy.Observed:
    """A BlobCopy just created, with a free worker slot and no pod yet."""
    return blobcopy.Observed(
        meta=meta("x"),
        spec=BlobCopySpec.model_validate(spec),
        state=BlobCopyOperatorStatus(),
        progress=BlobCopyProgress(),
        copy_pods=(),
        cleanup_pods=(),
        slots=1,
        now=NOW,
        workers=workers,
    )
