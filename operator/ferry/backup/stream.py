"""Record streams in bounded memory, whatever the container's size.

SortedRuns takes records in any order and gives them back sorted, holding at most one run in memory: a full
run is sorted and spilled to a temporary gzip JSON-lines file, and the runs are merged (heapq.merge) on the
way out. Blobs are read the same way: downloaded to a temporary file and read line by line.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

RUN = 2_000  # records held before a run is spilled: a few MB, whatever the container


def line(record: Any) -> bytes:
    return (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()


def read_lines(source: str | IO[bytes]) -> Iterator[Any]:
    """The records of a gzip JSON-lines file, given by its path or as an open binary file."""
    with gzip.open(source, "rb") as lines:
        for text in lines:
            if text.strip():
                yield json.loads(text)


def write_lines(records: Iterable[Any], target: IO[bytes]) -> int:
    """Gzip JSON lines into `target`; the number of records."""
    count = 0
    with gzip.GzipFile(fileobj=target, mode="wb", compresslevel=6) as out:
        for record in records:
            out.write(line(record))
            count += 1
    return count


class SortedRuns:
    """Records added in any order, read back sorted by `key` (stable: equal keys keep their order)."""

    def __init__(self, key: Callable[[Any], Any], run: int = RUN) -> None:
        self.key = key
        self.run = run
        self._buffer: list[Any] = []
        self._files: list[str] = []
        self.count = 0

    def add(self, record: Any) -> None:
        self._buffer.append(record)
        self.count += 1
        if len(self._buffer) >= self.run:
            self._spill()

    def extend(self, records: Iterable[Any]) -> None:
        for record in records:
            self.add(record)

    def _spill(self) -> None:
        handle, path = tempfile.mkstemp(prefix="ferry-run-", suffix=".jsonl.gz")
        with os.fdopen(handle, "wb") as target:
            write_lines(sorted(self._buffer, key=self.key), target)
        self._files.append(path)
        self._buffer = []

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        """The records sorted (may be read several times)."""
        self._buffer.sort(key=self.key)
        return heapq.merge(*(read_lines(f) for f in self._files), iter(list(self._buffer)), key=self.key)

    def close(self) -> None:
        for path in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._files, self._buffer = [], []

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class SpooledBlob:
    """Records written to a temporary gzip file, to be uploaded from disk."""

    def __init__(self, records: Iterable[Any]) -> None:
        handle, self.path = tempfile.mkstemp(prefix="ferry-blob-", suffix=".jsonl.gz")
        with os.fdopen(handle, "wb") as target:
            self.records = write_lines(records, target)
        self.size = os.path.getsize(self.path)

    def __enter__(self) -> SpooledBlob:
        return self

    def __exit__(self, *_: object) -> None:
        os.unlink(self.path)
