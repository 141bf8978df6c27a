"""Copy job state and history of a MongoDB API account, in its own `__datatransferstate` database.

The same documents as the API for NoSQL keeps (transfer/state.py), in the collections `jobs` and `workunits`,
each under `_id` = its `id`. MongoDB has no etags: every write sets `_etag` to a new value and is conditional on
the value read (a replace filtered on `_id` and `_etag`), so concurrent writers never lose each other's updates and
a lease has exactly one holder, as with the service's etags.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ferry.storage.mongo import MongoAccess
from ferry.transfer.state import DATABASE, JOBS, WORKUNITS, StateConflict, now_iso


def _stored(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as written: keyed by its id, with a new _etag."""
    return {**{k: v for k, v in doc.items() if k != "_id"}, "_id": doc["id"], "_etag": uuid.uuid4().hex}


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


class MongoStateStore:
    """The `__datatransferstate` database of one MongoDB API account."""

    def __init__(self, access: MongoAccess) -> None:
        self.access = access

    @property
    def jobs(self) -> Collection[dict[str, Any]]:
        return self.access.collection(DATABASE, JOBS)

    @property
    def units(self) -> Collection[dict[str, Any]]:
        return self.access.collection(DATABASE, WORKUNITS)

    def ensure(self) -> None:
        """The units are found by job: index them so (creating an existing index changes nothing)."""
        self.units.create_index([("jobId", ASCENDING)], name="jobId")

    def forget(self) -> None:
        """Nothing is remembered: collections come back on the next write."""

    def read_job(self, job_id: str) -> dict[str, Any] | None:
        found = self.jobs.find_one({"_id": job_id})
        return _shown(found) if found is not None else None

    def create_job(self, doc: dict[str, Any]) -> dict[str, Any]:
        stored = _stored(doc)
        try:
            self.jobs.insert_one(stored)
            return _shown(stored)
        except DuplicateKeyError:
            existing = self.read_job(str(doc["id"]))
            return existing if existing is not None else self.create_job(doc)

    def update_job(self, job_id: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Apply `change` (returns False for "nothing to do") until it lands on the current document."""
        while True:
            doc = self.read_job(job_id)
            if doc is None:
                raise KeyError(f"job {job_id} is not in {DATABASE}")
            if not change(doc):
                return doc
            doc["lastUpdateTime"] = now_iso()
            stored = _stored(doc)
            if self.jobs.replace_one({"_id": job_id, "_etag": doc["_etag"]}, stored).matched_count:
                return _shown(stored)

    def all_jobs(self) -> list[dict[str, Any]]:
        return [_shown(d) for d in self.jobs.find().sort("createdTime", ASCENDING)]

    def processed_by_job(self) -> dict[str, int]:
        processed: dict[str, int] = {}
        for unit in self.units.find({}, {"jobId": 1, "processedCount": 1}):
            job_id = str(unit.get("jobId"))
            processed[job_id] = processed.get(job_id, 0) + int(unit.get("processedCount") or 0)
        return processed

    def job_units(self, job_id: str) -> list[dict[str, Any]]:
        found = [_shown(d) for d in self.units.find({"jobId": job_id})]
        return sorted(found, key=lambda d: int(d.get("index", 0)))

    def create_unit(self, doc: dict[str, Any]) -> None:
        try:
            self.units.insert_one(_stored(doc))
        except DuplicateKeyError:
            return  # another instance was first (same ids)

    def replace_unit(self, doc: dict[str, Any], etag: str) -> dict[str, Any]:
        """Write the unit if nobody changed it since `etag`; StateConflict otherwise."""
        stored = _stored(doc)
        if not self.units.replace_one({"_id": doc["id"], "_etag": etag}, stored).matched_count:
            raise StateConflict(str(doc["id"]))
        return _shown(stored)
