"""Leases on a copy job's work units (one per source feed range) in `__datatransferstate`.

A lease is the unit's `owner` and `leaseExpiresAt`, taken and renewed with replace_item on the
read etag: of several instances racing for a unit exactly one wins. The holder renews it in the
background and with every checkpoint; an instance that dies stops renewing, the lease expires and
another instance resumes from the last checkpoint (the items after it are written again, which
is harmless). A holder that finds its lease taken over stops working on the unit.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from ferry.storage.transferstate import StateConflict, StateStore, epoch


class LeaseLost(Exception):
    """Another instance took the unit over (this instance did not renew in time)."""


@dataclass
class Availability:
    """What acquire() found besides a lease: every unit done, or units leased by others."""

    all_done: bool
    leased_elsewhere: int


class UnitLease:
    def __init__(self, store: StateStore, doc: dict[str, Any], instance_id: str, lease_seconds: float) -> None:
        self.store = store
        self.instance_id = instance_id
        self.lease_seconds = lease_seconds
        self.doc = doc
        self.lost = False
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

    def _write(self, **fields: Any) -> None:
        with self._lock:
            if self.lost:
                raise LeaseLost(str(self.doc["id"]))
            body = {**self.doc, **fields}
            try:
                self.doc = self.store.replace_unit(body, str(self.doc["_etag"]))
            except StateConflict:
                self.lost = True
                raise LeaseLost(str(self.doc["id"])) from None

    def _renew_loop(self) -> None:
        # Renew well before expiry so that a slow page (rate limits, throttling) keeps the lease.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self._write(leaseExpiresAt=epoch() + self.lease_seconds)
            except LeaseLost:
                return
            except Exception:  # a failed renewal is retried; expiry is the backstop
                continue

    def checkpoint(self, continuation: str | None, processed: int, done: bool = False) -> None:
        """Record progress after a page; every item before `continuation` is in the destination."""
        fields: dict[str, Any] = {"continuation": continuation, "processedCount": processed, "done": done}
        fields["leaseExpiresAt"] = 0.0 if done else epoch() + self.lease_seconds
        if done:
            fields["owner"] = None
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
    store: StateStore, job_id: str, instance_id: str, lease_seconds: float
) -> tuple[UnitLease | None, Availability]:
    """Lease one unfinished unit that is free, expired, or this instance's own from a previous run."""
    units = store.job_units(job_id)
    pending = [u for u in units if not u.get("done")]
    now = epoch()
    busy = 0
    for unit in pending:
        free = not unit.get("owner") or unit.get("owner") == instance_id
        if not free and float(unit.get("leaseExpiresAt") or 0) > now:
            busy += 1
            continue
        body = {**unit, "owner": instance_id, "leaseExpiresAt": now + lease_seconds}
        try:
            doc = store.replace_unit(body, str(unit["_etag"]))
        except StateConflict:
            busy += 1  # another instance won the race for it
            continue
        return UnitLease(store, doc, instance_id, lease_seconds), Availability(False, busy)
    return None, Availability(all_done=not pending and bool(units), leased_elsewhere=busy)
