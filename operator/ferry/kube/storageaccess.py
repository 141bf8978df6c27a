"""A storage account of a spec resolved with the caller's own credentials, for the CLI: the Secret's connection
string, or the blob endpoint with the caller's Entra login (azure-identity's DefaultAzureCredential: az login,
environment variables, a managed identity) in place of the workers' workload identity."""

from __future__ import annotations

from azure.identity import DefaultAzureCredential
from azure.identity.aio import DefaultAzureCredential as AsyncDefaultAzureCredential

from ferry.api.storageaccount import StorageAccountRef
from ferry.kube.secrets import secret_value
from ferry.storage.blobaccount import BlobAccount


def blob_account_for(namespace: str, ref: StorageAccountRef) -> BlobAccount:
    if ref.secret_ref is not None:
        return BlobAccount(connection_string=secret_value(namespace, ref.secret_ref))
    assert ref.blob_endpoint is not None  # the CRD's CEL rule: blobEndpoint comes with workloadIdentity
    return BlobAccount(
        endpoint=ref.blob_endpoint, credential=DefaultAzureCredential(), async_credential=AsyncDefaultAzureCredential
    )
