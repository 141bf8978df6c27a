"""Infinite leases Ferry takes on sources and destinations, with ids derived from the copy id.

Deriving the lease id from the copy id lets a restarted worker, and cleanup(), recognise and
release the leases Ferry took without storing them anywhere else.
"""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient

from ferry.kinds.blobcopy.items import lease_conflict
from ferry.storage.sources import APPEND_BLOB, PAGE_BLOB


def acquire(client: BlobClient, lease_id: str, what: str) -> None:
    lease = BlobLeaseClient(client, lease_id=lease_id)
    try:
        lease.acquire(lease_duration=-1)
    except HttpResponseError as error:
        if error.status_code != 409:
            raise
        try:  # already leased: ours if our id renews it
            lease.renew()
        except HttpResponseError as renew_error:
            if renew_error.status_code in (409, 412):
                raise lease_conflict(what, error) from None
            raise


def release(client: BlobClient, lease_id: str) -> bool:
    """Release our lease; False when there was none of ours (idempotent)."""
    try:
        BlobLeaseClient(client, lease_id=lease_id).release()
        return True
    except HttpResponseError as error:
        if error.status_code in (404, 409, 412):
            return False
        raise


def ensure_destination(client: BlobClient, blob_type: str) -> bool:
    """Create an empty destination of the source's type if none exists; True when created."""
    try:
        if blob_type == PAGE_BLOB:
            client.create_page_blob(0, match_condition=MatchConditions.IfMissing)
        elif blob_type == APPEND_BLOB:
            client.create_append_blob(match_condition=MatchConditions.IfMissing)
        else:
            client.upload_blob(b"", overwrite=False)
        return True
    except ResourceExistsError:
        return False
    except HttpResponseError as error:
        if error.status_code in (409, 412):
            return False
        raise


def lock_destination(client: BlobClient, blob_type: str, lease_id: str) -> bool:
    created = ensure_destination(client, blob_type)
    acquire(client, lease_id, f"destination blob {client.blob_name}")
    return created
