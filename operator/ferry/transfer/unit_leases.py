"""Leases on a copy job's work units (one per source feed range) in `__datatransferstate`.

A lease is the unit's `owner` and `leaseExpiresAt`, taken and renewed with replace_item on the
read etag: of several instances racing for a unit exactly one wins. The holder renews it in the
background and with every checkpoint; an instance that dies stops renewing, the lease expires and
another instance resumes from the last checkpoint (the items after it are written again, which
is harmless). A holder that finds its lease taken over stops working on the unit.

One owner at a time, also when clocks and networks misbehave: a holder stops writing once its last
successful renewal is older than the lease minus a safety margin (it cannot know whether it still
holds it), and a lease is taken over only a margin after it expired. Owners are process ids, not
pod names: a restarted pod of the same name is another owner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from ferry.storage.cosmos import throttled_requests
from ferry.transfer.state import JobStore, StateConflict, epoch

# A holder considers its lease gone this share of the lease before it expires; a taker waits as long
# after expiry (3 s of a 15 s lease): room for clock skew between instances and a slow write.
SAFETY_SHARE = 0.2


class LeaseLost(Exception):
    """Another instance took the unit over (this instance did not renew in time)."""


@dataclass
class Availability:
    """What acquire() found besides a lease: every unit done, or units leased by others."""

    all_done: bool
    leased_elsewhere: int
    retry_after: float | None = None  # when the first of the others' leases may be taken over


class UnitLease:
    def __init__(self, store: JobStore, doc: dict[str, Any], instance_id: str, lease_seconds: float) -> None:
        self.store = store
        self.instance_id = instance_id
        self.lease_seconds = lease_seconds
        self.doc = doc
        self.lost = False
        self._margin = lease_seconds * SAFETY_SHARE
        self._valid_until = time.monotonic() + lease_seconds - self._margin
        # 429s met while holding the unit add to the unit's count, so that the job's is the sum over its units
        # whichever instances did the work.
        self._throttled_base = throttled_requests() - int(doc.get("throttledRequests") or 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{doc['id']}", daemon=True)
        self._renewer.start()

    @property
    def feed_range(self) -> dict[str, Any]:
        return dict(self.doc["feedRange"])

    @property
    def continuation(self) -> str | None:
        token = self.doc.get("continuation")
        return str(token) if token else None

    @property
    def processed(self) -> int:
        return int(self.doc.get("processedCount", 0))

    def check(self) -> None:
        """Raise LeaseLost unless the lease is surely still ours (called before each page is written)."""
        if self.lost or time.monotonic() > self._valid_until:
            self.lost = True
            raise LeaseLost(str(self.doc["id"]))

    def _write(self, **fields: Any) -> None:
        with self._lock:
            self.check()
            body = {**self.doc, **fields}
            sent = time.monotonic()
            try:
                self.doc = self.store.replace_unit(body, str(self.doc["_etag"]))
            except StateConflict:
                self.lost = True
                raise LeaseLost(str(self.doc["id"])) from None
            if body.get("owner") == self.instance_id:
                # Counted from when the write was sent: the lease may have been renewed any time after.
                self._valid_until = sent + self.lease_seconds - self._margin

    def _renew_loop(self) -> None:
        # Renew well before expiry so that a slow page (rate limits, throttling) keeps the lease.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self._write(leaseExpiresAt=epoch() + self.lease_seconds)
            except LeaseLost:
                return
            except Exception:  # a failed renewal is retried; expiry is the backstop
                continue

    def checkpoint(
        self, continuation: str | None, processed: int, done: bool = False, release: bool = False, **extra: Any
    ) -> None:
        """Record progress after a page; every item before `continuation` is in the destination.

        `release` gives the unit back in the same write (as release() does, without a second request).
        """
        fields: dict[str, Any] = {"continuation": continuation, "processedCount": processed, "done": done, **extra}
        fields["throttledRequests"] = throttled_requests() - self._throttled_base
        fields["leaseExpiresAt"] = 0.0 if done or release else epoch() + self.lease_seconds
        if done or release:
            fields["owner"] = None
            self.close()  # no renewal may follow
        self._write(**fields)

    def release(self) -> None:
        """Give the unit back (keeping its checkpoint) so another instance can take it at once."""
        self.close()
        with contextlib.suppress(LeaseLost):
            self._write(owner=None, leaseExpiresAt=0.0)

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not threading.current_thread():
            self._renewer.join(timeout=self.lease_seconds)


def acquire(
    store: JobStore, job_id: str, instance_id: str, lease_seconds: float
) -> tuple[UnitLease | None, Availability]:
    """Lease one unfinished unit that is free, expired, or this instance's own from a previous run."""
    units = store.job_units(job_id)
    unfinished = [u for u in units if not u.get("done")]
    # Units still copying first; then the streaming units of an online copy, least recently visited
    # first, so that one instance takes its turn over all of them.
    pending = sorted(
        (u for u in unfinished if not u.get("final")),
        key=lambda u: (bool(u.get("streaming")), float(u.get("visitedAt") or 0.0)),
    )
    if not pending:  # the final units (the verification) once every other unit is done
        pending = [u for u in unfinished if u.get("final")]
    now = epoch()
    busy = 0
    takeovers: list[float] = []
    for unit in pending:
        free = not unit.get("owner") or unit.get("owner") == instance_id
        takeover_at = float(unit.get("leaseExpiresAt") or 0) + lease_seconds * SAFETY_SHARE
        if not free and takeover_at > now:
            busy += 1
            takeovers.append(takeover_at - now)
            continue
        body = {**unit, "owner": instance_id, "leaseExpiresAt": now + lease_seconds}
        try:
            doc = store.replace_unit(body, str(unit["_etag"]))
        except StateConflict:
            busy += 1  # another instance won the race for it
            continue
        return UnitLease(store, doc, instance_id, lease_seconds), Availability(False, busy)
    retry_after = min(takeovers) if takeovers else None
    return None, Availability(all_done=not unfinished and bool(units), leased_elsewhere=busy, retry_after=retry_after)
