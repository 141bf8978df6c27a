"""The capture pod of a DatabaseAccount with continuous backup: one capture every interval, its outcome reported.

Its cursor lives in the backup location, committed with the index: a pod killed at any point resumes from
the last committed capture, and what a half-done capture wrote under fresh names is never referenced. A
capture that fails is reported in the status (backup.error) and tried again at the next interval; the
window then shows a gap once captures have been missing for longer than a few intervals.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from ferry.api.common import Failure, parse_duration
from ferry.api.databaseaccount import BackupObservation, BackupReport
from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.backup.store import BackupStore, IndexConflict
from ferry.backup.timeline import restorable_window
from ferry.kinds.databaseaccount.capture import AccountReadFailed, Capturer, CaptureResult, CaptureSettings
from ferry.storage import blobs
from ferry.storage.blobaccount import BlobAccount
from ferry.workers.identity import BLOB_CONTRIBUTOR, storage_identity_failure
from ferry.workers.outcome import PermanentError, run_worker
from ferry.workers.podenv import blob_account_from_env, cosmos_access_from_env, restart_hint
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-backup"
BACKUP_ENV_PREFIX = "FERRY_BACKUP"


def backup_account() -> BlobAccount:
    """The backup location's account from the pod's environment: a connection string (a Secret reference), or a
    blob endpoint and the identity to reach it with."""
    account = blob_account_from_env(os.environ, BACKUP_ENV_PREFIX)
    if account is None:
        raise PermanentError(
            "InvalidBackupLocation",
            "the backup location's connection string is empty: "
            "fill the Secret key spec.backup.location.account.secretRef names",
        )
    return account


def backup_store(container: str, prefix: str) -> BackupStore:
    return BackupStore(backup_account().container_client(container), prefix)


def observation(result: CaptureResult, now: datetime) -> BackupObservation:
    index = result.index
    window = restorable_window(index, now)
    earliest, latest = window if window else (None, None)
    gaps = [g for g in index.gaps if earliest is None or g.end > earliest]
    return BackupObservation(
        earliest_restorable_time=earliest,
        latest_restorable_time=latest,
        backup=BackupReport(
            last_capture_time=index.last_capture,
            last_capture_seconds=round(result.seconds, 3),
            capture_lag_seconds=round((now - latest).total_seconds(), 1) if latest else None,
            versions_captured=index.versions_captured,
            deletion_precision_seconds=result.deletion_precision_seconds,
            gaps=gaps or None,
        ),
    )


def failure_of(error: BaseException, location: BlobAccount | None = None) -> Failure:
    """What a failed capture reports: which side failed, in words a user can act on."""
    if isinstance(error, AccountReadFailed):
        return Failure(reason="AccountUnreachable", message=f"reading the account failed: {error}")
    if location is not None and location.credential is not None:
        found = storage_identity_failure(error, location.client_id, location.name, BLOB_CONTRIBUTOR)
        if found is not None:
            return Failure(reason=found[0], message=f"the backup location: {found[1]}")
    if isinstance(error, AzureError):
        status = blobs.status_code(error)
        if status in (401, 403):
            return Failure(
                reason="LocationAccessDenied",
                message=f"the backup location refused the connection string ({status}): check the Secret of "
                "spec.backup.location.account",
            )
        return Failure(reason="LocationUnreachable", message=f"the backup location failed: {blobs.describe(error)}")
    return Failure(reason="CaptureFailing", message=f"{type(error).__name__}: {blobs.redact(str(error))[:400]}")


def main(
    namespace: str, name: str, interval: str, retention: str, container: str, prefix: str, sweep: str = "10m"
) -> int:
    settings = CaptureSettings(
        retention=parse_duration(retention), interval=parse_duration(interval), deletion_sweep=parse_duration(sweep)
    )
    return run_worker(lambda stop: _capture(namespace, name, settings, container, prefix, stop))


def _capture(
    namespace: str, name: str, settings: CaptureSettings, container: str, prefix: str, stop: threading.Event
) -> WorkerOutcome:
    reporter: StatusReporter[BackupObservation] = StatusReporter(DATABASE_ACCOUNT, namespace, name, FIELD_MANAGER)
    try:
        access = cosmos_access_from_env()
        location = backup_account()
    except PermanentError as error:
        # Said once in the status; exiting would only crash-loop the pod (the key is read when it starts).
        failure = Failure(reason=error.reason, message=restart_hint(error.message))
        log.error("%s: %s", failure.reason, failure.message)
        reporter.report(BackupObservation(backup=BackupReport(error=failure)), force=True)
        while not stop.wait(60.0):
            pass
        return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")
    capturer = Capturer(access, BackupStore(location.container_client(container), prefix), settings)
    last: BackupObservation | None = None
    swept = False
    interval = settings.interval.total_seconds()
    while not stop.is_set():
        started = time.monotonic()
        try:
            result = capturer.run_once()
            last = observation(result, datetime.now(UTC))
            reporter.report(last, force=True)
            log.debug("capture %d: %d records in %.2f s", result.seq, result.records, result.seconds)
            if not swept:  # once per pod: a predecessor may have died between its writes and its commit
                capturer.sweep(result.index)
                swept = True
        except IndexConflict as conflict:
            log.warning("%s; capturing again", conflict)  # a predecessor still finishing: the next capture takes over
        except (AzureError, OSError, AccountReadFailed) as error:
            failure = failure_of(error, location)
            log.warning("capture failed: %s: %s", failure.reason, failure.message)
            kept = last or BackupObservation(backup=BackupReport())
            backup = (kept.backup or BackupReport()).model_copy(update={"error": failure})
            reporter.report(kept.model_copy(update={"backup": backup}), force=True)
        if reporter.gone:
            return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the account was deleted")
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")
