"""The front of a Pareto run: quality against layers dropped, for the Run and Results screens.

Drawn as rich ``Text`` like the fitness chart (no plotting dependency): layers dropped along the
bottom axis (the run's whole range, so a k the search has not reached yet shows as a gap), the
fitness up the left axis with better up (KL and perplexity are drawn upside down and labelled as
they are). The latest front is drawn bold over the fronts of earlier generations, which stay as
dim dots so the user sees the front move; a dominated member (one that a member dropping more
layers matches or beats) and the knee have their own glyphs, so the plot reads without colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format as fmt
from gaprune_tui.core.pareto import FrontPoint
from gaprune_tui.ui.widgets.legend import append_legend
from gaprune_tui.ui.widgets.text_plot import DIM, TextPlot, row_of

GLYPH_FRONT = "●"
GLYPH_DOMINATED = "○"
GLYPH_KNEE = "◆"
GLYPH_EARLIER = "·"
Y_LABEL = 9
MAX_STEP = 8


class FrontPlot(TextPlot):
    """The front after each generation; ``set_fronts`` replaces the data."""

    default_width = 80
    default_plot_height = 7
    y_label = Y_LABEL
    # The fronts and their layer counts, empty until ``set_fronts`` replaces them.
    fronts: Sequence[Sequence[FrontPoint]] = ()
    ks: Sequence[int] = ()
    kind = "squared_mean"
    knee_k: int | None = None
    # What k counts: "layers", or "sub-blocks" in a sub-block run (the x axis says so).
    unit = "layers"

    def set_fronts(
        self,
        fronts: Sequence[Sequence[FrontPoint]],
        prune_range: Sequence[int] | None,
        kind: str,
        knee_k: int | None = None,
        *,
        unit: str = "layers",
    ) -> None:
        """``fronts``: one per generation, the latest last; ``prune_range``: the run's
        [MIN, MAX] (every k in it gets a place on the axis, reached or not); ``unit``: what k
        counts."""
        self.unit = unit
        self.fronts = [list(f) for f in fronts]
        ks = set(range(prune_range[0], prune_range[-1] + 1)) if prune_range else set()
        self.ks = sorted(ks | {p.k for f in self.fronts for p in f})
        self.kind = kind
        self.knee_k = knee_k
        self.refresh(layout=True)

    def _styles(self) -> dict[str, Style]:
        colour = self.colour
        return {
            "front": Style(color=colour("bitmap-best"), bold=True),
            "knee": Style(color=colour("bitmap-best"), bold=True, underline=True),
            "dominated": Style(color=colour("bitmap-dropped")),
            "earlier": Style(color=colour("bitmap-kept"), dim=True),
        }

    def _append_title(self, text: Text, styles: dict[str, Style], width: int) -> None:
        """The kind with its direction, then the key, on one line."""
        key = Text()
        append_legend(
            key,
            (GLYPH_FRONT, styles["front"], "front"),
            (GLYPH_DOMINATED, styles["dominated"], "dominated"),
            (GLYPH_KNEE, styles["knee"], "knee"),
            (GLYPH_EARLIER, styles["earlier"], "earlier fronts"),
        )
        # The key must stay on one line (the height is counted): a narrow plot names the kind
        # by its short label.
        title = fitness_kinds.label(self.kind)
        if len(title) + 2 + len(key) > width:
            title = fitness_kinds.short_label(self.kind)
        text.append(title + "  ", DIM)
        text.append_text(key)
        text.append("\n")

    def render_text(self, width: int) -> Text:
        """Title and key, the plot, the k axis."""
        styles = self._styles()
        text = Text(no_wrap=True, overflow="crop")
        self._append_title(text, styles, width)
        height = self.plot_height
        latest = self.fronts[-1] if self.fronts else []
        if not latest or not self.ks:
            self.append_empty(text)
            return text
        sign = 1.0 if fitness_kinds.higher_is_better(self.kind) else -1.0
        values = [sign * p.fitness for f in self.fronts for p in f if math.isfinite(p.fitness)]
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        step = max(3, min(MAX_STEP, (width - Y_LABEL - 2) // len(self.ks)))
        column = {k: i * step + step // 2 for i, k in enumerate(self.ks)}
        grid: list[list[tuple[str, str]]] = [
            [(" ", "")] * (len(self.ks) * step) for _ in range(height)
        ]

        def place(point: FrontPoint, glyph: str, style: str) -> None:
            if math.isfinite(point.fitness) and point.k in column:
                grid[row_of(sign * point.fitness, lo, hi, height)][column[point.k]] = (
                    glyph,
                    style,
                )

        for earlier in self.fronts[:-1]:
            for point in earlier:
                place(point, GLYPH_EARLIER, "earlier")
        for point in latest:
            if point.k == self.knee_k:
                place(point, GLYPH_KNEE, "knee")
            elif point.dominated:
                place(point, GLYPH_DOMINATED, "dominated")
            else:
                place(point, GLYPH_FRONT, "front")
        for r, cells in enumerate(grid):
            edge = r in (0, height - 1)
            label = fmt.score(sign * (hi if r == 0 else lo)) if edge else ""
            self.append_value_tick(text, label[-(Y_LABEL - 1) :], edge)
            for glyph, style in cells:
                text.append(glyph, styles[style] if style else Style())
            text.append("\n")
        labels = "".join(str(k).center(step) for k in self.ks) + f"  {self.unit} dropped"
        self.append_category_axis(text, set(column.values()), len(self.ks) * step, labels)
        return text
