"""Secrets stay out of what the workers report, and the cost of keeping them out does not grow with the copy."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from azure.storage.blob import BlobClient

from ferry.storage import blobs
from ferry.storage.blobs import read_sas_url, redact

KEY = "a2V5a2V5a2V5a2V5a2V5a2V5"
CONNECTION = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"


def _sas_url(name: str) -> str:
    return read_sas_url(BlobClient.from_connection_string(CONNECTION, "box", name), KEY, timedelta(hours=1))


def test_a_per_blob_sas_is_redacted_plain_and_percent_encoded() -> None:
    url = _sas_url("a/b.txt")
    signature = url.split("sig=")[1].split("&")[0]
    for text in (
        f"copy from {url} failed",
        f"CannotVerifyCopySource: x-ms-copy-source {url}",
        f"https://other/x?source={quote(url, safe='')} refused",
    ):
        shown = redact(text)
        assert signature not in shown and quote(signature, safe="") not in shown, shown


def test_per_blob_sas_urls_do_not_grow_what_every_redaction_goes_through() -> None:
    before = len(blobs._SECRETS)
    for i in range(1000):
        _sas_url(f"blob-{i}")
    assert len(blobs._SECRETS) == before
