"""A DatabaseAccount reached by a Microsoft Entra workload identity, end to end, with no key anywhere.

The account is cosmosdb-server behind a proxy that authorizes as an account with Entra data-plane RBAC does
(EntraCheck: key-signed requests refused, `type=aad` tokens checked); the identity's tokens come from the Entra
stand-in (support/entra.py), which exchanges the worker pods' projected service account tokens after checking
them against the local API server's service account issuer and the identity's federated credentials.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from copyjobs import all_items, job_manifest, new_container
from identity_fixtures import WORKER_SERVICE_ACCOUNT
from restore_fixtures import OwnCosmos

from ferry_dev.controlplane import ISSUER
from ferry_dev.cosmosproxy import CosmosProxy, EntraCheck
from ferry_dev.stack import DevStack
from support.entra import EntraStandIn
from support.kubectl import Kubectl, with_reasons

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the emulator's own certificate
]


@pytest.fixture
def rbac_account(stack: DevStack, entra: EntraStandIn) -> Iterator[CosmosProxy]:
    """The account's endpoint: the stack's Cosmos DB behind Entra authorization (no key accepted)."""
    assert stack.cosmos is not None
    proxy = CosmosProxy(stack.cosmos.endpoint.endpoint).start()
    proxy.entra = EntraCheck(entra.public_keys, f"https://{urlsplit(proxy.endpoint).hostname}")
    yield proxy
    proxy.stop()


def _account(endpoint: str, client_id: str, tenant_id: str, name: str = "acct") -> str:
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": name},
        "spec": {
            "endpoint": endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"workloadIdentity": {"clientId": client_id, "tenantId": tenant_id}},
            "copyInstances": {"count": 1, "resources": {"cpu": "300m", "memory": "256Mi"}},
            "regionPollInterval": "2s",
        },
    }
    return yaml.safe_dump(body)


def _ready(kubectl: Kubectl, reason: str, name: str = "acct") -> dict[str, Any]:
    def has(o: dict[str, Any]) -> bool:
        found = {c["type"]: c for c in (o.get("status") or {}).get("conditions") or []}.get("Ready")
        return found is not None and found["reason"] == reason

    account = kubectl.wait_for("databaseaccount", name, has, timeout=120)
    ready: dict[str, Any] = {c["type"]: c for c in account["status"]["conditions"]}["Ready"]
    return ready


def test_an_account_reached_by_its_identity_copies_with_no_key_anywhere(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, rbac_account: CosmosProxy
) -> None:
    assert stack.cosmos is not None and rbac_account.entra is not None
    client_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    entra.federate(client_id, f"system:serviceaccount:{kubectl.namespace}:{WORKER_SERVICE_ACCOUNT}")
    rbac_account.entra.principals.add(entra.principal(client_id))
    source, dest = new_container(stack, "/tenant", items=80), new_container(stack, "/region")
    kubectl.apply(_account(rbac_account.endpoint, client_id, tenant_id))
    ready = _ready(kubectl, "Connected")
    assert ready["status"] == "True"
    kubectl.apply(job_manifest("by-identity", source, dest, verify="Full"))
    kubectl.wait_phase("containercopyjob", "by-identity", "Succeeded", timeout=180)
    assert all_items(dest) == all_items(source)

    # The pods carry what AKS's webhook would add; no Secret of the namespace holds the account's key.
    pods = json.loads(kubectl("get", "pods", "-l", "ferry.dev/kind=DatabaseAccount", "-o", "json"))["items"]
    assert pods and all(p["metadata"]["labels"].get("azure.workload.identity/use") == "true" for p in pods)
    volumes = [v for p in pods for v in p["spec"]["volumes"] if v["name"] == "azure-identity-token"]
    token = volumes[0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "api://AzureADTokenExchange" and len(volumes) == len(pods)
    secrets = json.loads(kubectl("get", "secrets", "-o", "json"))["items"]
    stored = [base64.b64decode(v).decode(errors="replace") for s in secrets for v in (s.get("data") or {}).values()]
    assert not any(stack.cosmos.endpoint.key in value for value in stored)
    # Every request the account answered carried a token of the identity: keys are refused there.
    assert entra.granted(client_id) >= 1
    assert all("type%3dmaster" not in e.headers.get("authorization", "").lower() for e in rbac_account.log[-50:])


def test_an_identity_without_a_federated_credential_or_a_role_is_named_with_what_to_do(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, rbac_account: CosmosProxy
) -> None:
    assert rbac_account.entra is not None
    client_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    kubectl.apply(_account(rbac_account.endpoint, client_id, tenant_id))
    refused = _ready(kubectl, "IdentityNotFederated")
    subject = f"system:serviceaccount:{kubectl.namespace}:{WORKER_SERVICE_ACCOUNT}"
    assert refused["status"] == "False" and f"issuer {ISSUER}" in refused["message"]
    assert f"subject {subject}" in refused["message"] and client_id in refused["message"]
    kubectl.events("acct", with_reasons("IdentityNotFederated"))

    entra.federate(client_id, subject)  # federated now, but without a data-plane role
    forbidden = _ready(kubectl, "Forbidden")
    assert "Cosmos DB Built-in Data Contributor" in forbidden["message"]
    assert "00000000-0000-0000-0000-000000000002" in forbidden["message"]

    rbac_account.entra.principals.add(entra.principal(client_id))
    assert _ready(kubectl, "Connected")["status"] == "True"


def test_tokens_that_expire_during_a_copy_are_refreshed_not_failed(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, rbac_account: CosmosProxy
) -> None:
    assert rbac_account.entra is not None
    entra.token_seconds = 10  # the account refuses a token 5 s after this
    client_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    entra.federate(client_id, f"system:serviceaccount:{kubectl.namespace}:{WORKER_SERVICE_ACCOUNT}")
    rbac_account.entra.principals.add(entra.principal(client_id))
    source, dest = new_container(stack, "/tenant", items=150), new_container(stack, "/region")
    kubectl.apply(_account(rbac_account.endpoint, client_id, tenant_id))
    _ready(kubectl, "Connected")
    before = entra.granted(client_id)
    kubectl.apply(job_manifest("outlives", source, dest, maxItemsPerSecond=6))  # about 25 s: several tokens
    done = kubectl.wait_phase("containercopyjob", "outlives", "Succeeded", timeout=240)["status"]
    assert all_items(dest) == all_items(source)
    assert entra.granted(client_id) - before >= 2, "the copy ran on one token"
    assert done["processedCount"] == 150


def test_credentials_name_exactly_one_of_a_key_and_an_identity_refused_at_apply(kubectl: Kubectl) -> None:
    def refused(credentials: dict[str, Any]) -> str:
        body = yaml.safe_load(_account("https://acct.documents.azure.com:443/", str(uuid.uuid4()), str(uuid.uuid4())))
        body["spec"]["credentials"] = credentials
        done = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body), check=False)
        assert done.returncode != 0, credentials
        return done.stderr

    identity = {"clientId": str(uuid.uuid4()), "tenantId": str(uuid.uuid4())}
    both = refused({"workloadIdentity": identity, "secretRef": {"name": "k", "key": "primaryKey"}})
    assert "spec.credentials" in both and "exactly one of secretRef" in both
    assert "exactly one of secretRef" in refused({})
    assert "spec.credentials.workloadIdentity.clientId" in refused({"workloadIdentity": {**identity, "clientId": "me"}})


def test_a_cross_account_copy_reads_the_source_with_its_identity_and_writes_with_the_other(
    stack: DevStack, kubectl: Kubectl, entra: EntraStandIn, rbac_account: CosmosProxy, cosmos: OwnCosmos
) -> None:
    """Each account is reached with its own identity: each holds a role only on its own account."""
    assert rbac_account.entra is not None
    source_account = CosmosProxy(cosmos.endpoint).start()
    try:
        source_account.entra = EntraCheck(entra.public_keys, f"https://{urlsplit(source_account.endpoint).hostname}")
        subject = f"system:serviceaccount:{kubectl.namespace}:{WORKER_SERVICE_ACCOUNT}"
        reader, writer = str(uuid.uuid4()), str(uuid.uuid4())
        for client_id, account in ((reader, source_account), (writer, rbac_account)):
            entra.federate(client_id, subject)
            assert account.entra is not None
            account.entra.principals.add(entra.principal(client_id))
        source = new_container(cosmos.client, "/tenant", items=60)
        dest = new_container(stack, "/region")
        tenant = str(uuid.uuid4())
        kubectl.apply(_account(rbac_account.endpoint, writer, tenant))
        kubectl.apply(_account(source_account.endpoint, reader, tenant, name="orders-account"))
        _ready(kubectl, "Connected")
        _ready(kubectl, "Connected", name="orders-account")
        kubectl.apply(job_manifest("across", source, dest, source_account="orders-account"))
        kubectl.wait_phase("containercopyjob", "across", "Succeeded", timeout=180)
        assert all_items(dest) == all_items(source)
        instance = json.loads(kubectl("get", "pods", "-l", "ferry.dev/role=copy", "-o", "json"))["items"][0]
        env = {e["name"]: e.get("value") for e in instance["spec"]["containers"][0]["env"]}
        assert (env["FERRY_COSMOS_CLIENT_ID"], env["FERRY_SOURCE_COSMOS_CLIENT_ID"]) == (writer, reader)
        assert not any(name.endswith("_KEY") for name in env)
    finally:
        source_account.stop()
