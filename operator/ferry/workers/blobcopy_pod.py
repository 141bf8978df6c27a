"""The BlobCopy worker pod's entry point: reads its resource, runs the copy, reports into the status."""

from __future__ import annotations

import logging

from ferry.api.blobcopy import BlobCopySpec, BlobCopyStatus
from ferry.api.kinds import BLOB_COPY
from ferry.kube.client import ObjectRef
from ferry.storage.blobs import redact
from ferry.workers import exitcodes
from ferry.workers.blobcopy import CopyStopped, cleanup, endpoints_from_env, run_copy
from ferry.workers.podenv import status_reporter, stop_on_sigterm

log = logging.getLogger(__name__)


def main(namespace: str, name: str, do_cleanup: bool) -> int:
    ref = ObjectRef(BLOB_COPY, namespace, name)
    obj = ref.get()
    spec = BlobCopySpec.model_validate(obj["spec"])
    previous = BlobCopyStatus.model_validate(obj.get("status") or {})
    endpoints = endpoints_from_env()
    report = status_reporter(ref)
    if do_cleanup:
        cleanup(spec, previous, endpoints, report, copy_key=obj["metadata"]["uid"])
        log.info("BlobCopy %s/%s: pending copies aborted, leases released", namespace, name)
        return exitcodes.SUCCEEDED
    stop = stop_on_sigterm()
    log.info(
        "BlobCopy %s/%s: %s copy, resuming from %s",
        namespace,
        name,
        spec.mode.value,
        previous.progress or "the start",
    )
    try:
        outcome = run_copy(spec, previous, endpoints, report, stop, copy_key=obj["metadata"]["uid"])
    except CopyStopped:
        return exitcodes.STOPPED
    except Exception as exc:  # the operator restarts crashed workers; the log says why, without secrets
        log.error("worker crashed: %s", redact(f"{type(exc).__name__}: {exc}"))
        return exitcodes.CRASHED
    if outcome.succeeded:
        log.info("BlobCopy %s/%s: copied", namespace, name)
        return exitcodes.SUCCEEDED
    if outcome.failure is not None:
        log.error("BlobCopy %s/%s failed: %s: %s", namespace, name, outcome.failure.reason, outcome.failure.message)
        report({"failure": outcome.failure.wire()})
    return exitcodes.FAILED
