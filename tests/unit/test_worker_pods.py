"""The worker pods the operator builds: ownership, security and how credentials reach them."""

from __future__ import annotations

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.kinds import BLOB_COPY
from ferry.kinds.blobcopy.controller import worker_env
from ferry.kube.manifests import pod_name, worker_pod

DEST = {"account": {"secretRef": {"name": "dst", "key": "connectionString"}}, "container": "abc"}


def test_worker_pod_is_owned_restricted_and_bounded() -> None:
    pod = worker_pod(
        kind=BLOB_COPY,
        owner_name="x" * 80,
        owner_uid="uid-1",
        namespace="ns",
        role="copy",
        name=pod_name("x" * 80, "copy", 1),
        image="ferry:test",
        service_account="ferry-worker",
        args=["blobcopy", "--namespace", "ns", "--name", "n"],
        requests={"cpu": "250m", "memory": "256Mi"},
    )
    meta = pod["metadata"]
    assert len(meta["name"]) <= 63 and meta["name"].endswith("-copy-1")
    assert pod_name("x" * 80, "copy", 1) != pod_name("x" * 79 + "y", "copy", 1)  # shortened, still unique
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
    # The worker's last log line is its outcome: the kubelet copies a failed container's log tail.
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


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


def test_the_operator_passes_its_link_local_setting_to_workers_only_when_set() -> None:
    from ferry.api.blobcopy import ALLOW_LINK_LOCAL_ENV
    from ferry.storage.addresses import link_local_addresses

    spec = BlobCopySpec.model_validate(
        {"source": {"url": "http://169.254.169.254/x"}, "destination": {"account": {"secretRef": {"name": "d",
         "key": "k"}}, "container": "dst"}}
    )  # fmt: skip
    assert ALLOW_LINK_LOCAL_ENV not in [e["name"] for e in worker_env(spec)]
    assert {"name": ALLOW_LINK_LOCAL_ENV, "value": "true"} in worker_env(spec, allow_link_local_sources=True)
    assert link_local_addresses("http://169.254.169.254/latest") == ["169.254.169.254"]
    assert link_local_addresses("http://[fe80::1]:80/") == ["fe80::1"]
    assert link_local_addresses("https://127.0.0.1:10000/devstoreaccount1") == []
