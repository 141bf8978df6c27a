"""Plain-text tables of the command line (kubectl-style: a header row, columns two spaces apart), drawn by rich."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a table of `rows` under `header`, without colours or borders; cells are never wrapped."""
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="", expand=False)
    for name in header:
        table.add_column(Text(name), no_wrap=True, overflow="ignore")
    body = [list(row) for row in rows]
    for row in body:
        table.add_row(*(Text(cell) for cell in row))
    widest = sum(max(len(str(c)) for c in column) + 2 for column in zip(header, *body, strict=True))
    out = io.StringIO()
    Console(file=out, width=max(80, widest), color_system=None, highlight=False, soft_wrap=False).print(table)
    return [line.rstrip() for line in out.getvalue().splitlines()]
