"""Read-only SAS URLs for test blobs, as a client hands a source to Copy Blob."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

from ferry_dev.emulators import StorageAccount


def read_url(account: StorageAccount, blob: BlobClient, valid: timedelta = timedelta(hours=1)) -> str:
    """The blob's URL with a SAS that lets its holder read it (and nothing else) for `valid`."""
    token = generate_blob_sas(
        account.name,
        blob.container_name,
        blob.blob_name,
        account_key=account.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + valid,
    )
    return f"{blob.url}?{token}"
