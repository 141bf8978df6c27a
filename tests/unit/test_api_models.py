"""The API models: defaults, validation and the CRDs generated from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.common import parse_duration
from ferry.api.crdgen import crd_for
from ferry.api.kinds import ALL_KINDS, BLOB_COPY

ACCOUNT = {"secretRef": {"name": "dst", "key": "connectionString"}}


def test_durations_parse_like_go() -> None:
    assert parse_duration("336h") == timedelta(days=14)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("14 days")


def test_blobcopy_defaults_follow_the_seed() -> None:
    spec = BlobCopySpec.model_validate(
        {"source": {"url": "https://example.org/a.bin"}, "destination": {"account": ACCOUNT, "container": "abc"}}
    )
    assert spec.mode == "ServerSide"
    assert spec.overwrite == "Always"
    assert spec.block_size_mi_b == 4
    assert parse_duration(spec.max_lifetime) == timedelta(days=14)


def test_unknown_fields_and_bad_enums_are_refused() -> None:
    with pytest.raises(ValidationError):
        BlobCopySpec.model_validate(
            {"source": {"url": "https://x/y"}, "destination": {"account": ACCOUNT, "container": "abc"}, "colour": 1}
        )
    with pytest.raises(ValidationError):
        BlobCopySpec.model_validate(
            {"source": {"url": "https://x/y"}, "destination": {"account": ACCOUNT, "container": "abc"}, "mode": "Fast"}
        )


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_crds_are_structural(kind: object) -> None:
    crd = crd_for(kind)  # type: ignore[arg-type]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["ferry"]

    def walk(schema: dict[str, object], path: str) -> None:
        assert "$ref" not in schema and "anyOf" not in schema, path
        assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), path
        for name, sub in dict(schema.get("properties", {})).items():  # type: ignore[call-overload]
            walk(sub, f"{path}.{name}")
        if isinstance(schema.get("items"), dict):
            walk(schema["items"], f"{path}[]")  # type: ignore[arg-type]

    walk(version["schema"]["openAPIV3Schema"], "")


def test_blobcopy_crd_carries_enums_immutability_and_columns() -> None:
    version = crd_for(BLOB_COPY)["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["mode"]["enum"] == ["ServerSide", "Stream"]
    assert spec["properties"]["overwrite"]["enum"] == ["Always", "Never", "IfSourceNewer"]
    assert {"rule": "self.source == oldSelf.source", "message": "source is immutable"} in spec[
        "x-kubernetes-validations"
    ]
    assert spec["required"] == ["source", "destination"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Status"] == ".status.copyStatus"
    assert columns["Progress"] == ".status.progress"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_blobcopy_parallelism_and_status_failures_are_bounded_in_the_crd() -> None:
    version = crd_for(BLOB_COPY)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    parallelism = schema["spec"]["properties"]["parallelism"]
    assert (parallelism["minimum"], parallelism["maximum"]) == (1, 64)  # the API server refuses others, naming it
    assert schema["status"]["properties"]["failures"]["maxItems"] == 5
    blobs = schema["status"]["properties"]["blobs"]["properties"]
    assert blobs["listing"]["type"] == "boolean" and blobs["listed"]["type"] == "integer"


def test_the_blobcopy_failures_command_parses() -> None:
    from ferry.cli.main import build_parser

    args = build_parser().parse_args(["blobcopy", "failures", "photos", "-n", "media"])
    assert (args.name, args.namespace, args.func.__name__) == ("photos", "media", "_cmd_blobcopy_failures")


def test_durations_are_bounded_in_the_models_too() -> None:
    from ferry.api.databaseaccount import DatabaseAccountSpec

    base = {"endpoint": "https://a.documents.azure.com/", "credentials": {"secretRef": {"name": "s", "key": "k"}}}
    assert DatabaseAccountSpec.model_validate({**base, "regionPollInterval": "1h30m"}).region_poll_interval == "1h30m"
    for bad in ("0s", "25h", "99999999999999999999h", "1" * 40 + "s"):
        with pytest.raises(ValidationError, match=r"regionPollInterval|region_poll_interval"):
            DatabaseAccountSpec.model_validate({**base, "regionPollInterval": bad})


def test_messages_escape_control_and_formatting_characters() -> None:
    from ferry.api.common import Condition, Failure, printable
    from ferry.kube.events import event_body

    assert printable("a\u202eb\u200bc\x1b[31md\ne\tf") == "a\\u202eb\\u200bc\\u001b[31md\ne\tf"
    assert printable("naïve 日本 ✓") == "naïve 日本 ✓"
    assert Failure(reason="X", message="x\u202ey").message == "x\\u202ey"
    when = "2026-11-21T12:00:00Z"
    assert (
        Condition.model_validate(
            {"type": "Ready", "status": "False", "reason": "X", "message": "\u2066y", "lastTransitionTime": when}
        ).message
        == "\\u2066y"
    )
    involved = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "u"}}
    assert event_body(involved, "X", "z\u202e", warning=False)["message"] == "z\\u202e"
