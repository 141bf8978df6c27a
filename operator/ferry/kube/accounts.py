"""Resolving a DatabaseAccount to Cosmos access with the caller's own Kubernetes credentials (for the CLI)."""

from __future__ import annotations

import base64
from typing import Any

from ferry.api.databaseaccount import DatabaseAccountSpec
from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.kube import client
from ferry.kube.client import ObjectRef
from ferry.storage.cosmos import CosmosAccess


def access_for(namespace: str, name: str) -> CosmosAccess:
    spec = DatabaseAccountSpec.model_validate(ObjectRef(DATABASE_ACCOUNT, namespace, name).get()["spec"])
    if spec.credentials.secret_ref is None:
        raise ValueError(f"DatabaseAccount {namespace}/{name} has no credentials.secretRef")
    ref = spec.credentials.secret_ref
    secret: Any = client.core().read_namespaced_secret(ref.name, namespace)
    encoded = (secret.data or {}).get(ref.key)
    if encoded is None:
        raise ValueError(f'Secret {namespace}/{ref.name} has no key "{ref.key}"')
    key = base64.b64decode(encoded).decode()
    return CosmosAccess(endpoint=spec.endpoint, key=key, verify_tls=not spec.insecure_skip_tls_verify)
