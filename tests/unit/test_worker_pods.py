"""The worker pods the operator builds: ownership, security and how credentials reach them."""

from __future__ import annotations

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.kinds import BLOB_COPY
from ferry.controllers.blobcopy import worker_env
from ferry.kube.objects import worker_pod

DEST = {"account": {"secretRef": {"name": "dst", "key": "connectionString"}}, "container": "abc"}


def test_worker_pod_is_owned_restricted_and_bounded() -> None:
    pod = worker_pod(
        kind=BLOB_COPY,
        owner_name="x" * 80,
        owner_uid="uid-1",
        namespace="ns",
        role="copy",
        image="ferry:test",
        service_account="ferry-worker",
        args=["blobcopy", "--namespace", "ns", "--name", "n"],
        requests={"cpu": "250m", "memory": "256Mi"},
    )
    meta = pod["metadata"]
    assert len(meta["generateName"]) + 5 <= 63
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "BlobCopy",
            "name": "x" * 80,
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["ferry"] and container["args"][0] == "worker"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}


def test_credentials_are_secret_references_never_values() -> None:
    spec = BlobCopySpec.model_validate(
        {
            "source": {"account": {"secretRef": {"name": "src", "key": "cs"}}, "container": "abc", "blob": "b"},
            "destination": DEST,
        }
    )
    env = worker_env(spec)
    assert all("value" not in e for e in env)
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in env} == {
        "FERRY_SOURCE_CONNECTION_STRING": "src",
        "FERRY_DESTINATION_CONNECTION_STRING": "dst",
    }
    sas = BlobCopySpec.model_validate({"source": {"urlSecretRef": {"name": "sas", "key": "url"}}, "destination": DEST})
    assert worker_env(sas)[0]["valueFrom"]["secretKeyRef"] == {"name": "sas", "key": "url", "optional": False}
