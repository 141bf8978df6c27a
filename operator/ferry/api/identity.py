"""Microsoft Entra workload identity: what a spec names instead of a key, and how worker pods carry it.

Worker pods that use an identity get what AKS's workload identity webhook would add (so Ferry works on clusters
without the webhook too): the label azure.workload.identity/use, a projected service account token for the
audience api://AzureADTokenExchange, and the AZURE_* variables azure-identity's WorkloadIdentityCredential reads.
"""

from __future__ import annotations

from pydantic import Field

from ferry.api.common import FerryModel

_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

USE_LABEL = "azure.workload.identity/use"
# The worker service account's annotations (as AKS's webhook reads them): the identity of a workloadIdentity that
# names none itself.
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
TOKEN_AUDIENCE = "api://AzureADTokenExchange"
TOKEN_VOLUME = "azure-identity-token"
TOKEN_DIR = "/var/run/secrets/azure/tokens"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_VOLUME}"
TOKEN_SECONDS = 3600  # the webhook's default, and the shortest it allows


class WorkloadIdentity(FerryModel):
    """An Entra application or user-assigned managed identity, federated with the worker service account. Without
    clientId (tenantId), the worker service account's azure.workload.identity/client-id (tenant-id) annotation
    names it: the chart's workerServiceAccount.annotations."""

    client_id: str | None = Field(
        default=None,
        pattern=_GUID,
        description="The identity's client (application) ID; default: the worker service account's "
        "azure.workload.identity/client-id annotation.",
    )
    tenant_id: str | None = Field(
        default=None,
        pattern=_GUID,
        description="The Entra tenant ID of the identity; default: the worker service account's "
        "azure.workload.identity/tenant-id annotation.",
    )
