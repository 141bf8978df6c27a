"""A BlobCopy's accounts reached by workload identities: their tokens asked for before the copy starts, and the
refusals of either side in words that say which side and what to do."""

from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError

from ferry.api.common import Failure
from ferry.kinds.blobcopy.items import Endpoints, TransientWorkerError
from ferry.storage.blobaccount import BlobAccount
from ferry.storage.blobs import describe
from ferry.workers.identity import BLOB_CONTRIBUTOR, BLOB_READER, storage_forbidden, storage_identity_failure

STORAGE_SCOPE = "https://storage.azure.com/.default"


def _sides(endpoints: Endpoints) -> list[tuple[str, BlobAccount, str]]:
    sides = [("source", endpoints.source, BLOB_READER), ("destination", endpoints.destination, BLOB_CONTRIBUTOR)]
    return [(side, account, role) for side, account, role in sides if account is not None and account.credential]


def token_failure(endpoints: Endpoints) -> Failure | None:
    """Each identity's token, asked for once up front (azure-identity caches and refreshes it): a refused token
    exchange fails the copy naming the side and the federated credential to add; an authority that does not
    answer is a TransientWorkerError."""
    for side, account, role in _sides(endpoints):
        assert account.credential is not None
        try:
            account.credential.get_token(STORAGE_SCOPE)
        except ClientAuthenticationError as error:
            found = storage_identity_failure(error, account.client_id, account.name, role)
            if found is None or found[0] == "IdentityTokenFailed":
                raise TransientWorkerError(f"the {side} account's identity got no token: {describe(error)}") from None
            return Failure(reason=found[0], message=f"the {side} account: {found[1]}")
    return None


def refused_failure(endpoints: Endpoints, error: BaseException) -> Failure | None:
    """A storage request an account reached by an identity refused (403: no data-plane role), naming the side and
    the role to assign; None for other errors."""
    response = getattr(error, "response", None)
    url = str(getattr(getattr(response, "request", None), "url", "") or "").lower()
    for side, account, role in _sides(endpoints):
        if url.startswith(account.url.lower()):
            found = storage_identity_failure(error, account.client_id, account.name, role)
            if found is not None:
                return Failure(reason=found[0], message=f"the {side} account: {found[1]}")
    return None


def source_refusal(endpoints: Endpoints, failure: Failure | None) -> Failure | None:
    """A source account reached by an identity that refused access (SourceAccessDenied): Forbidden, naming the role
    to assign; other failures as they are."""
    source = endpoints.source
    if failure is None or failure.reason != "SourceAccessDenied" or source is None or source.credential is None:
        return failure
    message = storage_forbidden(source.client_id, source.name, BLOB_READER)
    return Failure(reason="Forbidden", message=f"the source account: {message} ({failure.message})")
