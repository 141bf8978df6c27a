"""Resolving a BlobCopy to its manifest with the caller's own Kubernetes credentials (for the CLI)."""

from __future__ import annotations

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.kinds import BLOB_COPY
from ferry.kinds.blobcopy.manifest import Manifest
from ferry.kube.client import ObjectRef
from ferry.kube.storageaccess import blob_account_for


def manifest_for(namespace: str, name: str) -> Manifest:
    """The manifest the BlobCopy's workers keep in its destination account (read with the
    destination's Secret, or the caller's Entra login)."""
    obj = ObjectRef(BLOB_COPY, namespace, name).get()
    spec = BlobCopySpec.model_validate(obj["spec"])
    account = blob_account_for(namespace, spec.destination.account)
    return Manifest(account.service_client(), obj["metadata"]["uid"], f"{namespace}/{name}")
