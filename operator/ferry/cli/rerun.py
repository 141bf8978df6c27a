"""`ferry jobs rerun`: run a Failed or Cancelled ContainerCopyJob again, in place, by a new ferry.dev/rerun value."""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.api.containercopyjob import RERUN_ANNOTATION, ContainerCopyPhase
from ferry.api.kinds import CONTAINER_COPY_JOB
from ferry.kube.client import ObjectRef, custom

RERUNNABLE = (ContainerCopyPhase.FAILED.value, ContainerCopyPhase.CANCELLED.value)


class RerunRefused(Exception):
    pass


# The request is conditional on the job read (its resourceVersion): the operator may still be writing the status
# of the attempt that just ended, and the job is then read and judged again.
CONFLICT_TRIES = 10


def rerun(namespace: str, name: str) -> str:
    """Ask for the job's next attempt; what was asked, or RerunRefused with the reason (the operator refuses the
    same cases, so an annotation set by hand is no way around it)."""
    for _ in range(CONFLICT_TRIES - 1):
        try:
            return _ask(namespace, name)
        except ApiException as error:
            if error.status != 409:
                raise
            time.sleep(0.2)
    return _ask(namespace, name)


def _ask(namespace: str, name: str) -> str:
    ref = ObjectRef(CONTAINER_COPY_JOB, namespace, name)
    job = ref.get()
    status: dict[str, Any] = job.get("status") or {}
    phase = status.get("phase")
    if phase not in RERUNNABLE:
        why = "it succeeded: apply a new job to copy again" if phase == "Succeeded" else f"it has not ended ({phase})"
        raise RerunRefused(f"ContainerCopyJob {namespace}/{name} is not run again: {why}")
    attempt = int(status.get("attempt") or 1) + 1
    token = rerun_token(attempt, status, (job["metadata"].get("annotations") or {}).get(RERUN_ANNOTATION), time.time())
    metadata = {"annotations": {RERUN_ANNOTATION: token}, "resourceVersion": job["metadata"]["resourceVersion"]}
    kind = CONTAINER_COPY_JOB
    custom().patch_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural, name, {"metadata": metadata}
    )
    return f"ContainerCopyJob {namespace}/{name}: attempt {attempt} asked ({RERUN_ANNOTATION}={token})"


def rerun_token(attempt: int, status: dict[str, Any], current: str | None, now: float) -> str:
    """The annotation value asking for `attempt`: its number, unless that value was used already (say, set by hand
    and refused while the job still ran), which the operator would not act on again."""
    token = str(attempt)
    return token if token not in (status.get("lastRerun"), current) else f"{attempt}-{int(now)}"
