"""What worker pods read from their environment: how to reach the Cosmos DB account, of either API, and storage
accounts."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ferry.api.databaseaccount import ACCOUNT_ENV_PREFIX, AccountApi
from ferry.storage.blobaccount import BlobAccount
from ferry.storage.cosmos import CosmosAccess, InvalidAccountKey
from ferry.storage.mongo import MongoAccess
from ferry.workers.identity import async_identity_credential, identity_credential, uses_identity
from ferry.workers.outcome import PermanentError


def cosmos_access_from_env(env: Mapping[str, str] = os.environ, prefix: str = ACCOUNT_ENV_PREFIX) -> CosmosAccess:
    """<prefix>_ENDPOINT and <prefix>_KEY (a Secret reference in the pod spec), or the workload identity of
    <prefix>_CLIENT_ID and _TENANT_ID: FERRY_COSMOS_* for the worker's own account, FERRY_SOURCE_COSMOS_* for the
    source of a cross-account copy.

    A key that cannot be an account key is a PermanentError (InvalidCredentials) naming its Secret: every
    worker reading an account (monitor, capture, copy and restore instances) checks it here.
    """
    verify = env.get(f"{prefix}_VERIFY_TLS", "true").lower() != "false"
    if uses_identity(env, prefix):
        return CosmosAccess(env[f"{prefix}_ENDPOINT"], verify_tls=verify, credential=identity_credential(env, prefix))
    try:
        return CosmosAccess(
            endpoint=env[f"{prefix}_ENDPOINT"],
            key=env[f"{prefix}_KEY"],
            verify_tls=verify,
        )
    except InvalidAccountKey as error:
        secret, key = env.get(f"{prefix}_KEY_SECRET"), env.get(f"{prefix}_KEY_SECRET_KEY")
        where = f'key "{key}" of Secret {secret}' if secret and key else "the DatabaseAccount's Secret"
        raise PermanentError(
            "InvalidCredentials",
            f"{error} in {where} (spec.credentials.secretRef): put the account's primary or secondary key "
            "there, as the portal shows it",
        ) from None


def restart_hint(message: str, env: Mapping[str, str] = os.environ) -> str:
    """`message`, and how a pod that waits instead of exiting comes to read a corrected Secret."""
    pod = env.get("HOSTNAME")
    return f"{message}; then delete pod {pod} so that its replacement reads it" if pod else message


def account_api(env: Mapping[str, str] = os.environ, prefix: str = ACCOUNT_ENV_PREFIX) -> AccountApi:
    """The API of the account named by <prefix>_* (NoSQL when unset: pods of an earlier operator)."""
    return AccountApi(env.get(f"{prefix}_API") or AccountApi.NOSQL.value)


def mongo_access_from_env(env: Mapping[str, str] = os.environ, prefix: str = ACCOUNT_ENV_PREFIX) -> MongoAccess:
    """<prefix>_ENDPOINT (a mongodb:// URI without user or password), <prefix>_USERNAME and <prefix>_KEY, the
    password."""
    return MongoAccess(
        endpoint=env[f"{prefix}_ENDPOINT"],
        key=env[f"{prefix}_KEY"],
        username=env.get(f"{prefix}_USERNAME") or None,
        verify_tls=env.get(f"{prefix}_VERIFY_TLS", "true").lower() != "false",
    )


def blob_account_from_env(env: Mapping[str, str] = os.environ, prefix: str = "") -> BlobAccount | None:
    """<prefix>_CONNECTION_STRING (a Secret reference in the pod spec), or <prefix>_BLOB_ENDPOINT and the workload
    identity of <prefix>_CLIENT_ID and _TENANT_ID; None when the pod names neither. A PermanentError
    (IdentityNotConfigured) when the identity has no client or tenant ID."""
    if env.get(f"{prefix}_CONNECTION_STRING"):
        return BlobAccount(connection_string=env[f"{prefix}_CONNECTION_STRING"])
    if not env.get(f"{prefix}_BLOB_ENDPOINT"):
        return None
    credential = identity_credential(env, prefix)
    return BlobAccount(
        endpoint=env[f"{prefix}_BLOB_ENDPOINT"],
        credential=credential,
        async_credential=lambda: async_identity_credential(env, prefix),
        client_id=env.get(f"{prefix}_CLIENT_ID", ""),
    )
