"""The layer-keep bitmap: one row per genome, one column per decoder layer.

A custom widget drawing rich ``Text`` rather than a DataTable: a population of 60 over 80 layers
is 4,800 cells, which a DataTable renders slowly, while one Text per refresh is cheap. Kept,
dropped and protected layers differ in colour (theme variables ``bitmap-kept``, ``bitmap-dropped``,
``bitmap-protected``, ``bitmap-best``) and also in glyph, so the bitmap reads on a 256-colour
terminal, in monochrome and in a screenshot alike. The axis labels every layer (tens digit above,
units below). Cells are two columns wide when the widget has room, one column otherwise, so 30
layers fit 80 columns and 80 layers still fit 100; narrower than that, the parent scrolls.

A sub-block run (``granularity = "sublayer"``, ``core/units.py``) draws two rows per genome, one
column per layer still: the attention sub-blocks (units 2 i) on a row labelled ``attn`` and the MLP
sub-blocks (units 2 i + 1) under it on a row labelled ``mlp``. A dropped sub-block has the dropped
glyph, a whole dropped layer is dropped in both rows. Where the labels' extra width does not fit
(64 layers at 80 columns), they shrink to ``a`` and ``m`` and the legend says what they stand for.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from gaprune_tui.core import format as fmt
from gaprune_tui.core.units import ATTENTION, MLP
from gaprune_tui.ui.themes import BITMAP_DEFAULTS
from gaprune_tui.ui.widgets.legend import append_legend

GLYPH_KEPT = "█"
GLYPH_DROPPED = "·"
GLYPH_PROTECTED = "▓"
# Where the active theme does not define a bitmap colour: the app's defaults for those variables.
FALLBACK_COLOURS = BITMAP_DEFAULTS
LABEL_WIDTH = 12  # "★ 0.1234  " + margin
# A sub-block run's label: "★ 0.1234 attn  " / "         mlp   ", or compact: "★ 0.1234 a  ".
SUB_LABEL_WIDTH = 15
SUB_TAGS = {ATTENTION: "attn", MLP: "mlp"}
SUB_TAGS_COMPACT = {ATTENTION: "a", MLP: "m"}


@dataclass
class BitmapRow:
    """One genome to draw. ``fitness`` is None while it has not been scored yet."""

    dropped: list[int]
    fitness: float | None = None
    best: bool = False
    evaluating: bool = False
    # Replaces the ★/▶ marker in the label: a Pareto run's front rows say their k ("k=4").
    marker: str | None = None


class LayerBitmap(Widget, can_focus=True):
    """Draws ``rows`` over ``n_layers``; up/down move a cursor, enter selects the genome."""

    DEFAULT_CSS = """
    LayerBitmap {
        height: auto;
        width: 1fr;
        min-height: 3;
    }
    """

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("enter", "select", "Scores"),
    ]

    cursor: reactive[int] = reactive(0)

    class Selected(Message):
        """The user pressed enter on a row: show that genome's scores."""

        def __init__(self, bitmap: LayerBitmap, dropped: list[int]) -> None:
            super().__init__()
            self.bitmap = bitmap
            self.dropped = dropped

        @property
        def control(self) -> LayerBitmap:
            return self.bitmap

    def __init__(
        self,
        n_layers: int = 0,
        protect: int = 0,
        rows: list[BitmapRow] | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.n_layers = n_layers
        self.protect = protect
        self.rows: list[BitmapRow] = rows or []
        self.best_meaning = "best so far"
        self.granularity = "layer"

    def on_mount(self) -> None:
        # Colours come from the theme: repaint when the user switches themes.
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    def set_rows(
        self,
        n_layers: int,
        protect: int,
        rows: list[BitmapRow],
        *,
        best_meaning: str = "best so far",
        granularity: str = "layer",
    ) -> None:
        """Replace what is drawn (one refresh); the cursor stays on the same index.
        ``best_meaning`` is what the legend says the highlighted row is; ``granularity``
        "sublayer" draws each genome (a list of units) as an attention and an MLP row."""
        size_changed = (
            len(rows) != len(self.rows)
            or n_layers != self.n_layers
            or granularity != self.granularity
        )
        self.best_meaning = best_meaning
        self.granularity = granularity
        self.n_layers = n_layers
        self.protect = protect
        self.rows = rows
        self.cursor = min(self.cursor, max(0, len(rows) - 1))
        self.refresh(layout=size_changed)

    @property
    def selected(self) -> BitmapRow | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def action_cursor(self, delta: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_select(self) -> None:
        row = self.selected
        if row is not None:
            self.post_message(self.Selected(self, list(row.dropped)))

    def watch_cursor(self) -> None:
        self.refresh()

    # ---- drawing --------------------------------------------------------------------------------
    def colours(self) -> dict[str, str]:
        variables = getattr(self.app, "theme_variables", {}) or {}
        return {k: variables.get(k) or v for k, v in FALLBACK_COLOURS.items()}

    @property
    def sublayer(self) -> bool:
        return self.granularity == "sublayer"

    def _head(self, row: BitmapRow) -> str:
        """A genome's label: its marker and its score."""
        marker = "★" if row.best else ("▶" if row.evaluating else " ")
        if row.marker is not None:
            marker = row.marker
        score = "  …   " if row.fitness is None else fmt.score(row.fitness)
        return f"{marker} {score}"

    def label_layout(self, width: int) -> tuple[int, dict[int, str] | None]:
        """(label column width, the sub-block rows' tags or None in a layer run). A sub-block
        run's label holds the tags ``attn`` / ``mlp`` where that still fits one column per layer,
        else ``a`` / ``m`` in the width of a layer run's (wider only for a long label)."""
        if not self.sublayer:
            return LABEL_WIDTH, None
        head = max((len(self._head(r)) for r in self.rows), default=0)
        wide = max(SUB_LABEL_WIDTH, head + len(" attn "))
        if wide + self.n_layers <= width:
            return wide, SUB_TAGS
        return max(LABEL_WIDTH, head + len(" a ")), SUB_TAGS_COMPACT

    def label_width(self, width: int) -> int:
        return self.label_layout(width)[0]

    def cell_width(self, width: int) -> int:
        return 2 if self.label_width(width) + 2 * self.n_layers <= width else 1

    def get_content_width(self, container, viewport) -> int:  # type: ignore[no-untyped-def]
        width = container.width
        return self.label_width(width) + self.cell_width(width) * self.n_layers

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        axis = 2 if self.n_layers >= 10 else 1
        per_genome = 2 if self.sublayer else 1
        return axis + max(1, per_genome * len(self.rows)) + 1

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def render(self) -> Text:
        return self.render_text(self.size.width or 80)

    def render_text(self, width: int) -> Text:
        """The whole bitmap as one Text: axis (2 lines), rows (two per genome in a sub-block
        run), legend."""
        colours = self.colours()
        cw = self.cell_width(width)
        lw, tags = self.label_layout(width)
        kept = Style(color=colours["bitmap-kept"])
        dropped = Style(color=colours["bitmap-dropped"], bold=True)
        protected = Style(color=colours["bitmap-protected"])
        best = Style(color=colours["bitmap-best"], bold=True)
        dim = Style(dim=True)
        text = Text(no_wrap=True, overflow="crop")
        pad = " " * (cw - 1)
        if self.n_layers >= 10:
            text.append("layer".ljust(lw), dim)
            for i in range(self.n_layers):
                text.append((str(i // 10) if i % 10 == 0 else " ") + pad, dim)
            text.append("\n")
        text.append(("layer" if self.n_layers < 10 else "").ljust(lw), dim)
        for i in range(self.n_layers):
            text.append(str(i % 10) + pad, dim)
        text.append("\n")
        if not self.rows:
            text.append("  waiting for the first genomes…\n", dim)

        def cells(gone: set[int], kind: int | None, kept_style: Style) -> None:
            """One line of cells: the layers (kind None) or one kind of their sub-blocks."""
            for i in range(self.n_layers):
                unit = i if kind is None else 2 * i + kind
                if unit in gone:
                    text.append(GLYPH_DROPPED + pad, dropped)
                elif i < self.protect:
                    text.append(GLYPH_PROTECTED + pad, protected)
                else:
                    text.append(GLYPH_KEPT + pad, kept_style)
            text.append("\n")

        for index, row in enumerate(self.rows):
            label = self._head(row)
            label_style = best if row.best else Style()
            if index == self.cursor and self.has_focus:
                label_style = label_style + Style(reverse=True)
            gone = set(row.dropped)
            kept_style = best if row.best else kept
            if tags is None:
                text.append(label.ljust(lw), label_style)
                cells(gone, None, kept_style)
                continue
            for kind in (ATTENTION, MLP):
                head = label if kind == ATTENTION else " " * len(label)
                text.append(head, label_style)
                text.append(f" {tags[kind]}".ljust(lw - len(head)), dim)
                cells(gone, kind, kept_style)
        text.append(" " * lw)
        keys = [
            (GLYPH_KEPT, kept, "kept"),
            (GLYPH_DROPPED, dropped, "dropped"),
            (GLYPH_PROTECTED, protected, "protected"),
            ("★", best, self.best_meaning),
        ]
        if tags is SUB_TAGS_COMPACT:
            keys += [("a", dim, "attention"), ("m", dim, "MLP")]
        append_legend(text, *keys)
        return text
