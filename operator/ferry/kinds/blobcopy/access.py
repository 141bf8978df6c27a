"""Resolving a BlobCopy to its manifest with the caller's own Kubernetes credentials (for the CLI)."""

from __future__ import annotations

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.kinds import BLOB_COPY
from ferry.kinds.blobcopy.manifest import Manifest
from ferry.kube.client import ObjectRef
from ferry.kube.secrets import secret_value
from ferry.storage import blobs


def manifest_for(namespace: str, name: str) -> Manifest:
    """The manifest the BlobCopy's workers keep in its destination account (read with the destination Secret)."""
    obj = ObjectRef(BLOB_COPY, namespace, name).get()
    spec = BlobCopySpec.model_validate(obj["spec"])
    connection = secret_value(namespace, spec.destination.account.secret_ref)
    return Manifest(blobs.service_client(connection), obj["metadata"]["uid"], f"{namespace}/{name}")
