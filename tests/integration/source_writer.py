"""Writes to a source container while a copy runs, and waiting on them: for the online copy tests."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from azure.cosmos import ContainerProxy


class Writer:
    """Creates, replaces and deletes source items from a thread, at about `per_second` writes a second."""

    def __init__(self, source: ContainerProxy, items: list[dict[str, Any]], per_second: float, seed: int = 3) -> None:
        self.source = source
        self.items = {str(i["id"]): dict(i) for i in items}
        self.interval = 1.0 / per_second
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.writes = 0
        self.ops = {"create": 0, "replace": 0, "delete": 0}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = 10_000

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._one()
                self.writes += 1
                self.stop.wait(self.interval)
        except BaseException as error:
            self.error = error

    def _one(self) -> None:
        roll = self.rng.random()
        if roll < 0.4 or not self.items:
            self._next += 1
            item = {"id": f"new-{self._next}", "tenant": f"t{self._next % 7}", "city": "c9", "n": 0}
            self.source.create_item(item)
            self.items[item["id"]] = item
            self.ops["create"] += 1
            return
        item_id = self.rng.choice(sorted(self.items))
        if roll < 0.8:
            item = self.items[item_id]
            item["n"] = int(item.get("n", 0)) + 1000
            item["city"] = f"c{self.rng.randrange(5)}"  # moves between the destination's partitions
            self.source.replace_item(item_id, item)
            self.ops["replace"] += 1
        else:
            self.source.delete_item(item_id, self.items.pop(item_id)["tenant"])
            self.ops["delete"] += 1


def wait_for(
    check: Any, seconds: float, what: str, progress: Any = None, limit: float = 240, details: Any = None
) -> None:
    """Wait until check() holds: for `seconds`, or, given progress(), for `seconds` after it last changed
    (a loaded machine is slower, not stuck), but never past `limit`."""
    start = time.monotonic()
    last, deadline = progress() if progress else None, start + seconds
    while True:
        if check():
            return
        now = time.monotonic()
        if progress and (current := progress()) != last:
            last, deadline = current, now + seconds
        if now > min(deadline, start + limit):
            more = f" ({details()})" if details else ""
            raise AssertionError(f"timed out waiting for {what}: no progress for {seconds:.0f} s{more}")
        time.sleep(0.25)
