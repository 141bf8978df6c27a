"""The pinned kubectl binary driven against the local stack's control plane."""

from __future__ import annotations

import codecs
import json
import os
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

from ferry_dev.binaries import ensure_tool, kubectl
from ferry_dev.stack import DevStack, ferry_executable


class Kubectl:
    """The real kubectl binary with the stack's kubeconfig, in one namespace."""

    def __init__(self, stack: DevStack, namespace: str) -> None:
        self.stack = stack
        self.namespace = namespace
        self.env = stack.env()
        self.kstatus_message = ""

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [kubectl(), "-n", self.namespace, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return self.run(*args, stdin=stdin).stdout

    def ferry(self, *args: str) -> str:
        """The `ferry` command as a user runs it, with the stack's kubeconfig, in this namespace."""
        done = subprocess.run(
            [ferry_executable(), *args, "--namespace", self.namespace],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def kstatus(self, kind: str, name: str) -> str:
        """What the kstatus library (Flux's and `kubectl apply --wait`'s reading of health) makes of the object:
        InProgress, Current, Failed, Terminating, NotFound or Unknown."""
        done = subprocess.run(
            [str(ensure_tool("kstatus"))],
            input=self("get", kind, name, "-o", "json"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        verdict = json.loads(done.stdout)
        self.kstatus_message = str(verdict["message"])  # why, for an assertion's message
        return str(verdict["status"])

    def wait_condition(self, kind: str, name: str, condition: str, timeout: float = 60) -> None:
        """`kubectl wait --for=condition=...`, as a user or a pipeline runs it."""
        self.run(
            "wait", f"--for=condition={condition}", f"{kind}/{name}", f"--timeout={timeout:.0f}s", timeout=timeout + 10
        )

    def status(self, kind: str, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(kind, name).get("status") or {}
        return status

    def apply(self, manifest: str) -> str:
        return self("apply", "-f", "-", stdin=manifest)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self("get", kind, name, "-o", "json"))
        return obj

    def events(
        self,
        name: str,
        until: Callable[[list[dict[str, Any]]], bool],
        selector: str = "",
        timeout: float = 30,
    ) -> list[dict[str, Any]]:
        """The Events about object `name` (and `selector`, a field selector), once `until` holds for them. The
        operator records an Event after the status write that caused it, so a test that has seen the status may
        ask before the Event exists."""
        fields = ",".join(f for f in (f"involvedObject.name={name}", selector) if f)
        deadline = time.monotonic() + timeout
        while True:
            items: list[dict[str, Any]] = json.loads(self("get", "events", "--field-selector", fields, "-o", "json"))[
                "items"
            ]
            if until(items) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert until(items), [(e.get("reason"), e.get("message")) for e in items]
        return items

    def wait_for(
        self, kind: str, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Until the object satisfies `predicate`: judged on each change a `kubectl get --watch` shows, and again
        each second on the latest state (some predicates also read the pod's log or the data)."""
        obj: dict[str, Any] = {}
        events = self._watch(kind, name, time.monotonic() + timeout)
        try:
            for event in events:
                if event is not None:
                    obj = {} if event.get("type") == "DELETED" else event.get("object") or {}
                if obj and predicate(obj):
                    return obj
        finally:
            events.close()
        raise AssertionError(f"{kind}/{name} did not reach the expected state in {timeout}s: {obj.get('status')}")

    def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(kind, name, lambda o: (o.get("status") or {}).get("phase") == phase, timeout)

    def wait_gone(self, kind: str, name: str, timeout: float = 60) -> None:
        events = self._watch(kind, name, time.monotonic() + timeout)
        try:
            for seen, event in enumerate(events):
                if event is not None and event.get("type") == "DELETED":
                    return
                if event is None and seen % 5 == 0 and self.run("get", kind, name, check=False).returncode != 0:
                    return  # gone before the watch's first list, or between two watches
        finally:
            events.close()
        raise AssertionError(f"{kind}/{name} still exists after {timeout}s")

    def _watch(self, kind: str, name: str, deadline: float) -> Iterator[dict[str, Any] | None]:
        """The object's watch events ({"type": ..., "object": ...}) until `deadline`, and None after each second
        without one. One kubectl process per wait, not one per poll: polling with a kubectl a few times a second
        cost the suite a good part of a CPU. A watch that ends (an API server restart) is opened again."""
        command = [kubectl(), "-n", self.namespace, "get", kind, "--field-selector", f"metadata.name={name}"]
        command += ["--watch", "--output-watch-events", "-o", "json"]
        while time.monotonic() < deadline:
            process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                assert process.stdout is not None
                yield from _json_documents(process.stdout.fileno(), deadline)
            finally:
                process.kill()
                process.wait()
            yield None
            time.sleep(0.3)  # the watch ended: the API server may be restarting


def _json_documents(fd: int, deadline: float) -> Iterator[dict[str, Any] | None]:
    """The JSON documents a stream carries one after another; None after each second without one. Ends at the
    stream's end or at `deadline`."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            yield None
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += text.decode(chunk)
        while buffer := buffer.lstrip():
            try:
                document, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                break  # the rest of this document is still on its way
            buffer = buffer[end:]
            yield document


def with_reasons(*reasons: str) -> Callable[[list[dict[str, Any]]], bool]:
    """For `Kubectl.events`: every one of `reasons` has been recorded."""
    return lambda events: set(reasons) <= {e.get("reason") for e in events}
