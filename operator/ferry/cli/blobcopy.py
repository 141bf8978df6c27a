"""`ferry blobcopy failures` (also `kubectl ferry blobcopy failures`): every failed blob of a BlobCopy, from the
manifest its workers keep in the destination account (the status keeps only the first few)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ferry.kinds.blobcopy.manifest import Manifest

ROWS_PER_TABLE = 1000  # printed in tables of this many rows: a copy may have millions of failures


def _table() -> Table:
    table = Table(box=box.SIMPLE, show_edge=False)
    for column in ("BLOB", "REASON", "MESSAGE"):
        table.add_column(column, overflow="fold")
    return table


def print_failures(manifest: Manifest, console: Console) -> int:
    """Print every recorded failure, a table at a time (memory stays flat); returns how many there were."""
    count = 0
    table = _table()
    for failure in manifest.failures():
        table.add_row(Text(failure.name), Text(failure.reason), Text(failure.message))  # no markup from names
        count += 1
        if table.row_count >= ROWS_PER_TABLE:
            console.print(table)
            table = _table()
    if table.row_count or not count:
        if not count:
            console.print("no failed blobs recorded")
        else:
            console.print(table)
    return count
