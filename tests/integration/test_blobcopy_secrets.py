"""No key, connection string or SAS signature reaches a report, an exception or a log record."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from azure.storage.blob import BlobLeaseClient, BlobSasPermissions, generate_blob_sas

from ferry.kinds.blobcopy.engine import Endpoints, run_copy

pytestmark = pytest.mark.integration


def test_no_secrets_anywhere(
    src_account, dst_account, src_container, dst_container, new_reports, make_spec, fault_proxy, proxied, caplog
):
    caplog.set_level(logging.DEBUG, logger="ferry")
    caplog.set_level(logging.DEBUG, logger="azure")
    src_container.upload_blob("ok.bin", b"payload")
    src_container.upload_blob("moving.bin", b"one")
    dst_container.upload_blob("leased.bin", b"theirs")
    foreign = BlobLeaseClient(dst_container.get_blob_client("leased.bin"))
    foreign.acquire(lease_duration=-1)

    good = generate_blob_sas(
        src_account.name,
        src_container.container_name,
        "ok.bin",
        account_key=src_account.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = parse_qs(good)["sig"][0]
    bad = good.replace(signature, "A" * len(signature))  # a forged signature
    bad_url = f"{src_container.get_blob_client('ok.bin').url}?{bad}"

    def rewrite_source(method: str, path: str, headers: dict[str, str]) -> None:
        if method == "PUT" and "x-ms-copy-source" in headers:
            src_container.get_blob_client("moving.bin").upload_blob(b"two", overwrite=True)

    direct = Endpoints(src_account.connection_string, None, dst_account.connection_string)
    behind_proxy = Endpoints(proxied(src_account, fault_proxy), None, proxied(dst_account, fault_proxy))
    url_source = {"urlSecretRef": {"name": "u", "key": "url"}}
    cases: list[tuple[str, dict[str, Any], Endpoints, str | None]] = [
        ("bad SAS, ServerSide", url_source, Endpoints(None, bad_url, dst_account.connection_string), "ServerSide"),
        ("bad SAS, Stream", url_source, Endpoints(None, bad_url, dst_account.connection_string), "Stream"),
        ("missing blob", {"container": src_container.container_name, "blob": "absent.bin"}, direct, None),
        ("lease conflict", {"container": src_container.container_name, "blob": "ok.bin"}, direct, "leased.bin"),
        ("good copy", {"container": src_container.container_name, "blob": "ok.bin"}, direct, "copied.bin"),
    ]
    texts: list[str] = []
    outcomes = []
    for label, source, ep, extra in cases:
        mode = extra if extra in ("ServerSide", "Stream") else "ServerSide"
        destination: dict[str, Any] = {"container": dst_container.container_name}
        if extra not in (None, "ServerSide", "Stream"):
            destination["blob"] = extra
        spec = make_spec(source=source, destination=destination, mode=mode)
        reports = new_reports()
        try:
            outcomes.append((label, run_copy(spec, None, ep, reports, threading.Event(), label)))
        except Exception as error:  # a raised text must be as clean as a reported one
            texts.append(f"{type(error).__name__}: {error}")
        texts.extend(str(patch) for patch in reports.patches)

    fault_proxy.hook = rewrite_source
    spec = make_spec(
        source={"container": src_container.container_name, "blob": "moving.bin"},
        destination={"container": dst_container.container_name},
        mode="ServerSide",
    )
    reports = new_reports()
    outcomes.append(("source changed", run_copy(spec, None, behind_proxy, reports, threading.Event(), "changed")))
    texts.extend(str(patch) for patch in reports.patches)
    foreign.release()

    reasons = {label: o.failure.reason if o.failure else None for label, o in outcomes}
    assert reasons["missing blob"] == "SourceNotFound"
    assert reasons["lease conflict"] == "LeaseConflict"
    assert reasons["source changed"] == "SourceChanged"
    assert reasons["good copy"] is None
    # Azurite (as pinned) accepts the forged signature, so the bad-SAS copies may succeed there;
    # what matters here is that neither signature shows up in what they produced.
    texts.extend(str(o.failure) for _, o in outcomes if o.failure)
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(str(record.args) for record in caplog.records if record.args)
    assert len(caplog.records) > 0  # the SDK did log, so the check below means something
    for text in texts:
        for secret in (src_account.key, dst_account.key, "AccountKey=", "sig=" + signature, signature, good, bad):
            assert secret not in text, text
        assert "sig=" not in text.replace("sig=***", "").replace("sig=REDACTED", ""), text
