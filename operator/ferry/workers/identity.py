"""A worker's workload identity: azure-identity's WorkloadIdentityCredential over the projected token, and the
token exchange's refusals in words a user can act on.

The pod carries the federated token file and the authority (AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST, as
AKS's webhook sets them); each account names its identity in its own variables (<prefix>_CLIENT_ID and
<prefix>_TENANT_ID), so that one pod can use two identities, a cross-account copy's source and destination.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import WorkloadIdentityCredential
from azure.identity.aio import WorkloadIdentityCredential as AsyncWorkloadIdentityCredential

from ferry.api.identity import CLIENT_ID_ANNOTATION, TENANT_ID_ANNOTATION, TOKEN_FILE
from ferry.kube.manifests import IDENTITY_CA_ENV
from ferry.workers.outcome import PermanentError

# Entra's codes for a token exchange that no federated credential matches (70021), and for an issuer it could
# not reach to check the token (90061).
NOT_FEDERATED = ("AADSTS70021", "AADSTS90061", "AADSTS700213", "AADSTS700211")


def uses_identity(env: Mapping[str, str], prefix: str) -> bool:
    """Whether the account of <prefix> is reached by an identity (its client ID may still be missing: the operator
    found none to give it)."""
    return f"{prefix}_CLIENT_ID" in env


def _identity_options(env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    client_id, tenant_id = env.get(f"{prefix}_CLIENT_ID"), env.get(f"{prefix}_TENANT_ID")
    if not client_id or not tenant_id:
        missing = "clientId" if not client_id else "tenantId"
        annotation = CLIENT_ID_ANNOTATION if not client_id else TENANT_ID_ANNOTATION
        subject = projected_subject(env)[1]
        account = f"service account {subject.rsplit(':', 1)[-1]}" if subject != "?" else "the worker service account"
        raise PermanentError(
            "IdentityNotConfigured",
            f"the workloadIdentity names no {missing}, and {account} has no {annotation} annotation: set "
            f"workloadIdentity.{missing}, or the annotation with the chart value workerServiceAccount.annotations",
        )
    options: dict[str, Any] = {
        "tenant_id": tenant_id,
        "client_id": client_id,
        "token_file_path": env.get("AZURE_FEDERATED_TOKEN_FILE") or TOKEN_FILE,
    }
    if env.get(IDENTITY_CA_ENV):
        options["connection_verify"] = env[IDENTITY_CA_ENV]
    if env.get("AZURE_AUTHORITY_HOST"):
        options["authority"] = env["AZURE_AUTHORITY_HOST"]
    return options


def identity_credential(env: Mapping[str, str] = os.environ, prefix: str = "") -> WorkloadIdentityCredential:
    """The account's identity, exchanging the pod's projected token at the pod's authority (and refreshing
    the access token before it expires, as azure-identity does). A PermanentError (IdentityNotConfigured) when
    the operator found no client or tenant ID for it."""
    return WorkloadIdentityCredential(**_identity_options(env, prefix))


def async_identity_credential(env: Mapping[str, str] = os.environ, prefix: str = "") -> AsyncWorkloadIdentityCredential:
    """identity_credential for asynchronous clients (one per event loop)."""
    return AsyncWorkloadIdentityCredential(**_identity_options(env, prefix))


def projected_subject(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The issuer and subject of the pod's projected token (what a federated credential must name), read from
    its claims; ("?", "?") when it cannot be read."""
    try:
        token = Path(env.get("AZURE_FEDERATED_TOKEN_FILE") or TOKEN_FILE).read_text().strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("iss", "?")), str(claims.get("sub", "?"))
    except (OSError, IndexError, ValueError):
        return "?", "?"


def not_federated(error: BaseException) -> bool:
    return isinstance(error, ClientAuthenticationError) and any(code in str(error) for code in NOT_FEDERATED)


def federation_hint(client_id: str, env: Mapping[str, str] = os.environ) -> str:
    """What to create so that Entra accepts this pod's token for the identity."""
    issuer, subject = projected_subject(env)
    return (
        f"Microsoft Entra ID refused to exchange the pod's service account token for identity {client_id}: add a "
        f"federated credential to it with issuer {issuer} and subject {subject} (audience api://AzureADTokenExchange), "
        "e.g. az identity federated-credential create --identity-name NAME --resource-group RG --name ferry "
        f"--issuer {issuer} --subject {subject}"
    )


# The Storage Blob Data roles an identity needs: reading a source, writing a destination or a backup location.
BLOB_READER = "Storage Blob Data Reader"
BLOB_CONTRIBUTOR = "Storage Blob Data Contributor"


def storage_forbidden(client_id: str, account: str, role: str) -> str:
    return (
        f"identity {client_id} has no data-plane role on storage account {account}: assign it {role}, e.g. az role "
        f'assignment create --assignee {client_id} --role "{role}" --scope <the storage account\'s resource ID>'
    )


def storage_identity_failure(error: BaseException, client_id: str, account: str, role: str) -> tuple[str, str] | None:
    """(reason, message) of a storage request that failed for the identity it was made with: the token exchange
    refused (IdentityNotFederated) or no data-plane role on the account (Forbidden); None for other failures."""
    if not_federated(error):
        return "IdentityNotFederated", federation_hint(client_id)
    status = int(getattr(error, "status_code", 0) or 0)
    if status == 403:
        return "Forbidden", storage_forbidden(client_id, account, role)
    if isinstance(error, ClientAuthenticationError) and status == 0:
        return "IdentityTokenFailed", f"no token for identity {client_id}: {str(error).splitlines()[0][:300]}"
    return None
