"""The worker pods' service account in each namespace, made by the operator the first time it starts a worker
there: the ServiceAccount, and a RoleBinding of it to the one fixed ClusterRole the chart installs (read the
object a worker works for, apply its own part of the status; nothing else). So Ferry works in every namespace
the operator watches, and a worker reaches only its own namespace."""

from __future__ import annotations

from typing import Any

from ferry.runtime.world import WorkerSettings

MANAGED = {"app.kubernetes.io/managed-by": "ferry", "app.kubernetes.io/component": "worker"}


def service_account(namespace: str, workers: WorkerSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": workers.service_account, "namespace": namespace, "labels": dict(MANAGED)},
        "automountServiceAccountToken": True,
    }
    if workers.service_account_annotations:
        body["metadata"]["annotations"] = dict(workers.service_account_annotations)
    if workers.image_pull_secrets:
        body["imagePullSecrets"] = [{"name": name} for name in workers.image_pull_secrets]
    return body


def role_binding(namespace: str, workers: WorkerSettings) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": workers.service_account, "namespace": namespace, "labels": dict(MANAGED)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": workers.cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": workers.service_account, "namespace": namespace}],
    }
