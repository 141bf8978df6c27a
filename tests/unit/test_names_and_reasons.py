"""Names the services refuse are refused at apply, credentials stay out of endpoints, times are written in UTC,
and `kubectl get` says why an object failed without `-o wide`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.common import BLOB_CONTAINER_NAME, COSMOS_NAME
from ferry.api.containercopyjob import ContainerCopyJobSpec
from ferry.api.crdgen import crd_for
from ferry.api.databaseaccount import DatabaseAccountSpec
from ferry.api.inaccountrestore import InAccountRestoreSpec, RestoreProgress
from ferry.api.kinds import ALL_KINDS, BLOB_COPY, CONTAINER_COPY_JOB, DATABASE_ACCOUNT, IN_ACCOUNT_RESTORE, Kind

SECRET = {"secretRef": {"name": "s", "key": "k"}}
REFUSED_BY_COSMOS = ["a/b", "a\\b", "what?", "#1", "trailing ", "tab\there", "line\nbreak"]
ACCEPTED_BY_COSMOS = ["orders", "Orders 2026", "a-b_c.d", "zürich", "x" * 255]
REFUSED_BY_STORAGE = ["Bad_Container!", "UPPER", "a--b", "-ab", "ab-", "a.b", "a b"]
ACCEPTED_BY_STORAGE = ["abc", "a-b-c", "backups-2026", "0" * 63]


def spec_schema(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any] = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema


def cel_pattern(field: dict[str, Any]) -> str:
    """The regular expression of the field's `self.matches(r'...')` rule (the form the API server evaluates)."""
    rules = [r["rule"] for r in field.get("x-kubernetes-validations", [])]
    found = [m.group(1) for rule in rules if (m := re.fullmatch(r"self\.matches\(r'(.*)'\)", rule))]
    assert len(found) == 1, rules
    return found[0]


COSMOS_FIELDS = [
    (IN_ACCOUNT_RESTORE, "database"),
    (IN_ACCOUNT_RESTORE, "container"),
    (IN_ACCOUNT_RESTORE, "target.database"),
    (IN_ACCOUNT_RESTORE, "target.container"),
    (CONTAINER_COPY_JOB, "source.database"),
    (CONTAINER_COPY_JOB, "source.container"),
    (CONTAINER_COPY_JOB, "destination.database"),
    (CONTAINER_COPY_JOB, "destination.container"),
]
BLOB_CONTAINER_FIELDS = [
    (BLOB_COPY, "source.container"),
    (BLOB_COPY, "destination.container"),
    (DATABASE_ACCOUNT, "backup.location.container"),
]


@pytest.mark.parametrize(("kind", "path"), COSMOS_FIELDS, ids=lambda x: getattr(x, "kind", x))
def test_every_cosmos_name_field_refuses_what_cosmos_refuses(kind: Kind, path: str) -> None:
    field = at(spec_schema(kind), path)
    assert field["maxLength"] == 255
    pattern = cel_pattern(field)
    for name in REFUSED_BY_COSMOS:
        assert not re.fullmatch(pattern, name), name
    for name in ACCEPTED_BY_COSMOS:
        assert re.fullmatch(pattern, name), name
    message = field["x-kubernetes-validations"][0]["message"]
    assert "'/'" in message and "end with a space" in message


def test_no_cosmos_name_field_is_left_without_the_rule() -> None:
    """Any string field called database or container in the Cosmos kinds carries the rule."""
    found = []

    def walk(schema: dict[str, Any], path: str) -> None:
        for name, sub in (schema.get("properties") or {}).items():
            where = f"{path}.{name}" if path else name
            if name in ("database", "container") and sub.get("type") == "string":
                found.append(where)
                assert cel_pattern(sub) == COSMOS_NAME.pattern, where
            walk(sub, where)

    for kind in (IN_ACCOUNT_RESTORE, CONTAINER_COPY_JOB):
        walk(spec_schema(kind), "")
    assert len(found) == len(COSMOS_FIELDS)


@pytest.mark.parametrize(("kind", "path"), BLOB_CONTAINER_FIELDS, ids=lambda x: getattr(x, "kind", x))
def test_every_blob_container_field_refuses_what_azure_storage_refuses(kind: Kind, path: str) -> None:
    field = at(spec_schema(kind), path)
    assert (field["minLength"], field["maxLength"]) == (3, 63)
    pattern = cel_pattern(field)
    assert pattern == BLOB_CONTAINER_NAME.pattern
    for name in REFUSED_BY_STORAGE:
        assert not re.fullmatch(pattern, name), name
    for name in ACCEPTED_BY_STORAGE:
        assert re.fullmatch(pattern, name), name


@pytest.mark.parametrize("name", REFUSED_BY_COSMOS)
def test_the_models_refuse_cosmos_names_too(name: str) -> None:
    with pytest.raises(ValidationError, match="Cosmos DB refuses this name"):
        InAccountRestoreSpec.model_validate(
            {"accountRef": {"name": "a"}, "database": "shop", "container": "orders",
             "target": {"database": "shop", "container": name}}
        )  # fmt: skip
    with pytest.raises(ValidationError, match="Cosmos DB refuses this name"):
        ContainerCopyJobSpec.model_validate(
            {"accountRef": {"name": "a"}, "source": {"database": "shop", "container": "orders"},
             "destination": {"database": name, "container": "orders"}}
        )  # fmt: skip


def test_the_models_refuse_blob_container_names_too() -> None:
    with pytest.raises(ValidationError, match="refuses this container name"):
        BlobCopySpec.model_validate(
            {"source": {"url": "https://example.org/a"}, "destination": {"account": SECRET, "container": "Bad_C!"}}
        )


def test_an_endpoint_with_credentials_is_refused_like_a_blobcopy_url() -> None:
    account_rules = spec_schema(DATABASE_ACCOUNT)["x-kubernetes-validations"]
    source_rules = at(spec_schema(BLOB_COPY), "source")["x-kubernetes-validations"]
    endpoint = next(r for r in account_rules if r.get("fieldPath") == ".endpoint")
    url = next(r for r in source_rules if r.get("fieldPath") == ".url")
    assert endpoint["rule"] == url["rule"].replace("url", "endpoint")
    assert "credentials.secretRef" in endpoint["message"]
    pattern = re.search(r"matches\('(.*)'\)", endpoint["rule"])
    assert pattern is not None
    assert re.search(pattern.group(1), "https://user:password@a.documents.azure.com:443/")
    assert not re.search(pattern.group(1), "https://a.documents.azure.com:443/?x=@")
    # The model alone does not refuse it (objects stored before the rule still load); the API server does.
    DatabaseAccountSpec.model_validate({"endpoint": "https://a.documents.azure.com/", "credentials": SECRET})


def test_times_written_to_status_are_in_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    progress = RestoreProgress.model_validate(
        {"restoreTimestamp": "2026-11-22T12:15:00+02:00", "transfer": {"state": "Running",
                                                                      "startTime": "2026-11-22T12:16:00+02:00"}}
    )  # fmt: skip
    progress.last_update_time = datetime(2026, 11, 22, 12, 17, tzinfo=plus_two)  # set after validation, too
    wire = progress.wire()
    assert wire["restoreTimestamp"] == "2026-11-22T10:15:00Z"
    assert wire["transfer"]["startTime"] == "2026-11-22T10:16:00Z"
    assert wire["lastUpdateTime"] == "2026-11-22T10:17:00Z"
    assert progress.restore_timestamp == datetime(2026, 11, 22, 10, 15, tzinfo=UTC)  # the same instant, unchanged


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_the_reason_is_a_default_column_of_every_kind(kind: Kind) -> None:
    columns = crd_for(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    reason = [c for c in columns if c["name"] == "Reason"]
    assert len(reason) == 1 and "priority" not in reason[0], columns
    if kind is DATABASE_ACCOUNT:
        assert reason[0]["jsonPath"] == '.status.conditions[?(@.status=="False")].reason'
    else:
        assert reason[0]["jsonPath"] == ".status.failure.reason"
    assert columns[-1]["name"] == "Age"
