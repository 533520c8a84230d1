"""A heal as the Results screen shows it: the live panel, and the words of a healed row.

The panel is a few lines, so it fits an 80x24 terminal under the table: what is healed and the
progress bar, a two-row loss chart (steps left to right, the whole heal's width, so it fills as
the heal advances) beside the latest loss, learning rate, speed and ETA, the measurements before
and after healing as they arrive, and a line on the engine (paused, stopped, gone, finished).

A healed row's verdicts are the engine's (``verdicts`` in its record: ``stats.compare`` of after
against before): shown as they are, so a difference within noise reads "within noise", never as a
gain.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from gaprune_tui.core import format as fmt
from gaprune_tui.core.heal_view import HealProgress, heal_label, measure_line
from gaprune_tui.ui.widgets.generation_table import genome_text

BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 2
Y_LABEL = 8  # the value labels, then the axis
SIDE = 32  # the numbers right of the chart
OUTCOME_STYLE = {"better": "green", "worse": "red", "within noise": "yellow"}
OUTCOMES = tuple(OUTCOME_STYLE)
DIM = Style(dim=True)


def loss_columns(losses: dict[int, float], steps: int, width: int) -> list[float | None]:
    """The loss per chart column: ``steps`` spread over ``width`` columns (one column per step
    when they fit), each column the mean of its steps' losses, None where no step reported yet."""
    steps = max(steps, max(losses, default=0), 1)
    n = min(width, steps)
    sums = [0.0] * n
    counts = [0] * n
    for step, loss in losses.items():
        col = min(n - 1, (max(step, 1) - 1) * n // steps)
        sums[col] += loss
        counts[col] += 1
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def chart_rows(values: list[float | None], rows: int = CHART_ROWS) -> list[str]:
    """Block-character bars, ``rows`` high (8 levels per row), lowest value one eighth high."""
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    levels = rows * 8
    out = [[" "] * len(values) for _ in range(rows)]
    for c, v in enumerate(values):
        if v is None:
            continue
        level = levels if hi <= lo else 1 + round((v - lo) / (hi - lo) * (levels - 1))
        for r in range(rows):  # r = 0 is the bottom row
            fill = max(0, min(8, level - 8 * r))
            out[rows - 1 - r][c] = BLOCKS[fill]
    return ["".join(row) for row in out]


def outcome_text(outcome: str | None) -> Text:
    """An engine verdict, styled; anything else (a missing one) is blank."""
    if outcome not in OUTCOMES:
        return Text("")
    return Text(str(outcome), style=OUTCOME_STYLE[str(outcome)])


def heal_verdicts(record: dict[str, Any], kind: str) -> Text:
    """``KL better · held-out within noise``: the healed genome against itself before healing,
    on calibration text (KL, or perplexity for a perplexity run) and on held-out tasks (the
    confirmed tasks where there are none)."""
    verdicts = record.get("verdicts") or {}
    parts: list[tuple[str, str]] = []
    calibration = ("ppl", "nll") if kind == "ppl" else ("KL", "kl")
    for what, key in (calibration, ("held-out", "holdout"), ("tasks", "confirmed")):
        outcome = (verdicts.get(key) or {}).get("outcome")
        if outcome in OUTCOMES:
            if key == "confirmed" and any(p[0] == "held-out" for p in parts):
                continue
            parts.append((what, outcome))
    text = Text()
    for i, (what, outcome) in enumerate(parts):
        if i:
            text.append(" · ", DIM)
        text.append(f"{what} ")
        text.append_text(outcome_text(outcome))
    return text


def heal_row_cells(record: dict[str, Any], kind: str) -> list[str | Text]:
    """A healed row's fitness, confirmed, held-out and verdict cells: after healing, each ± its
    standard error (the fitness column holds the run's calibration measure; a task-fitness run
    gets the KL, labelled), and the verdicts against before healing."""
    after = record.get("after") or {}
    if kind in ("kl", "ppl"):
        first = fmt.score(after.get(kind), after.get(f"{kind}_stderr"))
    elif after.get("kl") is not None:
        first = f"KL {fmt.score(after['kl'], after.get('kl_stderr'))}"
    else:
        first = ""
    return [
        first,
        fmt.score(after.get("confirmed"), after.get("confirmed_stderr"))
        if after.get("confirmed") is not None
        else "",
        fmt.score(after.get("holdout"), after.get("holdout_stderr"))
        if after.get("holdout") is not None
        else "",
        heal_verdicts(record, kind),
    ]


def record_label(record: dict[str, Any]) -> str:
    """``healed: partial/kd 32,768 tok``."""
    return "healed: " + heal_label(
        str(record.get("method", "?")), str(record.get("objective", "?")), record.get("tokens", 0)
    )


class HealPanel(Static):
    """The live heal: ``show`` replaces what it draws (and redraws it when the width changes)."""

    DEFAULT_CSS = """
    HealPanel {
        height: auto;
        padding: 0 1;
    }
    """

    progress: HealProgress | None = None
    note: Text | str = ""
    eta = True
    kind = "kl"
    granularity = "layer"

    def show(
        self,
        progress: HealProgress | None,
        note: Text | str = "",
        *,
        kind: str = "kl",
        granularity: str = "layer",
    ) -> None:
        self.progress = progress
        self.note = note
        self.kind = kind
        self.granularity = granularity
        self.update(self.panel_text(self.content_size.width or 78))

    def on_resize(self) -> None:
        self.update(self.panel_text(self.content_size.width or 78))

    def panel_text(self, width: int) -> Text:
        p = self.progress
        text = Text(no_wrap=True, overflow="ellipsis")
        if p is None:
            return text
        text.append("heal", style="bold")
        if p.rank:
            text.append(f" rank {p.rank}")
        text.append(f" · drop {genome_text(p.dropped, self.granularity)}")
        if p.label:
            text.append(f" · {p.label}")
        steps = max(p.steps, 1)
        if p.steps:
            done = min(p.step, steps)
            text.append(f" · step {done}/{p.steps} ")
            bar = max(6, min(24, width - len(text.plain) - 6))
            filled = round(bar * done / steps)
            text.append("━" * filled, style="bold")
            text.append("─" * (bar - filled), DIM)
            text.append(f" {100 * done // steps}%")
        text.append("\n")
        self._append_chart(text, p, width)
        text.append("before ", style="bold")
        text.append(
            measure_line(p.before) if p.before else "measuring…", DIM if not p.before else ""
        )
        text.append("\n")
        text.append("after  ", style="bold")
        if p.after:
            text.append(measure_line(p.after))
        elif p.state == "measuring after":
            text.append("measuring…", DIM)
        else:
            text.append("(measured once trained)", DIM)
        if p.record.get("verdicts"):
            text.append("\n")
            text.append("vs before: ", style="bold")
            text.append_text(heal_verdicts(p.record, self.kind))
        if self.note:
            text.append("\n")
            text.append_text(self.note if isinstance(self.note, Text) else Text(self.note))
        return text

    def _append_chart(self, text: Text, p: HealProgress, width: int) -> None:
        """Two rows: the loss chart (its bounds on the axis) and, right of it, the numbers."""
        chart_width = max(10, width - Y_LABEL - SIDE - 2)
        values = loss_columns(p.losses, p.steps, chart_width)
        known = [v for v in values if v is not None]
        bars = chart_rows(values) if known else ["", ""]
        hi, lo = (max(known), min(known)) if known else (None, None)
        latest = p.losses[max(p.losses)] if p.losses else None
        side = [
            f"loss {fmt.score(latest)}" if latest is not None else "loss: no step yet",
            self._speed(p),
        ]
        if latest is not None and p.lr:
            side[0] += f" · lr {p.lr:.1e}"
        for row, (bar, label) in enumerate(zip(bars, (hi, lo), strict=True)):
            value = "" if label is None else fmt.score(label)
            text.append(value.rjust(Y_LABEL - 1)[: Y_LABEL - 1], DIM)
            text.append("┤", DIM)
            text.append(bar.ljust(chart_width), Style(bold=True))
            text.append("  " + side[row] + "\n")

    def _speed(self, p: HealProgress) -> str:
        if p.tokens_per_s is None:
            return ""
        parts = [f"{p.tokens_per_s:,.0f} tok/s"]
        if self.eta and p.eta_s is not None and not p.ended and p.step < p.steps:
            parts.append(f"ETA {fmt.duration(p.eta_s)}")
        return " · ".join(parts)


def heal_summary(record: dict[str, Any], granularity: str = "layer") -> str:
    """``heal ID: drop [3,5], partial / kd, 32,768 tokens (32 steps) of DATA, 12 s``."""
    dropped = genome_text(record.get("dropped", []), granularity)
    line = (
        f"heal {record.get('id', '?')}: drop {dropped}, "
        f"{record.get('method', '?')} / {record.get('objective', '?')}, "
        f"{int(record.get('tokens') or 0):,} tokens ({record.get('steps', '?')} steps) of "
        f"{record.get('data', '?')}, {fmt.duration(float(record.get('seconds') or 0))}"
    )
    if record.get("trainable"):
        line += f", {fmt.params(int(record['trainable']))} parameters trained"
    if record.get("untied_head"):
        line += ", LM head untied"
    return line
