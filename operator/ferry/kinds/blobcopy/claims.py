"""Which worker copies which page of a copy spread over several workers: a blob lease on `claims/<page>`.

A worker copies a page only while it holds the lease on the page's claim blob in the manifest. The lease is
CLAIM_SECONDS long and renewed every RENEW_EVERY while the page is copied: a worker that dies (a deleted pod)
stops renewing, and CLAIM_SECONDS later another worker claims the page and copies it again (blobs already
copied are recognised on the destination). A worker whose renewal is refused has lost the page to another and
stops it. Leases need no clock agreement between pods: the storage service times them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

CLAIM_SECONDS = 15  # what a killed worker's page waits before another takes it (the service allows 15-60)
RENEW_EVERY = 4.0  # well within CLAIM_SECONDS, so that a slow request or two do not lose the page
BUSY_SECONDS = 5.0  # a page claimed by another is not tried again sooner


@dataclass
class Claim:
    page: int
    lease: BlobLeaseClient
    redone: bool  # the page was claimed before: some of its blobs may be copied already
    lost: threading.Event = field(default_factory=threading.Event)


class Claims:
    """This worker's claims, renewed by a thread of their own until close()."""

    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self.container = container
        self.prefix = prefix
        self._held: dict[int, Claim] = {}
        self._busy: dict[int, float] = {}  # page -> when to try it again
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._renewer = threading.Thread(target=self._renew_all, name="ferry-claims", daemon=True)
        self._renewer.start()

    def name(self, page: int) -> str:
        return f"{self.prefix}claims/{page:010d}"

    def claim(self, page: int) -> Claim | None:
        """The page's claim, or None when another worker holds it."""
        if time.monotonic() < self._busy.get(page, 0.0):
            return None
        blob = self.container.get_blob_client(self.name(page))
        try:
            blob.upload_blob(b"", overwrite=False)
            redone = False
        except ResourceExistsError:
            redone = True
        except HttpResponseError as error:
            if error.status_code not in (409, 412):  # exists, and leased
                raise
            redone = True
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=CLAIM_SECONDS)
        except HttpResponseError as error:
            if error.status_code != 409:  # LeaseAlreadyPresent: another worker copies it
                raise
            self._busy[page] = time.monotonic() + BUSY_SECONDS
            return None
        claim = Claim(page, lease, redone)
        with self._lock:
            self._held[page] = claim
        return claim

    def held(self, page: int) -> Claim | None:
        with self._lock:
            return self._held.get(page)

    def renew(self, claim: Claim) -> bool:
        """Renew now; False when the page is lost to another worker (or was released)."""
        if claim.lost.is_set():
            return False
        try:
            claim.lease.renew()
        except HttpResponseError as error:
            if error.status_code in (404, 409, 412):
                claim.lost.set()
                return False
            raise
        return True

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.page, None)
        if claim.lost.is_set():
            return
        claim.lost.set()  # no longer ours to work on
        with contextlib.suppress(HttpResponseError):  # an expired lease is as good as released
            claim.lease.release()

    def close(self) -> None:
        """Release every claim (a stopped worker's pages are taken at once, not after their leases expire)."""
        self._closed.set()
        self._renewer.join()
        with self._lock:
            held = list(self._held.values())
        for claim in held:
            self.release(claim)

    def _renew_all(self) -> None:
        while not self._closed.wait(RENEW_EVERY):
            with self._lock:
                held = list(self._held.values())
            for claim in held:
                with contextlib.suppress(AzureError, OSError):  # transient: the next round tries again
                    self.renew(claim)
