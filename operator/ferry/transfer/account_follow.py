"""What an account's instance pods follow: the account's active copy job and restores, through a watch.

An idle instance makes no requests at all: it waits for the watch to say what changed.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from ferry.api.kinds import DATABASE_ACCOUNT
from ferry.api.outcome import OutcomeResult, WorkerOutcome
from ferry.kube import client

log = logging.getLogger(__name__)
WATCH_SECONDS = 300
RETRY_SECONDS = 5.0


ACCOUNT_DELETED = WorkerOutcome(result=OutcomeResult.STOPPED, reason="Deleted", message="the account was deleted")
ASKED_TO_STOP = WorkerOutcome(result=OutcomeResult.STOPPED, reason="Stopped", message="asked to stop")


def instance_id(account: str) -> str:
    """This process's owner id for leases: a restarted pod of the same name must not take its predecessor's
    leases as its own."""
    return f"{os.environ.get('HOSTNAME') or account}/{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class AccountState:
    active_job: str | None
    instances: int
    active_restores: tuple[str, ...] = ()
    gone: bool = False


class AccountWatch:
    """The account's active job and instance count, kept current by a watch (one request per WATCH_SECONDS)."""

    def __init__(self, namespace: str, name: str, stop: threading.Event) -> None:
        self.namespace, self.name, self.stop = namespace, name, stop
        self._state = AccountState(active_job=None, instances=1)
        self._known = threading.Event()
        self._changed = threading.Condition()
        self._version = 0
        self._thread = threading.Thread(target=self._run, name="account-watch", daemon=True)
        # A waiter sleeps until notified: the stop (SIGTERM) must notify too, or an idle instance would sit out the
        # pod's whole grace period until SIGKILL.
        self._waker = threading.Thread(target=self._wake_on_stop, name="account-watch-stop", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._waker.start()

    def _wake_on_stop(self) -> None:
        self.stop.wait()
        with self._changed:
            self._changed.notify_all()

    @property
    def state(self) -> AccountState:
        return self._state

    @property
    def version(self) -> int:
        return self._version

    def wait_for_change(self, seen: int, timeout: float | None = None) -> None:
        """Until the account changes after version `seen`, the timeout passes or the pod is stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self.stop.is_set(), timeout)

    def _set(self, state: AccountState) -> None:
        with self._changed:
            if state != self._state:
                self._state = state
                self._version += 1
            self._known.set()
            self._changed.notify_all()

    def _run(self) -> None:
        api = client.custom()
        kind = DATABASE_ACCOUNT
        while not self.stop.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    self.namespace,
                    kind.plural,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=WATCH_SECONDS,
                )
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    if event["type"] == "DELETED":
                        self._set(AccountState(None, 1, gone=True))
                        return
                    status = obj.get("status") or {}
                    count = int(((obj.get("spec") or {}).get("copyInstances") or {}).get("count") or 1)
                    restores = tuple(status.get("activeRestores") or ())
                    self._set(AccountState(status.get("activeCopyJob"), count, restores))
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                # 410 Gone: the watch expired; anything else: the API server had a problem. List again.
                if exc.status != 410:
                    log.warning("watch on the account failed (%s); retrying", exc.status)
                    self.stop.wait(RETRY_SECONDS)
            except Exception as exc:  # a dropped connection: watch again after a pause
                log.warning("watch on the account failed (%s); retrying", type(exc).__name__)
                self.stop.wait(RETRY_SECONDS)
