"""Verification of a finished copy or restore: the destination compared with what it should hold.

Count compares item counts. Full compares every item: each side is reduced to (key, content hash) records —
the key is the id and the source's partition key values, the hash covers the body without system
properties — spilled into sorted runs and merged, so memory stays flat whatever the container's size.

The verification is the job's last work unit (`final`): it is leased like the others, only once they are
all done, so one instance runs it and another takes it over if that one dies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from azure.cosmos import ContainerProxy

from ferry.api.common import Failure
from ferry.api.transfer import Verification, VerifyMode
from ferry.backup.stream import SortedRuns
from ferry.storage.cosmos import partition_key_value, strip_system

VERIFY_UNIT = "verify"
FIRST_DIFFERENCES = 10
READ_PAGE = 1_000


def verification_unit(job_id: str) -> dict[str, Any]:
    """The job's last work unit: taken only once every other unit is done."""
    return {
        "id": f"{job_id}-{VERIFY_UNIT}",
        "jobId": job_id,
        "type": VERIFY_UNIT,
        "final": True,
        "index": -2,
        "owner": None,
        "leaseExpiresAt": 0.0,
        "continuation": None,
        "processedCount": 0,
        "done": False,
    }


def all_items(container: ContainerProxy) -> Iterator[dict[str, Any]]:
    """Every item of the container, page by page (never the whole container at once)."""
    pages = container.query_items(
        "SELECT * FROM c", enable_cross_partition_query=True, max_item_count=READ_PAGE
    ).by_page()
    for page in pages:
        yield from page


def counted(source: int, destination: int) -> Verification:
    return Verification(mode=VerifyMode.COUNT, source_count=source, destination_count=destination)


def _record(body: dict[str, Any], key_paths: list[str], label: str) -> list[str]:
    own = strip_system(body)
    key = json.dumps([str(own.get("id")), partition_key_value(own, key_paths)], default=repr)
    content = hashlib.sha256(json.dumps(own, sort_keys=True, default=repr).encode()).hexdigest()
    return [key, content, f"{label}{own.get('id')}"]


def compared(
    expected: Iterable[dict[str, Any]], found: Iterable[dict[str, Any]], key_paths: list[str], label: str = ""
) -> Verification:
    """Full: every item of `expected` against `found`, matched by id and partition key (`label` prefixes ids)."""

    def key(record: list[str]) -> str:
        return record[0]

    with SortedRuns(key) as want, SortedRuns(key) as have:
        for body in expected:
            want.add(_record(body, key_paths, label))
        for body in found:
            have.add(_record(body, key_paths, label))
        result = Verification(mode=VerifyMode.FULL, source_count=want.count, destination_count=have.count)
        first: list[str] = []

        def note(record: list[str]) -> None:
            if len(first) < FIRST_DIFFERENCES:
                first.append(record[2])

        wants, haves = iter(want), iter(have)
        a, b = next(wants, None), next(haves, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                assert a is not None
                result.missing += 1
                note(a)
                a = next(wants, None)
            elif a is None or b[0] < a[0]:
                result.extra += 1
                note(b)
                b = next(haves, None)
            else:
                if a[1] != b[1]:
                    result.differing += 1
                    note(a)
                a, b = next(wants, None), next(haves, None)
        result.first_differences = first
        return result


def combined(parts: list[Verification]) -> Verification:
    """One verification of several containers (a restored database)."""
    if len(parts) == 1:
        return parts[0]
    mode = parts[0].mode if parts else VerifyMode.COUNT
    return Verification(
        mode=mode,
        source_count=sum(p.source_count for p in parts),
        destination_count=sum(p.destination_count for p in parts),
        missing=sum(p.missing for p in parts),
        extra=sum(p.extra for p in parts),
        differing=sum(p.differing for p in parts),
        first_differences=[i for p in parts for i in p.first_differences][:FIRST_DIFFERENCES],
    )


def verification_failure(result: Verification) -> Failure:
    return Failure(
        reason="VerificationFailed",
        message=f"the destination differs from the source after the job: {result.summary()}; the job wrote "
        "every item, so something else changed the destination (or the source changed during an offline job)",
    )
