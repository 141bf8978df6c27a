"""How a worker pod tells the operator what became of its work: an exit code and a termination message.

Worker pods run with `terminationMessagePolicy: FallbackToLogsOnError`, so when a worker exits with an
error the kubelet copies the tail of its log into the pod's `state.terminated.message`. The worker's
last log line is its outcome, marked with OUTCOME_MARKER; the operator reads it from the pod and turns
it into the object's status. A worker that dies before it can say anything (killed, out of memory)
leaves no marked line, and the operator falls back to the exit code and the log tail.
"""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import Field, ValidationError

from ferry.api.common import FerryModel

OUTCOME_MARKER = "ferry-outcome: "
# The kubelet keeps at most 2048 bytes of the log tail; the outcome line must fit with room to spare.
MESSAGE_LIMIT = 1024


class OutcomeResult(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # permanent: another worker would fail the same way
    RETRY = "Retry"  # transient: another worker may succeed (within the restart budget)
    STOPPED = "Stopped"  # asked to stop (SIGTERM): the work resumes from its checkpoint


EXIT_CODES: dict[OutcomeResult, int] = {
    OutcomeResult.SUCCEEDED: 0,
    OutcomeResult.RETRY: 1,
    OutcomeResult.FAILED: 2,
    OutcomeResult.STOPPED: 3,
}


class WorkerOutcome(FerryModel):
    result: OutcomeResult
    reason: str = Field(default="", description="CamelCase cause, e.g. SourceNotFound.")
    message: str = Field(default="", description="What happened, in words a user can act on.")

    def line(self) -> str:
        """The marked log line a worker prints last."""
        bounded = self.model_copy(update={"message": self.message[:MESSAGE_LIMIT]})
        return OUTCOME_MARKER + json.dumps(bounded.wire(), ensure_ascii=True, separators=(",", ":"))

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]


def parse_outcome(termination_message: str | None) -> WorkerOutcome | None:
    """The outcome a worker printed last, from a pod's termination message (a log tail), if any."""
    for line in reversed((termination_message or "").splitlines()):
        _, marker, payload = line.partition(OUTCOME_MARKER)
        if not marker:
            continue
        try:
            return WorkerOutcome.model_validate_json(payload)
        except ValidationError:
            return None
    return None
