"""The DatabaseAccount monitor pod: reads the account's regions every regionPollInterval into the status."""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.api.common import parse_duration
from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.kube.client import ObjectRef, is_not_found
from ferry.kube.status import now, set_condition
from ferry.storage.cosmos import AccountUnauthorized, AccountUnreachable, probe, read_account_regions
from ferry.workers import exitcodes
from ferry.workers.podenv import cosmos_access_from_env, stop_on_sigterm

log = logging.getLogger(__name__)


def check_once(ref: ObjectRef, obj: dict[str, Any]) -> None:
    """One look at the account; the Ready condition says why it cannot be reached, in words a user can act on."""
    access = cosmos_access_from_env()
    conditions = (obj.get("status") or {}).get("conditions")
    generation = obj["metadata"].get("generation")
    patch: dict[str, Any] = {"lastRegionCheckTime": now()}
    try:
        probe(access)  # typed errors: refused key (or key auth disabled) versus unreachable
        regions = read_account_regions(access)
    except AccountUnauthorized as exc:
        reason = "LocalAuthDisabled" if "local authorization is disabled" in str(exc) else "Unauthorized"
        patch["conditions"] = set_condition(conditions, "Ready", False, reason, str(exc), generation)
    except AccountUnreachable as exc:
        patch["conditions"] = set_condition(conditions, "Ready", False, "Unreachable", str(exc), generation)
    else:
        write = regions.write_regions[0] if regions.write_regions else None
        patch["writeRegion"] = write
        patch["readRegions"] = regions.read_regions
        message = f"write region {write}; read regions {', '.join(regions.read_regions) or 'none'}"
        patch["conditions"] = set_condition(conditions, "Ready", True, "Connected", message, generation)
    ref.patch_status(patch)


def main(namespace: str, name: str) -> int:
    ref = ObjectRef(DATABASE_ACCOUNT, namespace, name)
    stop = stop_on_sigterm()
    while not stop.is_set():
        try:
            obj = ref.get()
        except ApiException as exc:
            if is_not_found(exc):
                return exitcodes.SUCCEEDED  # the account is gone; so is the need to watch it
            log.warning("could not read DatabaseAccount %s/%s: %s", namespace, name, exc.reason)
            stop.wait(5)
            continue
        started = time.monotonic()
        try:
            check_once(ref, obj)
        except ApiException as exc:
            log.warning("could not write the status of %s/%s: %s", namespace, name, exc.reason)
        interval = parse_duration(obj["spec"].get("regionPollInterval", "60s")).total_seconds()
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return exitcodes.STOPPED
