"""A BlobCopy worker in a process of its own, so that a test can SIGKILL it mid-copy and run another from the status
it last reported: the engine as the worker pod runs it, its status parts appended to a JSON-lines file.

Environment: SPEC (the spec as JSON), REPORTS (the file), KEY (the copy key), and optionally PREVIOUS (the status to
resume from), PAGE_SIZE (listing page size) and FERRY_WORKER_INDEX (which of spec.workers this is), besides the
endpoints' variables the engine reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = """
import json, os, sys, threading
from ferry.api.blobcopy import BlobCopySpec, BlobCopyStatus
from ferry.kinds.blobcopy.engine import endpoints_from_env, run_copy
spec = BlobCopySpec.model_validate(json.loads(os.environ["SPEC"]))
previous = BlobCopyStatus.model_validate(json.loads(os.environ["PREVIOUS"])) if os.environ.get("PREVIOUS") else None
paging = {"page_size": int(os.environ["PAGE_SIZE"])} if os.environ.get("PAGE_SIZE") else {}
paging["worker_index"] = int(os.environ.get("FERRY_WORKER_INDEX") or 0)
with open(os.environ["REPORTS"], "a") as out:
    def report(part, force=False):
        out.write(json.dumps(part.wire()) + "\\n")
        out.flush()
    outcome = run_copy(spec, previous, endpoints_from_env(), report, threading.Event(), os.environ["KEY"], **paging)
sys.exit(0 if outcome.succeeded else 1)
"""


def worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env={**os.environ, **env}, start_new_session=True)


def merged(path: Path) -> dict[str, Any]:
    """The status as the reported parts add up to."""
    status: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        status.update(json.loads(line))
    return status
