"""The table of saga runs that ``cloudphone sagas list`` prints, fitted to the terminal.

Ids are what an operator copies into the next command (``sagas show <id>``), so they never
wrap or shorten: on a narrow terminal the least needed columns are left out instead, and the
table's caption says which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from cloudphone.saga import SagaRun

STATUS_STYLE = {
    "PENDING": "cyan",
    "RUNNING": "blue",
    "COMPENSATING": "yellow",
    "COMPLETED": "green",
    "COMPENSATED": "magenta",
    "TIMED_OUT": "magenta",
    "FAILED": "bold red",
}
"""Colour of each saga status (keyed by the status value)."""


def status_markup(status: str) -> str:
    """The status in its colour (Rich markup)."""
    return f"[{STATUS_STYLE.get(status, 'default')}]{status}[/]"


def _needs_attention(run: SagaRun) -> bool:
    return run.status == "FAILED" and not run.resolution


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[SagaRun], str | Text]
    narrowest: int
    """Fewest characters it may be folded to (0: never folded, as wide as its widest cell)."""


_COLUMNS = (
    _Column("id", lambda r: r.id, 0),
    _Column("type", lambda r: r.saga_type, 8),
    _Column("ver", lambda r: str(r.saga_version), 0),
    _Column(
        "status",
        lambda r: Text.from_markup(
            status_markup(r.status) + (" [red]![/]" if _needs_attention(r) else "")
        ),
        0,
    ),
    _Column("step", lambda r: r.current_step or "-", 8),
    _Column("try", lambda r: str(r.attempt), 3),
    _Column("by", lambda r: r.started_by or "-", 6),
    _Column("created (UTC)", lambda r: _time(r.created_at), 10),
    _Column("error", lambda r: Text(str(r.error)) if r.error else "", 10),
)
_LEFT_OUT_FIRST = ("error", "by", "created (UTC)", "try", "ver", "step", "type")
"""Which columns a narrow terminal loses, in order (never the id or the status)."""


def runs_table(runs: Sequence[SagaRun], width: int) -> Table:
    """A table of runs, one per row, that fits ``width`` columns with whole ids."""
    cells = {c.header: [c.cell(r) for r in runs] for c in _COLUMNS}
    widths = {c.header: _min_width(c, cells[c.header]) for c in _COLUMNS}
    shown = [c.header for c in _COLUMNS]
    for header in _LEFT_OUT_FIRST:
        if _table_width([widths[h] for h in shown]) <= width:
            break
        shown.remove(header)
    left_out = [c.header for c in _COLUMNS if c.header not in shown]
    table = Table(
        title=f"{len(runs)} saga runs",
        title_justify="left",
        caption=f"left out to fit: {', '.join(left_out)} (--json has all)" if left_out else None,
        caption_justify="left",
    )
    for column in _COLUMNS:
        if column.header not in shown:
            continue
        if column.narrowest:
            table.add_column(column.header, overflow="fold", min_width=widths[column.header])
        else:
            table.add_column(column.header, no_wrap=True, min_width=widths[column.header])
    for row in zip(*(cells[h] for h in shown), strict=True):
        table.add_row(*row)
    return table


def _min_width(column: _Column, cells: list[str | Text]) -> int:
    widest = max(
        [
            len(column.header),
            *(Text(c).cell_len if isinstance(c, str) else c.cell_len for c in cells),
        ]
    )
    return widest if not column.narrowest else min(widest, column.narrowest)


def _table_width(columns: Sequence[int]) -> int:
    """Characters a table with these column widths takes: a border and padding per column."""
    return sum(columns) + 3 * len(columns) + 1
