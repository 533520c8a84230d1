"""What the fitness chart and the front plot share: a small plot drawn as rich ``Text``.

Both draw a title line, ``plot_height`` rows of points behind a labelled value axis (``┤`` on the
top and bottom rows, which carry the bounds), and a category axis with a tick under each column
and its labels. This module holds that frame, the value-to-row scale and the theme colours, so
the two plots differ only in what they place on the grid.
"""

from __future__ import annotations

from collections.abc import Collection

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from gaprune_tui.ui.themes import BITMAP_DEFAULTS

DIM = Style(dim=True)


def row_of(value: float, lo: float, hi: float, height: int) -> int:
    """Row index counted from the top (0) for a value between lo and hi."""
    if hi <= lo:
        return height // 2
    return height - 1 - round((value - lo) / (hi - lo) * (height - 1))


class TextPlot(Widget):
    """A plot ``plot_height`` rows high plus its title and axis lines; repainted when the theme
    changes (its colours come from the theme). Subclasses draw it in ``render_text``."""

    DEFAULT_CSS = """
    TextPlot {
        height: auto;
        width: 1fr;
    }
    """
    default_width = 60  # before the first layout gives the widget its width
    default_plot_height = 6  # rows of points unless the screen asks for another height
    y_label = 8  # columns left of the plot: the value labels and the axis

    def __init__(
        self, *, plot_height: int | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.plot_height = self.default_plot_height if plot_height is None else plot_height

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        return self.plot_height + 3

    def render(self) -> Text:
        return self.render_text(self.size.width or self.default_width)

    def render_text(self, width: int) -> Text:
        raise NotImplementedError

    def colour(self, name: str) -> str:
        """The theme's colour ``name`` (a ``bitmap-*`` variable), or the built-in default."""
        variables = getattr(self.app, "theme_variables", {}) or {}
        return variables.get(name) or BITMAP_DEFAULTS[name]

    def append_empty(self, text: Text) -> None:
        """The bare axes and a note, for a plot with nothing to draw yet."""
        for _ in range(self.plot_height):
            text.append(" " * (self.y_label - 1) + "│\n", DIM)
        text.append(" " * (self.y_label - 1) + "└" + "─" * 10 + "\n", DIM)
        text.append(" " * self.y_label + "no generation finished yet", DIM)

    def append_value_tick(self, text: Text, label: str, edge: bool) -> None:
        """The value axis of one row: ``label`` right-aligned, ``┤`` on an edge row, else ``│``."""
        text.append(label.rjust(self.y_label - 1), DIM)
        text.append("┤" if edge else "│", DIM)

    def append_category_axis(
        self, text: Text, ticks: Collection[int], length: int, labels: str
    ) -> None:
        """The bottom axis, ``length`` columns long with ``┬`` at ``ticks``, then ``labels``."""
        text.append(" " * (self.y_label - 1) + "└", DIM)
        text.append("".join("┬" if c in ticks else "─" for c in range(length)), DIM)
        text.append("\n" + " " * self.y_label)
        text.append(labels, DIM)
