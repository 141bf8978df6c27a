"""Input the API server refuses, naming the field: through the real kubectl, against the generated CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ferry_dev.stack import DevStack
from support.kubectl import Kubectl

pytestmark = [pytest.mark.e2e]

SECRET = {"secretRef": {"name": "s", "key": "k"}}
SAME = {"account": SECRET, "container": "same"}


def blobcopy(source: dict[str, Any], destination: dict[str, Any] | None = None, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "BlobCopy",
            "metadata": {"name": "hostile"},
            "spec": {"source": source, "destination": destination or {"account": SECRET, "container": "dst"}, **spec},
        }
    )


def account(**spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "DatabaseAccount",
            "metadata": {"name": "hostile"},
            "spec": {"endpoint": "https://a.documents.azure.com/", "credentials": SECRET, **spec},
        }
    )


def refused(kubectl: Kubectl, manifest: str) -> str:
    done = kubectl.run("apply", "-f", "-", stdin=manifest, check=False)
    assert done.returncode != 0, "the API server accepted it"
    assert kubectl.run("get", "blobcopy,databaseaccount", "-o", "name", check=False).stdout == ""  # nothing stored
    return done.stderr


@pytest.mark.parametrize(
    ("manifest", "field", "words"),
    [
        (blobcopy({"url": "https://example.com/" + "a" * 600_000}), "spec.source.url", "Too long"),
        (account(endpoint="https://" + "a" * 5000), "spec.endpoint", "Too long"),
        (account(regionPollInterval="0s"), "spec.regionPollInterval", "from 1s to 24h"),
        (account(idleTimeout="99999999999999999999h"), "spec.idleTimeout", ""),
        (account(regionPollInterval="1" * 40 + "s"), "spec.regionPollInterval", "Too long"),
        (blobcopy({"url": "https://a.b/c"}, maxLifetime="0.5ms"), "spec.maxLifetime", "from 1s to 8760h"),
        (
            account(backup={"mode": "Continuous", "tier": "Continuous7Days", "captureInterval": "2h",
                             "location": {"account": SECRET, "container": "backups"}}),
            "spec.backup.captureInterval",
            "from 1s to 1h",
        ),
        (blobcopy({"url": "https://user:secret@example.com/a.bin"}), "spec.source.url", "urlSecretRef"),
        (blobcopy({**SAME, "prefix": "p/"}, workers=0), "spec.workers", "greater than or equal to 1"),
        (blobcopy({**SAME, "prefix": "p/"}, workers=10000), "spec.workers", "less than or equal to 64"),
        (blobcopy({**SAME, "prefix": "p/"}, parallelism=0), "spec.parallelism", "greater than or equal to 1"),
        (blobcopy({**SAME, "prefix": "p/"}, parallelism=65), "spec.parallelism", "less than or equal to 64"),
        (
            blobcopy({**SAME, "blob": "a.bin"}, SAME),
            "spec.destination",
            "the destination is the source",
        ),
        (
            blobcopy({**SAME, "prefix": "p/"}, SAME),
            "spec.destination",
            "the destination is the source",
        ),
    ],
    ids=[
        "600KB-url",
        "long-endpoint",
        "zero-poll-interval",
        "overflowing-duration",
        "long-duration",
        "sub-second-lifetime",
        "capture-interval-over-an-hour",
        "credentials-in-url",
        "zero-workers",
        "ten-thousand-workers",
        "zero-parallelism",
        "parallelism-over-64",
        "blob-onto-itself",
        "prefix-onto-itself",
    ],
)  # fmt: skip
def test_the_api_refuses_naming_the_field(kubectl: Kubectl, manifest: str, field: str, words: str) -> None:
    error = refused(kubectl, manifest)
    assert field in error and words in error, error


def test_a_copy_to_another_name_in_the_same_container_is_accepted(kubectl: Kubectl) -> None:
    manifest = blobcopy(
        {"account": SECRET, "container": "same", "blob": "a.bin"},
        {"account": SECRET, "container": "same", "blob": "b.bin"},
        suspend=True,
    )
    kubectl.apply(manifest)
    kubectl("delete", "blobcopy", "hostile")


def test_a_source_url_on_a_link_local_address_is_refused_by_the_worker(stack: DevStack, kubectl: Kubectl) -> None:
    assert stack.azurite is not None
    destination = stack.azurite.accounts["ferrydst"].connection_string
    kubectl("create", "secret", "generic", "s", f"--from-literal=k={destination}")
    metadata = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
    kubectl.apply(blobcopy({"url": metadata}, mode="Stream"))
    failure = kubectl.wait_phase("blobcopy", "hostile", "Failed", timeout=90)["status"]["failure"]
    assert failure["reason"] == "SourceAddressNotAllowed"
    assert "169.254.169.254" in failure["message"] and "allowLinkLocalSources" in failure["message"]
