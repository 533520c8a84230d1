"""The per-generation table of the Run screen.

A DataTable (a handful of columns, one row per generation: few rows, so DataTable is fine here,
unlike the bitmap). ``show_rows`` only appends or updates what changed, so the cursor and scroll
position survive the live refresh.
"""

from __future__ import annotations

from textual.widgets import DataTable

from gaprune_tui.core import format as fmt
from gaprune_tui.core.store import Generation
from gaprune_tui.core.units import describe

# "best" and "worst" of the generation's population, whichever way the fitness kind points
# (higher task fitness, lower KL or perplexity).
COLUMNS = ("gen", "evaluated", "memo", "best", "mean", "worst", "best genome (dropped)", "seconds")


def genome_text(dropped: list[int], granularity: str = "layer") -> str:
    """A genome as the screens show it: ``[3,9,20]`` (layers), or in a sub-block run what
    ``units.describe`` says (``layers 3, 9 · attn 12, 14 · mlp 20``)."""
    if granularity == "sublayer":
        return describe(dropped, granularity)
    return "[" + ",".join(str(i) for i in dropped) + "]"


class GenerationTable(DataTable[str]):
    """One row per finished generation; the row key is the generation number."""

    DEFAULT_CSS = """
    GenerationTable {
        height: auto;
        max-height: 12;
    }
    """

    def __init__(self, *, show_seconds: bool = True, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.show_seconds = show_seconds
        self._shown: dict[int, tuple[str, ...]] = {}
        self._best: dict[int, list[int]] = {}
        self.higher_is_better = True
        self.granularity = "layer"

    def on_mount(self) -> None:
        columns = COLUMNS if self.show_seconds else COLUMNS[:-1]
        for name in columns:
            self.add_column(name, key=name)

    def cells(self, row: Generation) -> tuple[str, ...]:
        best, worst = (row.max, row.min) if self.higher_is_better else (row.min, row.max)
        cells = (
            str(row.gen),
            str(row.evaluated),
            str(row.from_memo),
            fmt.score(best),
            fmt.score(row.mean),
            fmt.score(worst),
            genome_text(row.best_dropped, self.granularity),
        )
        return cells + (f"{row.seconds:.1f}",) if self.show_seconds else cells

    def show_rows(
        self,
        rows: list[Generation],
        *,
        higher_is_better: bool = True,
        granularity: str = "layer",
    ) -> None:
        """Append or update ``rows``; ``granularity`` says how their genomes read."""
        self.higher_is_better = higher_is_better
        self.granularity = granularity
        for row in rows:
            cells = self.cells(row)
            self._best[row.gen] = row.best_dropped
            if self._shown.get(row.gen) == cells:
                continue
            if row.gen in self._shown:
                for column, value in zip(self.columns, cells, strict=False):
                    self.update_cell(str(row.gen), column, value)
            else:
                self.add_row(*cells, key=str(row.gen))
            self._shown[row.gen] = cells

    def best_at_cursor(self) -> list[int] | None:
        """The best genome of the generation under the cursor."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return None if key is None else self._best.get(int(key))
