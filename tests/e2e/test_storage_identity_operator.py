"""Storage accounts reached by Microsoft Entra workload identities, end to end: BlobCopy sources and destinations
and a backup location with no key anywhere.

The accounts are an Azurite of the test's own in OAuth mode (HTTPS, bearer tokens accepted; it checks a token's
issuer, audience and lifetime, not role assignments); the tokens come from the Entra stand-in (support/entra.py),
which exchanges the worker pods' projected service account tokens after checking them against the local API
server's service account issuer and the identity's federated credentials. A copy can only succeed by tokens: the
pods are given no key, no connection string and no SAS.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from blobcopy_fixtures import blobcopy_yaml
from identity_fixtures import DEFAULT_CLIENT_ID, subject
from restore_fixtures import INTERVAL, OwnCosmos, backed_up_account, captured

from ferry_dev.emulators import Azurite
from ferry_dev.stack import DevStack
from support.entra import EntraStandIn
from support.kubectl import Kubectl, with_reasons
from support.storage_rbac import StorageRbac

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # cosmosdb-server's certificate
]

STORAGE_SCOPE = "https://storage.azure.com/.default"


def _service(stack: DevStack, azurite: Azurite, account: str) -> BlobServiceClient:
    """The test's own client (by key), trusting the stack's CA as the workers do."""
    assert stack.control_plane is not None and stack.control_plane.authority is not None
    ca = str(stack.control_plane.authority.cert)
    return BlobServiceClient.from_connection_string(azurite.accounts[account].connection_string, connection_verify=ca)


def _container(
    stack: DevStack, azurite: Azurite, account: str, blobs: dict[str, bytes] | None = None
) -> ContainerClient:
    container = _service(stack, azurite, account).get_container_client(f"c{uuid.uuid4().hex[:10]}")
    container.create_container()
    for name, data in (blobs or {}).items():
        container.upload_blob(name, data, metadata={"origin": name.replace("/", "-")})
    return container


def _contents(container: ContainerClient, prefix: str | None = None) -> dict[str, bytes]:
    return {b.name: container.download_blob(b.name).readall() for b in container.list_blobs(name_starts_with=prefix)}


def _by_identity(azurite: Azurite, account: str, client_id: str | None, tenant_id: str | None) -> dict[str, Any]:
    identity = {"clientId": client_id, "tenantId": tenant_id} if client_id and tenant_id else {}
    return {"blobEndpoint": azurite.accounts[account].blob_endpoint, "workloadIdentity": identity}


def _no_key_in_secrets(kubectl: Kubectl, azurite: Azurite) -> None:
    secrets = json.loads(kubectl("get", "secrets", "-o", "json"))["items"]
    stored = [base64.b64decode(v).decode(errors="replace") for s in secrets for v in (s.get("data") or {}).values()]
    keys = [a.key for a in azurite.accounts.values()]
    assert not any(key in value for key in keys for value in stored)


def _worker_pods(kubectl: Kubectl, timeout: float = 60) -> list[dict[str, Any]]:
    """The BlobCopy worker pods of the namespace, once there are any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods: list[dict[str, Any]] = json.loads(kubectl("get", "pods", "-l", "ferry.dev/kind=BlobCopy", "-o", "json"))[
            "items"
        ]
        if pods:
            return pods
        time.sleep(0.2)
    raise AssertionError(f"no BlobCopy worker pod within {timeout}s")


def _identities(entra: EntraStandIn, namespace: str, count: int) -> list[tuple[str, str]]:
    made = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(count)]
    for client_id, _ in made:
        entra.federate(client_id, subject(namespace))
    return made


def test_blob_copies_by_identities_move_blobs_with_no_key_anywhere(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, oauth_azurite: Azurite
) -> None:
    (reader, reader_tenant), (writer, writer_tenant) = _identities(entra, kubectl.namespace, 2)
    blobs = {f"logs/{i:03d}.txt": f"line {i}\n".encode() * (i + 1) for i in range(40)}
    blobs["logs/large.bin"] = bytes(range(256)) * (24 * 1024)  # 6 MiB: moved in blocks, not in one Put Blob
    blobs["other/skip.txt"] = b"outside the prefix"
    source = _container(stack, oauth_azurite, "idsrc", blobs)
    streamed = _container(stack, oauth_azurite, "iddst")
    copied = _container(stack, oauth_azurite, "iddst")
    src = {
        **{"account": _by_identity(oauth_azurite, "idsrc", reader, reader_tenant)},
        "container": source.container_name,
    }

    def dst(container: ContainerClient) -> dict[str, Any]:
        account = _by_identity(oauth_azurite, "iddst", writer, writer_tenant)
        return {"account": account, "container": container.container_name}

    # Stream across accounts, a prefix: the worker reads with the source's identity and writes with the other's.
    kubectl.apply(blobcopy_yaml("streamed", {**src, "prefix": "logs/"}, dst(streamed), mode="Stream", blockSizeMiB=1))
    # ServerSide across accounts: the service reads the source by a user delegation SAS the source's identity signs.
    kubectl.apply(blobcopy_yaml("server-side", src, dst(copied), mode="ServerSide", verifyContentMD5=True))
    pods = _worker_pods(kubectl)  # while they run: a finished copy's pods are removed
    kubectl.wait_phase("blobcopy", "streamed", "Succeeded", timeout=180)
    kubectl.wait_phase("blobcopy", "server-side", "Succeeded", timeout=180)

    expected = {n: d for n, d in blobs.items() if n.startswith("logs/")}
    assert _contents(streamed) == expected
    assert _contents(copied) == blobs
    assert streamed.get_blob_client("logs/001.txt").get_blob_properties().metadata["origin"] == "logs-001.txt"

    # Both identities were exchanged for storage tokens; the pods carry the projected token, and no Secret a key.
    assert entra.granted(reader) >= 1 and entra.granted(writer) >= 1
    scopes = {e.scope for e in entra.exchanges if e.client_id in (reader, writer) and e.granted}
    assert scopes == {STORAGE_SCOPE}
    assert all(p["metadata"]["labels"].get("azure.workload.identity/use") == "true" for p in pods)
    env = [e for p in pods for c in p["spec"]["containers"] for e in c["env"]]
    assert not any(e["name"].endswith("_CONNECTION_STRING") for e in env)
    _no_key_in_secrets(kubectl, oauth_azurite)


def test_a_backup_location_by_the_chart_wide_identity(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, oauth_azurite: Azurite, cosmos: OwnCosmos
) -> None:
    """workloadIdentity without IDs: the worker service account's azure.workload.identity annotations (the chart's
    workerServiceAccount.annotations) name the identity, as AKS's webhook reads them."""
    entra.federate(DEFAULT_CLIENT_ID, subject(kubectl.namespace))
    cosmos.container("shop", "orders", items=20)
    location = {"account": _by_identity(oauth_azurite, "iddst", None, None), "container": "backups"}
    policy = {"mode": "Continuous", "tier": "Continuous7Days", "captureInterval": INTERVAL, "location": location}
    backed_up_account(kubectl, stack, cosmos, backup=policy)
    captured(kubectl, timeout=180)

    stored = _service(stack, oauth_azurite, "iddst").get_container_client("backups")
    names = [b.name for b in stored.list_blobs(name_starts_with=f"{kubectl.namespace}/acct/")]
    assert names, "the capture wrote nothing to the backup location"
    assert entra.granted(DEFAULT_CLIENT_ID) >= 1
    pods = json.loads(kubectl("get", "pods", "-l", "ferry.dev/role=backup", "-o", "json"))["items"]
    env = {e["name"]: e.get("value") for p in pods for e in p["spec"]["containers"][0]["env"]}
    assert env["FERRY_BACKUP_CLIENT_ID"] == DEFAULT_CLIENT_ID and "FERRY_BACKUP_CONNECTION_STRING" not in env


def test_an_identity_without_a_federated_credential_fails_the_copy_saying_what_to_add(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, oauth_azurite: Azurite
) -> None:
    ((reader, reader_tenant),) = _identities(entra, kubectl.namespace, 1)
    stranger, stranger_tenant = str(uuid.uuid4()), str(uuid.uuid4())  # no federated credential for this namespace
    source = _container(stack, oauth_azurite, "idsrc", {"a.txt": b"a"})
    dest = _container(stack, oauth_azurite, "iddst")
    src = {"account": _by_identity(oauth_azurite, "idsrc", reader, reader_tenant), "container": source.container_name}
    dst = {"account": _by_identity(oauth_azurite, "iddst", stranger, stranger_tenant), "container": dest.container_name}
    kubectl.apply(blobcopy_yaml("refused", src, dst, mode="Stream"))
    failed = kubectl.wait_phase("blobcopy", "refused", "Failed", timeout=120)["status"]
    assert failed["failure"]["reason"] == "IdentityNotFederated"
    message = failed["failure"]["message"]
    assert message.startswith("the destination account") and stranger in message
    assert f"subject {subject(kubectl.namespace)}" in message
    kubectl.events("refused", with_reasons("IdentityNotFederated"))
    assert not list(dest.list_blobs())


@pytest.fixture
def rbac_storage(stack: DevStack, entra: EntraStandIn, oauth_azurite: Azurite) -> Iterator[StorageRbac]:
    """The OAuth Azurite behind role assignments (support/storage_rbac.py), on the bridge."""
    assert stack.control_plane is not None and stack.control_plane.authority is not None
    assert stack.network is not None
    gateway, authority = stack.network.gateway, stack.control_plane.authority
    pair = authority.issue(f"rbac-{uuid.uuid4().hex[:6]}", "rbac", hosts=(gateway,), server=True)
    upstream = f"https://{gateway}:{oauth_azurite.blob_port}/"
    proxy = StorageRbac(upstream, gateway, pair.cert, pair.key, authority.cert, entra.public_keys).start()
    yield proxy
    proxy.stop()


def test_an_identity_without_a_storage_role_fails_the_copy_naming_the_role_to_assign(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, oauth_azurite: Azurite, rbac_storage: StorageRbac
) -> None:
    (reader, reader_tenant), (writer, writer_tenant), (idle, idle_tenant) = _identities(entra, kubectl.namespace, 3)
    rbac_storage.granted |= {entra.principal(reader), entra.principal(writer)}  # `idle` holds no role
    source = _container(stack, oauth_azurite, "idsrc", {"a.txt": b"a", "b.txt": b"b"})
    dest = _container(stack, oauth_azurite, "iddst")

    def side(account: str, container: ContainerClient, client_id: str, tenant_id: str) -> dict[str, Any]:
        identity = {"clientId": client_id, "tenantId": tenant_id}
        ref = {"blobEndpoint": rbac_storage.endpoint(account), "workloadIdentity": identity}
        return {"account": ref, "container": container.container_name}

    unread = side("idsrc", source, idle, idle_tenant)
    kubectl.apply(blobcopy_yaml("no-read", unread, side("iddst", dest, writer, writer_tenant), mode="Stream"))
    readable = {**side("idsrc", source, reader, reader_tenant), "blob": "a.txt"}
    kubectl.apply(blobcopy_yaml("no-write", readable, side("iddst", dest, idle, idle_tenant), mode="Stream"))
    no_read = kubectl.wait_phase("blobcopy", "no-read", "Failed", timeout=120)["status"]["failure"]
    no_write = kubectl.wait_phase("blobcopy", "no-write", "Failed", timeout=120)["status"]["failure"]

    assert no_read["reason"] == no_write["reason"] == "Forbidden"
    assert no_read["message"].startswith("the source account: ") and "Storage Blob Data Reader" in no_read["message"]
    assert idle in no_read["message"] and "storage account idsrc" in no_read["message"]
    assert no_write["message"].startswith("the destination account: ")
    assert "Storage Blob Data Contributor" in no_write["message"] and "storage account iddst" in no_write["message"]
    assert set(rbac_storage.refused) == {entra.principal(idle)}
    assert not list(dest.list_blobs())


@pytest.mark.parametrize(
    ("account", "complaint"),
    [
        ({"workloadIdentity": {}}, "blobEndpoint is required with workloadIdentity"),
        ({"blobEndpoint": "https://a.blob.core.windows.net/"}, "blobEndpoint is required with workloadIdentity"),
        (
            {
                "secretRef": {"name": "s", "key": "k"},
                "blobEndpoint": "https://a.blob.core.windows.net/",
                "workloadIdentity": {},
            },
            "give exactly one of secretRef",
        ),
        ({"blobEndpoint": "http://a.blob.core.windows.net/", "workloadIdentity": {}}, "blobEndpoint"),
    ],
)
def test_an_account_by_identity_is_checked_by_the_api_server(
    kubectl: Kubectl, account: dict[str, Any], complaint: str
) -> None:
    body = blobcopy_yaml("bad", {"url": "https://example.invalid/a"}, {"account": account, "container": "dest"})
    refused = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=body, check=False)
    assert refused.returncode != 0 and complaint in refused.stderr
