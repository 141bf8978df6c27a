"""What the API server refuses since the user trial, naming the field, and what `kubectl get` shows: through the
real kubectl, against the generated CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from support.kubectl import Kubectl

pytestmark = [pytest.mark.e2e]

SECRET = {"secretRef": {"name": "s", "key": "k"}}
KINDS = "blobcopy,databaseaccount,inaccountrestore,containercopyjob"


def manifest(kind: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "ferry.dev/v1alpha1", "kind": kind, "metadata": {"name": "finding"}, "spec": spec}
    )


def restore(**spec: Any) -> str:
    return manifest("InAccountRestore", {"accountRef": {"name": "a"}, "database": "shop", **spec})


def copy_job(source: dict[str, str], destination: dict[str, str]) -> str:
    return manifest("ContainerCopyJob", {"accountRef": {"name": "a"}, "source": source, "destination": destination})


def blobcopy(destination_container: str, source: dict[str, Any] | None = None) -> str:
    spec = {
        "source": source or {"url": "https://example.org/a.bin"},
        "destination": {"account": SECRET, "container": destination_container},
    }
    return manifest("BlobCopy", spec)


def account(endpoint: str = "https://a.documents.azure.com/", **spec: Any) -> str:
    return manifest("DatabaseAccount", {"endpoint": endpoint, "credentials": SECRET, **spec})


COSMOS = "Cosmos DB refuses this name"
STORAGE = "Azure Storage refuses this container name"
ORDERS = {"database": "shop", "container": "orders"}


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (restore(container="orders", target={"database": "shop", "container": "orders/2026"}),
         "spec.target.container", COSMOS),
        (restore(container="orders", target={"database": "sh#op", "container": "orders"}),
         "spec.target.database", COSMOS),
        (restore(container="what?"), "spec.container", COSMOS),
        (restore(database="trailing "), "spec.database", COSMOS),
        (copy_job({"database": "shop", "container": "a\\b"}, ORDERS), "spec.source.container", COSMOS),
        (copy_job(ORDERS, {"database": "shop/x", "container": "orders"}), "spec.destination.database", COSMOS),
        (blobcopy("Bad_Container!"), "spec.destination.container", STORAGE),
        (blobcopy("ok-dst", {"account": SECRET, "container": "a--b"}), "spec.source.container", STORAGE),
        (account(backup={"mode": "Continuous", "tier": "Continuous7Days",
                          "location": {"account": SECRET, "container": "Backups"}}),
         "spec.backup.location.container", STORAGE),
        (account("https://user:password@a.documents.azure.com:443/"), "spec.endpoint", "credentials.secretRef"),
    ],
    ids=[
        "restore-target-container-slash",
        "restore-target-database-hash",
        "restore-container-question-mark",
        "restore-database-trailing-space",
        "copy-source-backslash",
        "copy-destination-database-slash",
        "blob-destination-container",
        "blob-source-container-double-hyphen",
        "backup-location-container-uppercase",
        "endpoint-with-credentials",
    ],
)  # fmt: skip
def test_the_api_refuses_naming_the_field(kubectl: Kubectl, text: str, field: str, words: str) -> None:
    done = kubectl.run("apply", "-f", "-", stdin=text, check=False)
    assert done.returncode != 0, "the API server accepted it"
    assert field in done.stderr and words in done.stderr, done.stderr
    assert kubectl.run("get", KINDS, "-o", "name", check=False).stdout == ""  # nothing stored


def test_valid_names_are_accepted_and_the_reason_is_a_default_column(kubectl: Kubectl) -> None:
    kubectl.apply(restore(container="orders 2026", target={"database": "shop", "container": "orders-back_1.0"}))
    kubectl.apply(copy_job(ORDERS, {"database": "shop", "container": "Orders Copy"}))
    kubectl.apply(blobcopy("backups-2026").replace("spec:\n", "spec:\n  suspend: true\n"))
    for kind in ("inaccountrestores", "containercopyjobs", "blobcopies"):
        header = kubectl("get", kind).splitlines()[0].split()
        assert header[-2:] == ["REASON", "AGE"], header
    kubectl("delete", KINDS, "--all", "--wait=false")
