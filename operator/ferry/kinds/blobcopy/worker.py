"""The BlobCopy worker pod's entry point: reads its BlobCopy, runs (or cleans up) the copy, reports progress."""

from __future__ import annotations

import logging
import os
import threading

from ferry.api.blobcopy import WORKER_INDEX_ENV, BlobCopyProgress, BlobCopySpec, BlobCopyStatus
from ferry.api.kinds import BLOB_COPY
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.kinds.blobcopy.engine import CopyStopped, TransientWorkerError, cleanup, endpoints_from_env, run_copy
from ferry.kube.client import ObjectRef
from ferry.workers.outcome import run_worker
from ferry.workers.report import StatusReporter

log = logging.getLogger(__name__)
FIELD_MANAGER = "ferry-worker"


def main(namespace: str, name: str, do_cleanup: bool) -> int:
    return run_worker(lambda stop: _work(namespace, name, do_cleanup, stop))


def _work(namespace: str, name: str, do_cleanup: bool, stop: threading.Event) -> WorkerOutcome:
    obj = ObjectRef(BLOB_COPY, namespace, name).get()
    spec = BlobCopySpec.model_validate(obj["spec"])
    previous = BlobCopyStatus.part_of(obj.get("status"))
    copy_key = obj["metadata"]["uid"]
    endpoints = endpoints_from_env()
    reporter: StatusReporter[BlobCopyProgress] = StatusReporter(BLOB_COPY, namespace, name, FIELD_MANAGER)
    if do_cleanup:
        cleanup(spec, previous, endpoints, reporter.report, copy_key=copy_key)
        log.info("BlobCopy %s/%s: pending copies aborted, leases released", namespace, name)
        return WorkerOutcome(result=OutcomeResult.SUCCEEDED)
    index = int(os.environ.get(WORKER_INDEX_ENV) or 0)
    log.info(
        "BlobCopy %s/%s: %s copy (worker %d of %d), resuming from %s",
        namespace,
        name,
        spec.mode.value,
        index,
        spec.workers,
        previous.progress or "0",
    )
    try:
        outcome = run_copy(
            spec,
            previous,
            endpoints,
            reporter.report,
            stop,
            copy_key=copy_key,
            owner=f"{namespace}/{name}",
            worker_index=index,
        )
    except CopyStopped:
        return WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="stopped at a checkpoint")
    except TransientWorkerError as error:
        return WorkerOutcome(result=OutcomeResult.RETRY, reason="TransientError", message=str(error))
    finally:
        reporter.flush()
    if outcome.succeeded:
        log.info("BlobCopy %s/%s: done", namespace, name)
        return WorkerOutcome(result=OutcomeResult.SUCCEEDED)
    assert outcome.failure is not None
    return WorkerOutcome(result=OutcomeResult.FAILED, reason=outcome.failure.reason, message=outcome.failure.message)
