"""A storage account Ferry reads or writes blobs in: by a connection string in a Secret, or by its blob endpoint and
a Microsoft Entra workload identity (no key anywhere)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ferry.api.common import FerryModel, SecretKeySelector, no_credentials_in_url
from ferry.api.identity import WorkloadIdentity


class StorageAccountRef(FerryModel):
    """A storage account: a Secret key holding its connection string, or its blob endpoint and a workload
    identity with a Storage Blob Data role on it."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.secretRef) != has(self.workloadIdentity)",
            "message": "give exactly one of secretRef (a connection string) and workloadIdentity",
        },
        {
            "rule": "has(self.workloadIdentity) == has(self.blobEndpoint)",
            "message": "blobEndpoint is required with workloadIdentity (a connection string names its own endpoint)",
            "fieldPath": ".blobEndpoint",
        },
        no_credentials_in_url("blobEndpoint", "blobEndpoint must not carry credentials (user:password@host)"),
    ]

    secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the account's connection string "
        "(DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;BlobEndpoint=...).",
    )
    blob_endpoint: str | None = Field(
        default=None,
        pattern=r"^https://[^?#]+$",
        max_length=2048,
        description="With workloadIdentity: the account's blob endpoint, https://ACCOUNT.blob.core.windows.net/ "
        "(tokens are only sent over HTTPS).",
    )
    workload_identity: WorkloadIdentity | None = Field(
        default=None,
        description="The Entra identity Ferry's worker pods authenticate as; it needs a federated credential for "
        "the worker service account and a Storage Blob Data role on the account (see docs/workload-identity.md).",
    )
