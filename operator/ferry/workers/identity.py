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

from ferry.api.identity import TOKEN_FILE
from ferry.kube.manifests import IDENTITY_CA_ENV

# Entra's codes for a token exchange that no federated credential matches (70021), and for an issuer it could
# not reach to check the token (90061).
NOT_FEDERATED = ("AADSTS70021", "AADSTS90061", "AADSTS700213", "AADSTS700211")


def uses_identity(env: Mapping[str, str], prefix: str) -> bool:
    return bool(env.get(f"{prefix}_CLIENT_ID"))


def identity_credential(env: Mapping[str, str] = os.environ, prefix: str = "") -> WorkloadIdentityCredential:
    """The account's identity, exchanging the pod's projected token at the pod's authority (and refreshing
    the access token before it expires, as azure-identity does)."""
    options: dict[str, Any] = {}
    if env.get(IDENTITY_CA_ENV):
        options["connection_verify"] = env[IDENTITY_CA_ENV]
    if env.get("AZURE_AUTHORITY_HOST"):
        options["authority"] = env["AZURE_AUTHORITY_HOST"]
    return WorkloadIdentityCredential(
        tenant_id=env[f"{prefix}_TENANT_ID"],
        client_id=env[f"{prefix}_CLIENT_ID"],
        token_file_path=env.get("AZURE_FEDERATED_TOKEN_FILE") or TOKEN_FILE,
        **options,
    )


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
