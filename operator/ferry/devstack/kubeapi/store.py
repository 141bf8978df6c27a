"""In-memory object store with a global resourceVersion and a bounded change history."""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

GroupKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

HISTORY_LIMIT = 10000
WATCHER_QUEUE_LIMIT = 10000


@dataclasses.dataclass(frozen=True)
class Change:
    rv: int
    gk: GroupKey
    type: str  # ADDED / MODIFIED / DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the previous state, to turn MODIFIED into ADDED/DELETED under selectors


class Watcher:
    """A subscription to live changes of one resource; overflow closes it instead of growing."""

    def __init__(self, gk: GroupKey) -> None:
        self.gk = gk
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(maxsize=WATCHER_QUEUE_LIMIT)
        self.overflowed = False

    def push(self, change: Change | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True


class Store:
    """Synchronous mutations only (one event loop), so no locking is needed."""

    def __init__(self, history_limit: int = HISTORY_LIMIT) -> None:
        self.rv = 1
        self.objects: dict[GroupKey, dict[ObjKey, dict[str, Any]]] = collections.defaultdict(dict)
        self.history: collections.deque[Change] = collections.deque(maxlen=history_limit)
        self.watchers: set[Watcher] = set()

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def get(self, gk: GroupKey, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects[gk].get((ns, name))

    def items(self, gk: GroupKey, ns: str | None = None) -> Iterator[dict[str, Any]]:
        for (ons, _), obj in sorted(self.objects[gk].items()):
            if ns is None or ons == ns:
                yield obj

    def all_objects(self) -> Iterator[tuple[GroupKey, dict[str, Any]]]:
        for gk, objs in list(self.objects.items()):
            for obj in list(objs.values()):
                yield gk, obj

    def put(self, gk: GroupKey, obj: dict[str, Any], event: str, old: dict[str, Any] | None) -> dict[str, Any]:
        """Store a new state under a fresh resourceVersion and notify watchers."""
        rv = self.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        self.objects[gk][(meta.get("namespace", ""), meta["name"])] = obj
        self._emit(Change(rv, gk, event, obj, old))
        return obj

    def remove(self, gk: GroupKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.objects[gk].pop((meta.get("namespace", ""), meta["name"]), None)
        gone = copy.deepcopy(obj)
        rv = self.next_rv()
        gone["metadata"]["resourceVersion"] = str(rv)
        self._emit(Change(rv, gk, "DELETED", gone, obj))
        return gone

    def _emit(self, change: Change) -> None:
        self.history.append(change)
        for watcher in list(self.watchers):
            if watcher.gk == change.gk:
                watcher.push(change)

    def since(self, gk: GroupKey, rv: int) -> list[Change] | None:
        """Changes newer than ``rv``, or None if the history no longer reaches back that far."""
        trimmed = len(self.history) == self.history.maxlen
        if trimmed and self.history and rv < self.history[0].rv - 1:
            return None
        return [c for c in self.history if c.rv > rv and c.gk == gk]

    def subscribe(self, gk: GroupKey) -> Watcher:
        watcher = Watcher(gk)
        self.watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def close_all(self) -> None:
        for watcher in list(self.watchers):
            watcher.push(None)
