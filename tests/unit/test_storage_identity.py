"""Storage accounts by workload identity: what the worker pods are given, and what they make of it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential

from ferry.api.blobcopy import BlobCopySpec
from ferry.api.common import Failure
from ferry.api.storageaccount import StorageAccountRef
from ferry.kinds.blobcopy.controller import worker_env
from ferry.kinds.blobcopy.identities import source_refusal, token_failure
from ferry.kinds.blobcopy.items import Endpoints
from ferry.kube.manifests import identity_env, storage_env
from ferry.storage.blobaccount import BlobAccount
from ferry.workers.outcome import PermanentError
from ferry.workers.podenv import blob_account_from_env

CLIENT, TENANT = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
ANNOTATED = (("azure.workload.identity/client-id", CLIENT), ("azure.workload.identity/tenant-id", TENANT))
ENDPOINT = "https://orders.blob.core.windows.net/"


def _ref(**identity: str) -> StorageAccountRef:
    return StorageAccountRef.model_validate({"blobEndpoint": ENDPOINT, "workloadIdentity": identity})


def test_an_account_by_identity_gives_the_pod_its_endpoint_and_ids_and_no_secret() -> None:
    env = storage_env(_ref(clientId=CLIENT, tenantId=TENANT), "FERRY_SOURCE")
    assert env == [
        {"name": "FERRY_SOURCE_BLOB_ENDPOINT", "value": ENDPOINT},
        {"name": "FERRY_SOURCE_CLIENT_ID", "value": CLIENT},
        {"name": "FERRY_SOURCE_TENANT_ID", "value": TENANT},
    ]


def test_an_identity_without_ids_is_the_worker_service_accounts_and_the_spec_wins_over_it() -> None:
    assert identity_env(_ref().workload_identity, "P", ANNOTATED) == [  # type: ignore[arg-type]
        {"name": "P_CLIENT_ID", "value": CLIENT},
        {"name": "P_TENANT_ID", "value": TENANT},
    ]
    own = "99999999-2222-3333-4444-555555555555"
    assert identity_env(_ref(clientId=own).workload_identity, "P", ANNOTATED)[0]["value"] == own  # type: ignore[arg-type]


def test_a_worker_without_a_client_id_fails_saying_where_to_set_one() -> None:
    env = {e["name"]: e["value"] for e in storage_env(_ref(), "FERRY_DESTINATION")}
    with pytest.raises(PermanentError) as raised:
        blob_account_from_env(env, "FERRY_DESTINATION")
    assert raised.value.reason == "IdentityNotConfigured"
    assert "azure.workload.identity/client-id" in raised.value.message
    assert "workerServiceAccount.annotations" in raised.value.message


def test_a_blob_copy_worker_gets_the_ids_of_an_account_by_identity_and_the_secret_of_the_other() -> None:
    spec = BlobCopySpec.model_validate(
        {
            "source": {"account": {"blobEndpoint": ENDPOINT, "workloadIdentity": {}}, "container": "src"},
            "destination": {"account": {"secretRef": {"name": "dst", "key": "cs"}}, "container": "dst"},
        }
    )
    env = {e["name"]: e for e in worker_env(spec, annotations=ANNOTATED)}
    assert env["FERRY_SOURCE_CLIENT_ID"]["value"] == CLIENT
    assert env["FERRY_DESTINATION_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"]["name"] == "dst"
    assert "FERRY_SOURCE_CONNECTION_STRING" not in env


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        ("https://orders.blob.core.windows.net/", "orders"),
        ("https://10.1.2.3:10000/devstoreaccount1", "devstoreaccount1"),
    ],
)
def test_an_accounts_name_comes_from_its_endpoint(endpoint: str, name: str) -> None:
    account = BlobAccount(endpoint=endpoint, credential=DefaultAzureCredential())
    assert account.name == name and account.account_key is None


class _Refused:
    """A token credential Entra refuses, as azure-identity reports it (the error text carries Entra's code)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError("WorkloadIdentityCredential authentication failed: AADSTS70021: No matching")


class _Granted:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", int(time.time()) + 3600)


def _endpoints(source: Any, destination: Any) -> Endpoints:
    def account(credential: Any, name: str) -> BlobAccount:
        return BlobAccount(endpoint=f"https://{name}.blob.core.windows.net/", credential=credential, client_id=name)

    return Endpoints(account(source, "src"), None, account(destination, "dst"))


def test_a_refused_token_exchange_fails_the_copy_naming_the_side_and_what_to_federate() -> None:
    failure = token_failure(_endpoints(_Granted(), _Refused()))
    assert failure is not None and failure.reason == "IdentityNotFederated"
    assert failure.message.startswith("the destination account: ") and "identity dst" in failure.message
    assert token_failure(_endpoints(_Granted(), _Granted())) is None


def test_a_source_refusing_an_identity_names_the_role_to_assign() -> None:
    refused = Failure(reason="SourceAccessDenied", message="403 AuthorizationPermissionMismatch")
    failure = source_refusal(_endpoints(_Granted(), _Granted()), refused)
    assert failure is not None and failure.reason == "Forbidden"
    assert "Storage Blob Data Reader" in failure.message and "storage account src" in failure.message
    by_key = Endpoints("AccountName=src;AccountKey=a2V5;BlobEndpoint=https://src.blob.core.windows.net", None, "x=y")
    assert source_refusal(by_key, refused) == refused  # a key refused is the Secret's matter, not a role's
