"""Content-MD5 verification of a copied blob."""

from __future__ import annotations

import base64
import hashlib

from azure.storage.blob import BlobClient

from ferry.kinds.blobcopy.items import BlobFailure, CopyItem
from ferry.storage.sources import SourceObject, read_range

CHUNK = 8 * 1024 * 1024


def md5_of_blob(target: BlobClient | SourceObject) -> bytes:
    """MD5 of the full content, computed by reading it (sources stay pinned to their ETag)."""
    md5 = hashlib.md5(usedforsecurity=False)
    if isinstance(target, SourceObject):
        for offset in range(0, target.size, CHUNK):
            md5.update(read_range(target, offset, min(CHUNK, target.size - offset)))
    else:
        for chunk in target.download_blob(max_concurrency=4).chunks():
            md5.update(chunk)
    return md5.digest()


def verify_md5(item: CopyItem, expected: bytes, actual: bytes) -> None:
    if expected != actual:
        raise BlobFailure(
            "ContentMD5Mismatch",
            f"destination blob {item.dest_name} has Content-MD5 {base64.b64encode(actual).decode()} but the "
            f"source {item.source.display_url} has {base64.b64encode(expected).decode()}",
        )


def verify_server_copy(item: CopyItem) -> None:
    """After a server-side copy: compare stored MD5s, computing a missing one by download."""
    dest_md5 = item.dest.get_blob_properties().content_settings.content_md5
    expected = item.source.content_md5 or md5_of_blob(item.source)
    actual = bytes(dest_md5) if dest_md5 else md5_of_blob(item.dest)
    verify_md5(item, expected=expected, actual=actual)
