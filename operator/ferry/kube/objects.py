"""Kubernetes object building: the worker pods Ferry starts, with owner references and a safe security context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ferry.api.kinds import Kind

MANAGED_BY = "ferry"
LABEL_KIND = "ferry.dev/kind"
LABEL_OWNER_UID = "ferry.dev/owner-uid"
LABEL_ROLE = "ferry.dev/role"


def owner_reference(kind: Kind, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def generate_name(owner_name: str, role: str) -> str:
    """A pod name prefix that stays within the 63 characters the API server allows with its suffix."""
    return f"{owner_name[: 63 - len(role) - 8]}-{role}-"


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def restricted_security_context() -> dict[str, Any]:
    """What the Pod Security Standards' `restricted` profile asks of a container."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def worker_pod(
    *,
    kind: Kind,
    owner_name: str,
    owner_uid: str,
    namespace: str,
    role: str,
    image: str,
    service_account: str,
    args: Sequence[str],
    env: Sequence[Mapping[str, Any]] = (),
    requests: Mapping[str, str] | None = None,
    limits: Mapping[str, str] | None = None,
    termination_grace_seconds: int = 30,
    extra_labels: Mapping[str, str] | None = None,
    name: str | None = None,
    restart_policy: str = "Never",
) -> dict[str, Any]:
    """A worker pod running `ferry worker ...`, owned by (and garbage collected with) its resource."""
    labels = {
        "app.kubernetes.io/name": "ferry",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_KIND: kind.kind,
        LABEL_OWNER_UID: owner_uid,
        LABEL_ROLE: role,
        **(extra_labels or {}),
    }
    resources: dict[str, Any] = {"requests": dict(requests or {"cpu": "100m", "memory": "128Mi"})}
    if limits:
        resources["limits"] = dict(limits)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **({"name": name} if name else {"generateName": generate_name(owner_name, role)}),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(kind, owner_name, owner_uid)],
        },
        "spec": {
            "restartPolicy": restart_policy,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": True,
            "terminationGracePeriodSeconds": termination_grace_seconds,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "worker",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["ferry"],
                    "args": ["worker", *args],
                    "env": [dict(e) for e in env],
                    "resources": resources,
                    "securityContext": restricted_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
