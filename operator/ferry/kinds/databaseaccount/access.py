"""Resolving a DatabaseAccount to its access (API for NoSQL or MongoDB) and its backup location with the caller's
own Kubernetes credentials (for the CLI)."""

from __future__ import annotations

from ferry.api.databaseaccount import AccountApi, BackupMode, DatabaseAccountSpec
from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.backup.store import BackupStore
from ferry.kube.client import ObjectRef
from ferry.kube.secrets import secret_value
from ferry.kube.storageaccess import blob_account_for
from ferry.storage.cosmos import CosmosAccess
from ferry.storage.mongo import MongoAccess


def _spec(namespace: str, name: str) -> DatabaseAccountSpec:
    return DatabaseAccountSpec.model_validate(ObjectRef(DATABASE_ACCOUNT, namespace, name).get()["spec"])


def access_for(namespace: str, name: str) -> CosmosAccess | MongoAccess:
    spec = _spec(namespace, name)
    if spec.credentials.secret_ref is None:
        raise ValueError(f"DatabaseAccount {namespace}/{name} has no credentials.secretRef")
    key = secret_value(namespace, spec.credentials.secret_ref)
    verify = not spec.insecure_skip_tls_verify
    if spec.api == AccountApi.MONGODB:
        return MongoAccess(endpoint=spec.endpoint, key=key, username=spec.credentials.username, verify_tls=verify)
    return CosmosAccess(endpoint=spec.endpoint, key=key, verify_tls=verify)


def backup_for(namespace: str, name: str) -> BackupStore:
    """The account's backup location, as its capture pod writes it."""
    spec = _spec(namespace, name)
    location = spec.backup.location
    if spec.backup.mode != BackupMode.CONTINUOUS or location is None:
        raise ValueError(f"DatabaseAccount {namespace}/{name} has no continuous backup (spec.backup.mode)")
    account = blob_account_for(namespace, location.account)
    prefix = location.prefix if location.prefix is not None else f"{namespace}/{name}"
    return BackupStore(account.container_client(location.container), prefix)
