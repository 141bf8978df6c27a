"""What a kind tells the rest of Ferry about itself: a KindPlugin, read by the operator, the worker command, the
metrics collector and `ferry status`, none of which names a kind.

A worker role's name is the pod's `ferry.dev/role` label, the segment of its pod name and its command
(`ferry worker <kind> <role>`), so a pod seen in `kubectl get pods` leads to the code it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.api.kinds import Kind
from ferry.runtime.controller import AnyController


@dataclass(frozen=True)
class WorkerRole:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # imports the engine only when the pod runs


@dataclass(frozen=True)
class StatusSummary:
    """How `ferry status` shows an object whose status has no phase (an account): a state, and why not ready."""

    phase: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class KindPlugin:
    kind: Kind
    controller: type[AnyController]
    workers: tuple[WorkerRole, ...] = ()
    # Indexed by spec.accountRef, so that an account's decisions find the objects that name it.
    account_scoped: bool = False
    # For kinds that do not run like jobs (no kind.progress): their line in `ferry status`.
    summary: Callable[[Mapping[str, Any]], StatusSummary] | None = None

    @property
    def runs_like_a_job(self) -> bool:
        """Counted among the jobs of `ferry status` (its summary line, --wait-style checks)."""
        return self.kind.progress is not None


def namespace_and_name(parser: argparse.ArgumentParser, name_help: str = "the object") -> None:
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True, help=name_help)
