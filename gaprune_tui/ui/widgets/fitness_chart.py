"""A small chart of best and mean fitness per generation, for the Results screen.

Drawn as rich ``Text`` (no plotting dependency): generations along the bottom axis, fitness up
the left axis with its bounds labelled, ``●`` for the best and ``○`` for the mean (``◉`` where
they meet), so it reads without colour as well.
"""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from gaprune_tui.core import format as fmt
from gaprune_tui.ui.themes import BITMAP_DEFAULTS
from gaprune_tui.ui.widgets.legend import append_legend

GLYPH_BEST = "●"
GLYPH_MEAN = "○"
GLYPH_BOTH = "◉"
Y_LABEL = 8


def _row_of(value: float, lo: float, hi: float, height: int) -> int:
    """Row index counted from the top (0) for a value between lo and hi."""
    if hi <= lo:
        return height // 2
    frac = (value - lo) / (hi - lo)
    return height - 1 - round(frac * (height - 1))


class FitnessChart(Widget):
    """Best and mean fitness per generation; ``set_series`` replaces the data."""

    DEFAULT_CSS = """
    FitnessChart {
        height: auto;
        width: 1fr;
    }
    """

    def __init__(
        self, *, plot_height: int = 6, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.plot_height = plot_height
        self.best: list[float] = []
        self.mean: list[float] = []
        # KL and perplexity improve downwards: plotted upside down (better is up), labelled as is.
        self.sign = 1.0
        self.label = "fitness"

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

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

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        return self.plot_height + 3

    def render(self) -> Text:
        return self.render_text(self.size.width or 60)

    def render_text(self, width: int) -> Text:
        variables = getattr(self.app, "theme_variables", {}) or {}
        best_style = Style(
            color=variables.get("bitmap-best") or BITMAP_DEFAULTS["bitmap-best"], bold=True
        )
        mean_style = Style(color=variables.get("bitmap-kept") or BITMAP_DEFAULTS["bitmap-kept"])
        dim = Style(dim=True)
        text = Text(no_wrap=True, overflow="crop")
        text.append(self.label.ljust(Y_LABEL), dim)
        append_legend(
            text, (GLYPH_BEST, best_style, "best"), (GLYPH_MEAN, mean_style, "mean per generation")
        )
        text.append("\n")
        best = [self.sign * v for v in self.best]
        mean = [self.sign * v for v in self.mean]
        n = len(best)
        height = self.plot_height
        if n == 0:
            for _ in range(height):
                text.append(" " * (Y_LABEL - 1) + "│\n", dim)
            text.append(" " * (Y_LABEL - 1) + "└" + "─" * 10 + "\n", dim)
            text.append(" " * Y_LABEL + "no generation finished yet", dim)
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
            rb = _row_of(best[g], lo, hi, height) if math.isfinite(best[g]) else None
            if rb is not None:
                grid[rb][col], kinds[rb][col] = GLYPH_BEST, "best"
            if g < len(mean) and math.isfinite(mean[g]):
                rm = _row_of(mean[g], lo, hi, height)
                if rm == rb:
                    grid[rm][col] = GLYPH_BOTH
                else:
                    grid[rm][col], kinds[rm][col] = GLYPH_MEAN, "mean"
        for r in range(height):
            if r == 0:
                label, tick = fmt.score(self.sign * hi), "┤"
            elif r == height - 1:
                label, tick = fmt.score(self.sign * lo), "┤"
            else:
                label, tick = "", "│"
            text.append(label.rjust(Y_LABEL - 1), dim)
            text.append(tick, dim)
            for c, glyph in enumerate(grid[r]):
                kind = kinds[r][c]
                text.append(
                    glyph,
                    best_style
                    if kind == "best" or glyph == GLYPH_BOTH
                    else (mean_style if kind == "mean" else Style()),
                )
            text.append("\n")
        text.append(" " * (Y_LABEL - 1) + "└", dim)
        text.append("".join(("┬" if c % step == step // 2 else "─") for c in range(n * step)), dim)
        text.append("\n" + " " * Y_LABEL)
        axis = ""
        for g in range(n):
            axis += str(g).center(step)
        text.append(axis + "  generation", dim)
        return text
