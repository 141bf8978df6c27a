"""How one storage account is reached: a connection string (its key or SAS inside), or its blob endpoint and a
Microsoft Entra token credential (a workload identity, no key anywhere)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    UserDelegationKey,
    generate_blob_sas,
)
from azure.storage.blob.aio import ContainerClient as AsyncContainerClient

from ferry.storage import blobs
from ferry.storage.blobs import ConnectionInfo, RetryRecorder, parse_connection_string


@dataclass(frozen=True)
class BlobAccount:
    connection_string: str | None = None
    endpoint: str | None = None  # with a credential: https://ACCOUNT.blob.core.windows.net/
    credential: TokenCredential | None = None
    # The asynchronous clients' credential, made for the event loop that uses it.
    async_credential: Callable[[], AsyncTokenCredential] | None = None
    client_id: str = ""  # the identity's, for messages

    def __post_init__(self) -> None:
        if self.connection_string is None and (self.endpoint is None or self.credential is None):
            raise ValueError("a storage account needs a connection string, or a blob endpoint and a credential")

    # Parsed once: a server-side copy signs a SAS with the key for every blob.
    @functools.cached_property
    def _info(self) -> ConnectionInfo | None:
        return None if self.connection_string is None else parse_connection_string(self.connection_string)

    @property
    def account_key(self) -> str | None:
        """The shared key, when the connection string has one (it signs read SAS for the service)."""
        return None if self._info is None else self._info.account_key

    @property
    def url(self) -> str:
        """The blob endpoint, without credentials."""
        if self._info is not None:
            return self._info.blob_endpoint
        assert self.endpoint is not None
        return self.endpoint.rstrip("/")

    @functools.cached_property
    def name(self) -> str:
        """The account's name: the connection string's, the endpoint's first host label, or (an emulator's
        path-style endpoint on an IP address) its first path segment."""
        if self._info is not None:
            return self._info.account_name
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if host.replace(".", "").isdigit() or host == "localhost":
            return parts.path.strip("/").split("/")[0]
        return host.split(".")[0]

    def service_client(self, recorder: RetryRecorder | None = None) -> BlobServiceClient:
        if self.connection_string is not None:
            return blobs.service_client(self.connection_string, recorder)
        assert self.endpoint is not None and self.credential is not None
        return blobs.token_service_client(self.endpoint, self.credential, recorder)

    def container_client(self, container: str, recorder: RetryRecorder | None = None) -> ContainerClient:
        return self.service_client(recorder).get_container_client(container)

    def async_container_client(self, container: str, recorder: RetryRecorder | None = None) -> AsyncContainerClient:
        if self.connection_string is not None:
            return blobs.async_container_client(self.connection_string, container, recorder)
        assert self.endpoint is not None and self.async_credential is not None
        return blobs.async_token_container_client(self.endpoint, container, self.async_credential(), recorder)


# A user delegation key is valid for at most seven days; one is asked for again when less than half of its time
# is left, so a SAS signed with it keeps at least that long.
DELEGATION_KEY_LIFETIME = timedelta(days=7)


class ReadSigner:
    """Read-only SAS URLs for the blobs of a source account, for the storage service to read them (a server-side
    copy across accounts): signed with the account key, or, for an account reached by an identity, with a user
    delegation key the identity obtains (its Storage Blob Data role must include generateUserDelegationKey, as
    Reader, Contributor and Owner do). Such a SAS lasts at most as long as the key: seven days."""

    def __init__(self, account: BlobAccount, lifetime: timedelta, recorder: RetryRecorder | None = None) -> None:
        self.account = account
        self.lifetime = lifetime
        self.recorder = recorder
        self._lock = threading.Lock()
        self._key: UserDelegationKey | None = None
        self._key_expiry = datetime.min.replace(tzinfo=UTC)

    def url(self, client: BlobClient) -> str:
        """The blob's URL with a read SAS: a secret, passed to the service and never reported or logged."""
        if self.account.account_key is not None:
            return blobs.read_sas_url(client, self.account.account_key, self.lifetime)
        delegation, expiry = self._delegation_key()
        now = datetime.now(UTC)
        token = generate_blob_sas(
            account_name=self.account.name,  # not the client's: on a path-style endpoint it is parsed wrongly
            container_name=client.container_name,
            blob_name=client.blob_name,
            user_delegation_key=delegation,
            permission=BlobSasPermissions(read=True),
            start=now - timedelta(minutes=15),
            expiry=min(now + self.lifetime, expiry),
        )
        return f"{blobs.credential_free_url(client.url)}?{token}"

    def _delegation_key(self) -> tuple[UserDelegationKey, datetime]:
        with self._lock:
            now = datetime.now(UTC)
            if self._key is None or self._key_expiry - now < DELEGATION_KEY_LIFETIME / 2:
                expiry = now + DELEGATION_KEY_LIFETIME - timedelta(minutes=5)
                service = self.account.service_client(self.recorder)
                self._key = service.get_user_delegation_key(now - timedelta(minutes=15), expiry)
                self._key_expiry = expiry
            return self._key, self._key_expiry
