"""What an object with a spec.accountRef (a copy job, a restore) sees of its DatabaseAccount."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ferry.api.kinds import DATABASE_ACCOUNT, Kind
from ferry.runtime.objects import meta_of
from ferry.runtime.world import World


def _not_ready(account_status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The account's Ready condition when it is not True."""
    for found in account_status.get("conditions") or []:
        if found.get("type") == "Ready" and found.get("status") != "True":
            return dict(found)
    return None


def not_ready_message(account_status: Mapping[str, Any]) -> str | None:
    """Why the account is not Ready (its Ready condition's message), or None when it is."""
    found = _not_ready(account_status)
    return None if found is None else str(found.get("message") or found.get("reason"))


def not_ready_reason(account_status: Mapping[str, Any]) -> str | None:
    """The reason of the account's Ready condition when it is not True."""
    found = _not_ready(account_status)
    return None if found is None else (str(found.get("reason") or "") or None)


def pods_running(world: World, account_uid: str, role: str) -> bool:
    """Whether any of the account's pods of this role runs (and is not being deleted)."""
    return any(p.phase == "Running" and not p.deleting for p in world.pods(account_uid, role))


def account_and_siblings(kind: Kind, body: Mapping[str, Any], world: World) -> list[Mapping[str, Any]]:
    """An object's account (whose queue and instances follow it) and the account's other objects of its kind
    (whose places in the queue it changes)."""
    meta = meta_of(body)
    account = ((body.get("spec") or {}).get("accountRef") or {}).get("name")
    if not account:
        return []
    found = world.object(DATABASE_ACCOUNT, meta.namespace, account)
    others = [o for o in world.referencing(kind, meta.namespace, account) if o is not body]
    return ([found] if found is not None else []) + others
