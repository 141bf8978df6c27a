"""The DatabaseAccount monitor pod: reads the account's regions every poll interval and reports changes.

It writes only when what it sees changes (a region, or whether the account accepts the key), so an
account that nothing happens to costs the API server nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from pymongo.errors import PyMongoError

from ferry.api.common import parse_duration
from ferry.api.databaseaccount import (
    ACCOUNT_ENV_PREFIX,
    AccountApi,
    AccountConnection,
    AccountObservation,
    ConnectionState,
)
from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.storage.cosmos import (
    AccountForbidden,
    AccountUnauthorized,
    AccountUnreachable,
    CosmosAccess,
    IdentityNotFederated,
    probe,
    read_account_regions,
)
from ferry.storage.mongo import MongoAccess, is_unauthorized, write_host
from ferry.storage.mongo import describe as mongo_describe
from ferry.storage.mongo import is_transient as is_mongo_transient
from ferry.storage.mongo import probe as mongo_probe
from ferry.workers.identity import federation_hint, not_federated
from ferry.workers.outcome import PermanentError, run_worker
from ferry.workers.podenv import account_api, cosmos_access_from_env, mongo_access_from_env, restart_hint
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-account-monitor"


def observe(access: CosmosAccess, last: AccountObservation | None) -> AccountObservation:
    """One look at the account, in words a user can act on; unreachable keeps the regions last seen."""
    try:
        probe(access, _why_not_federated)  # typed errors: refused key or identity versus unreachable
        regions = read_account_regions(access)
    except AccountUnauthorized as exc:
        if isinstance(exc, IdentityNotFederated):
            state = ConnectionState.IDENTITY_NOT_FEDERATED
        elif isinstance(exc, AccountForbidden):
            state = ConnectionState.FORBIDDEN
        elif "local authorization is disabled" in str(exc):
            state = ConnectionState.LOCAL_AUTH_DISABLED
        else:
            state = ConnectionState.UNAUTHORIZED
        return AccountObservation(connection=AccountConnection(state=state, message=str(exc)))
    except AccountUnreachable as exc:
        kept = last or AccountObservation()
        return kept.model_copy(
            update={"connection": AccountConnection(state=ConnectionState.UNREACHABLE, message=str(exc))}
        )
    write = regions.write_regions[0] if regions.write_regions else None
    message = f"write region {write}; read regions {', '.join(regions.read_regions) or 'none'}"
    return AccountObservation(
        write_region=write,
        read_regions=regions.read_regions,
        connection=AccountConnection(state=ConnectionState.CONNECTED, message=message),
    )


def _why_not_federated(error: BaseException) -> str | None:
    if not not_federated(error):
        return None
    return federation_hint(os.environ.get(f"{ACCOUNT_ENV_PREFIX}_CLIENT_ID", "?"))


def observe_mongo(access: MongoAccess, last: AccountObservation | None) -> AccountObservation:
    """One look at a MongoDB API account: its write region is the host that takes writes (the primary the server
    names: a Cosmos DB account's write region's host), so that a failover fails the jobs it would break."""
    try:
        mongo_probe(access)
        host = write_host(access)
    except PyMongoError as error:
        if is_unauthorized(error):
            return AccountObservation(
                connection=AccountConnection(state=ConnectionState.UNAUTHORIZED, message=mongo_describe(error))
            )
        if not is_mongo_transient(error):
            raise
        kept = last or AccountObservation()
        message = f"{access.endpoint.split('@')[-1]} is unreachable: {mongo_describe(error)}"
        return kept.model_copy(
            update={"connection": AccountConnection(state=ConnectionState.UNREACHABLE, message=message)}
        )
    return AccountObservation(
        write_region=host,
        read_regions=[host],
        connection=AccountConnection(state=ConnectionState.CONNECTED, message=f"writes go to {host}"),
    )


def main(namespace: str, name: str, poll_interval: str) -> int:
    return run_worker(lambda stop: _watch(namespace, name, parse_duration(poll_interval).total_seconds(), stop))


def _watch(namespace: str, name: str, interval: float, stop: threading.Event) -> WorkerOutcome:
    reporter: StatusReporter[AccountObservation] = StatusReporter(DATABASE_ACCOUNT, namespace, name, FIELD_MANAGER)
    look: Callable[[AccountObservation | None], AccountObservation]
    try:
        if account_api() == AccountApi.MONGODB:
            mongo = mongo_access_from_env()
            look = lambda last: observe_mongo(mongo, last)  # noqa: E731
        else:
            cosmos = cosmos_access_from_env()
            look = lambda last: observe(cosmos, last)  # noqa: E731
    except PermanentError as error:
        return _unusable_key(error, reporter, stop)
    last: AccountObservation | None = None
    while not stop.is_set():
        seen = look(last)
        if seen != last:
            reporter.report(seen, force=True)
            if seen.connection is not None and (last is None or last.connection != seen.connection):
                log.info("account %s/%s: %s", namespace, name, seen.connection.message)
            last = seen
        if reporter.gone:
            return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the account was deleted")
        stop.wait(interval)
    return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")


def _unusable_key(
    error: PermanentError, reporter: StatusReporter[AccountObservation], stop: threading.Event
) -> WorkerOutcome:
    """Say once that the key is unusable, then wait to be stopped: exiting would only crash-loop the pod.

    The key is read when the pod starts; a new pod (delete this one) reads the corrected Secret.
    """
    message = restart_hint(error.message)
    known = {state.value: state for state in ConnectionState}
    state = known.get(error.reason, ConnectionState.INVALID_CREDENTIALS)
    reporter.report(
        AccountObservation(connection=AccountConnection(state=state, message=message)),
        force=True,
    )
    log.error("%s: %s", error.reason, message)
    while not stop.wait(60.0):
        pass
    return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")
