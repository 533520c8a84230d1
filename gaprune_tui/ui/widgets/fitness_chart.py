"""A small chart of best and mean fitness per generation, for the Results screen.

Drawn as rich ``Text`` (no plotting dependency): generations along the bottom axis, fitness up
the left axis with its bounds labelled, ``●`` for the best and ``○`` for the mean (``◉`` where
they meet), so it reads without colour as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

from gaprune_tui.core import format as fmt
from gaprune_tui.ui.widgets.legend import append_legend
from gaprune_tui.ui.widgets.text_plot import DIM, TextPlot, row_of

GLYPH_BEST = "●"
GLYPH_MEAN = "○"
GLYPH_BOTH = "◉"
Y_LABEL = 8


class FitnessChart(TextPlot):
    """Best and mean fitness per generation; ``set_series`` replaces the data."""

    y_label = Y_LABEL
    # The series, empty until ``set_series`` replaces them.
    best: Sequence[float] = ()
    mean: Sequence[float] = ()
    # KL and perplexity improve downwards: plotted upside down (better is up), labelled as is.
    sign = 1.0
    label = "fitness"

    def set_series(
        self,
        best: list[float],
        mean: list[float],
        *,
        higher_is_better: bool = True,
        label: str = "fitness",
    ) -> None:
        self.best = list(best)
        self.mean = list(mean)
        self.sign = 1.0 if higher_is_better else -1.0
        self.label = label
        self.refresh(layout=True)

    def render_text(self, width: int) -> Text:
        best_style = Style(color=self.colour("bitmap-best"), bold=True)
        mean_style = Style(color=self.colour("bitmap-kept"))
        text = Text(no_wrap=True, overflow="crop")
        text.append(self.label.ljust(Y_LABEL), DIM)
        append_legend(
            text, (GLYPH_BEST, best_style, "best"), (GLYPH_MEAN, mean_style, "mean per generation")
        )
        text.append("\n")
        best = [self.sign * v for v in self.best]
        mean = [self.sign * v for v in self.mean]
        n = len(best)
        height = self.plot_height
        if n == 0:
            self.append_empty(text)
            return text
        # A KL or perplexity run with --invalid zero scores invalid genomes +inf, so a
        # generation's mean can be +inf: the scale and the points are the finite values only.
        values = [v for v in best + mean if math.isfinite(v)] or [0.0]
        lo, hi = min(values), max(values)
        step = max(2, min(6, (width - Y_LABEL - 2) // max(1, n)))
        grid = [[" "] * (n * step) for _ in range(height)]
        kinds = [[""] * (n * step) for _ in range(height)]
        for g in range(n):
            col = g * step + step // 2
            rb = row_of(best[g], lo, hi, height) if math.isfinite(best[g]) else None
            if rb is not None:
                grid[rb][col], kinds[rb][col] = GLYPH_BEST, "best"
            if g < len(mean) and math.isfinite(mean[g]):
                rm = row_of(mean[g], lo, hi, height)
                if rm == rb:
                    grid[rm][col] = GLYPH_BOTH
                else:
                    grid[rm][col], kinds[rm][col] = GLYPH_MEAN, "mean"
        for r in range(height):
            edge = r in (0, height - 1)
            label = fmt.score(self.sign * (hi if r == 0 else lo)) if edge else ""
            self.append_value_tick(text, label, edge)
            for c, glyph in enumerate(grid[r]):
                kind = kinds[r][c]
                text.append(
                    glyph,
                    best_style
                    if kind == "best" or glyph == GLYPH_BOTH
                    else (mean_style if kind == "mean" else Style()),
                )
            text.append("\n")
        ticks = {g * step + step // 2 for g in range(n)}
        labels = "".join(str(g).center(step) for g in range(n)) + "  generation"
        self.append_category_axis(text, ticks, n * step, labels)
        return text
