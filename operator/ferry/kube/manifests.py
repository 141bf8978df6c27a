"""Kubernetes object building: the worker pods Ferry starts, with owner references and a safe security context."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.api.identity import (
    CLIENT_ID_ANNOTATION,
    TENANT_ID_ANNOTATION,
    TOKEN_AUDIENCE,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_SECONDS,
    TOKEN_VOLUME,
    USE_LABEL,
    WorkloadIdentity,
)
from ferry.api.kinds import Kind
from ferry.api.storageaccount import StorageAccountRef

MANAGED_BY = "ferry"
APP_NAME = "ferry"  # app.kubernetes.io/name, as the chart labels the operator
DEFAULT_INSTANCE = "ferry"  # app.kubernetes.io/instance where the operator was not told its Helm release
LABEL_KIND = "ferry.dev/kind"
LABEL_OWNER_UID = "ferry.dev/owner-uid"
LABEL_ROLE = "ferry.dev/role"
LABEL_TEMPLATE = "ferry.dev/template"  # hash of what the pod was built from: a change replaces the pod
LABEL_WORKER_INDEX = "ferry.dev/worker-index"  # which of an object's several worker pods (0 up), where it has several
LABEL_SLOT = "ferry.dev/slot"  # "true" on pods that take one of the operator's bounded worker slots
MAX_POD_NAME = 63  # pod names double as host names


def owner_reference(kind: Kind, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_name(owner_name: str, role: str, suffix: str | int) -> str:
    """A deterministic pod name: creating it twice fails with AlreadyExists instead of starting two pods.

    Long owner names are shortened and made unique again with a hash of the full name.
    """
    tail = f"-{role}-{suffix}"
    if len(owner_name) + len(tail) <= MAX_POD_NAME:
        return owner_name + tail
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    head = owner_name[: MAX_POD_NAME - len(tail) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{tail}"


def template_hash(*parts: Any) -> str:
    """A short hash of the inputs a pod is built from."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


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


@dataclass(frozen=True)
class IdentityMount:
    """What a worker pod that authenticates with a workload identity carries, as AKS's webhook would add it: the
    projected token for Entra's token exchange and where to exchange it. The identities themselves (client and
    tenant IDs) are in the account's own variables, so that one pod can use two."""

    authority_host: str
    ca_file: str = ""  # a CA bundle in the pod to trust the authority with (a private one); empty: the image's

    def env(self) -> list[dict[str, str]]:
        env = [
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
            {"name": "AZURE_AUTHORITY_HOST", "value": self.authority_host},
        ]
        if self.ca_file:
            env.append({"name": IDENTITY_CA_ENV, "value": self.ca_file})
        return env

    @staticmethod
    def volume() -> dict[str, Any]:
        token = {"audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_SECONDS, "path": TOKEN_VOLUME}
        return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


IDENTITY_CA_ENV = "FERRY_IDENTITY_CA_FILE"
STORAGE_CA_ENV = "FERRY_STORAGE_CA_FILE"  # read by ferry.storage.blobs (the chart's workers.storageCAFile)


def identity_env(
    identity: WorkloadIdentity, prefix: str, annotations: Mapping[str, str] | Sequence[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    """<prefix>_CLIENT_ID and _TENANT_ID of an account reached by an identity: the spec's own IDs, else the worker
    service account's annotations (as AKS's webhook reads them). Empty when neither names one: the worker says so
    (IdentityNotConfigured)."""
    defaults = dict(annotations)
    client_id = identity.client_id or defaults.get(CLIENT_ID_ANNOTATION, "")
    tenant_id = identity.tenant_id or defaults.get(TENANT_ID_ANNOTATION, "")
    return [{"name": f"{prefix}_CLIENT_ID", "value": client_id}, {"name": f"{prefix}_TENANT_ID", "value": tenant_id}]


def storage_env(
    ref: StorageAccountRef, prefix: str, annotations: Mapping[str, str] | Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """How a worker reaches a storage account: <prefix>_CONNECTION_STRING as a Secret reference the kubelet
    resolves, or <prefix>_BLOB_ENDPOINT and the identity's IDs (read by workers.podenv.blob_account_from_env)."""
    if ref.workload_identity is not None:
        assert ref.blob_endpoint is not None  # the CRD's CEL rule: blobEndpoint comes with workloadIdentity
        endpoint = {"name": f"{prefix}_BLOB_ENDPOINT", "value": ref.blob_endpoint}
        return [endpoint, *identity_env(ref.workload_identity, prefix, annotations)]
    assert ref.secret_ref is not None  # the CRD's CEL rule: exactly one of secretRef and workloadIdentity
    return [secret_env(f"{prefix}_CONNECTION_STRING", ref.secret_ref.name, ref.secret_ref.key)]


def uses_identity(env: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a pod with this environment authenticates to some account with a workload identity."""
    return any(str(e["name"]).endswith("_CLIENT_ID") for e in env)


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
    name: str,
    restart_policy: str = "Never",
    takes_slot: bool = True,
    instance: str = DEFAULT_INSTANCE,
    extra_labels: Mapping[str, str] | None = None,
    identity: IdentityMount | None = None,
    storage_ca_file: str = "",
) -> dict[str, Any]:
    """A worker pod running `ferry worker ...`, owned by (and garbage collected with) its resource.

    The template hash covers everything the pod is built from, so a changed spec is noticed.

    It carries the recommended labels beside the ones Ferry selects by (ferry.dev/...): the operator's name,
    part-of and Helm release (instance), so `kubectl logs -l app.kubernetes.io/name=ferry` finds operator and
    workers alike; its role as the component (the operator's own pod is component=operator, which is what
    the chart's selectors add); managed-by the operator (the chart's objects say Helm), which selects
    every worker pod and nothing else.

    `identity` is where workload identities exchange their tokens: a pod whose environment names an identity
    (uses_identity) gets its token volume, label and variables; any other pod, nothing of it.
    """
    if not uses_identity(env):
        identity = None
    labels = {
        **(extra_labels or {}),
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/part-of": "ferry",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_KIND: kind.kind,
        LABEL_OWNER_UID: owner_uid,
        LABEL_ROLE: role,
        LABEL_SLOT: "true" if takes_slot else "false",
    }
    resources: dict[str, Any] = {"requests": dict(requests or {"cpu": "100m", "memory": "128Mi"})}
    if limits:
        resources["limits"] = dict(limits)
    env = [*env, *(identity.env() if identity else [])]
    if storage_ca_file:
        env.append({"name": STORAGE_CA_ENV, "value": storage_ca_file})
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if identity is not None:
        labels[USE_LABEL] = "true"
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
        volumes.append(identity.volume())
    labels[LABEL_TEMPLATE] = template_hash(image, service_account, list(args), list(env), resources, restart_policy)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
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
                    # The worker's last log line says how its work ended (see ferry.api.outcome).
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }
