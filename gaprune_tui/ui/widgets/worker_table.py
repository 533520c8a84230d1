"""The workers of a run scored on several of them (``--workers``, ``--devices``, ``--ray``).

One row per worker: its device, state, the genome in flight, the genomes it scored in this
session and its rate. Mounted on the Run screen only once the run reports more than one worker,
so a one-device run's screen is unchanged (``WorkerTable.show``).
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable

from gaprune_tui.core.follow import RunView, WorkerRow
from gaprune_tui.ui.widgets.generation_table import genome_text

COLUMNS = ("worker", "device", "state", "genome in flight", "evaluations", "genomes/h")


def cells(row: WorkerRow, granularity: str = "layer") -> tuple[str, ...]:
    s = row.status
    rate = row.per_hour
    return (
        s.name,
        s.device or "?",
        s.state,
        genome_text(s.dropped, granularity) if s.dropped else "-",
        str(s.evaluations),
        "-" if rate is None else f"{rate:,.0f}",
    )


class WorkerTable(DataTable[str]):
    """One row per worker; the row key is the worker's name."""

    DEFAULT_CSS = """
    WorkerTable {
        height: auto;
        max-height: 10;
    }
    """

    def __init__(self, *, id: str | None = "workers") -> None:
        super().__init__(id=id, cursor_type="none", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        # Columns now, not on mount: the first rows arrive in the same refresh that mounts it.
        for name in COLUMNS:
            self.add_column(name, key=name)

    def show_rows(self, workers: dict[str, WorkerRow], granularity: str = "layer") -> None:
        for name in sorted(workers):
            row = cells(workers[name], granularity)
            if self._shown.get(name) == row:
                continue
            if name in self._shown:
                for column, value in zip(self.columns, row, strict=False):
                    self.update_cell(name, column, value)
            else:
                self.add_row(*row, key=name)
            self._shown[name] = row

    @classmethod
    def show(cls, screen: Screen[Any], view: RunView, after: str) -> None:
        """Mount the table after the widget ``after`` once the run has more than one worker,
        then keep it current; nothing at all for a one-worker run."""
        found = screen.query(cls)
        if not found:
            if len(view.workers) < 2:
                return
            table = cls()
            anchor = screen.query_one(after)
            if not isinstance(anchor.parent, Widget):
                return
            anchor.parent.mount(table, after=anchor)
        else:
            table = found.first()
        table.show_rows(view.workers, view.started.granularity)
