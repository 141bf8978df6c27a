"""The start/stop contract the local stack's parts share, and the `with` support that follows from it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Something started and stopped as a whole; `with` stops it however the block ends."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
