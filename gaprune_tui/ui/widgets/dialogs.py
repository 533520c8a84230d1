"""Small modal dialogs of the Run and Results screens: confirm, quit-while-running, genome scores.

Each is a ``ModalScreen`` that returns its answer through ``dismiss()`` (the caller passes a
callback), has a plain-letter key for every button and ``escape`` to cancel, so all of them work
over SSH with no mouse.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format as fmt
from gaprune_tui.core import stats
from gaprune_tui.core.follow import RunView
from gaprune_tui.core.units import describe, units_per_layer
from gaprune_tui.ui.widgets.layer_bitmap import BitmapRow, LayerBitmap

AnswerT = TypeVar("AnswerT")
Scores = dict[str, dict[str, Any]]


class HasScores(Protocol):
    """A genome with its search fitness and per-task scores: the follower's scored genome (an
    ``EvaluationFinished``) or a Results row."""

    @property
    def fitness(self) -> float | None: ...

    @property
    def scores(self) -> Scores | None: ...


class Dialog(ModalScreen[AnswerT]):
    """The look every dialog shares (a bordered box in the middle), and an answer per button:
    pressing a button dismisses with ``answer(button id)``. Subclasses' type selectors match this
    class's CSS, so the rules are written once."""

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }
    Dialog > Vertical {
        width: 76;
        max-width: 100%;
        height: auto;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    Dialog Horizontal {
        height: auto;
        margin-top: 1;
    }
    Dialog Button {
        margin-right: 2;
    }
    """

    def answer(self, button_id: str) -> AnswerT:
        raise NotImplementedError

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.answer(event.button.id or ""))


class ConfirmDialog(Dialog[bool]):
    """A yes/no question; ``y`` confirms, ``n``/``escape`` cancels."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes"),
        Binding("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes (y)", no: str = "No (n)") -> None:
        super().__init__(id="confirm")
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            with Horizontal():
                yield Button(self.yes, id="yes", variant="error")
                yield Button(self.no, id="no", variant="primary")

    def answer(self, button_id: str) -> bool:
        return button_id == "yes"


class QuitDialog(Dialog[str]):
    """Quitting while a search runs: leave it running (``l``), stop it (``s``) or cancel."""

    BINDINGS = [
        Binding("l", "dismiss('detach')", "Leave running"),
        Binding("s", "dismiss('stop')", "Stop and quit"),
        Binding("c,escape", "dismiss('cancel')", "Cancel"),
    ]

    def __init__(self) -> None:
        super().__init__(id="quit-dialog")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "The search is still running.\n"
                "Leave it running in the background (reattach with `gaprune-tui attach RUN`),\n"
                "stop it, or stay here?"
            )
            with Horizontal():
                yield Button("Leave running (l)", id="detach", variant="primary")
                yield Button("Stop and quit (s)", id="stop", variant="error")
                yield Button("Cancel (c)", id="cancel")

    def answer(self, button_id: str) -> str:
        return button_id or "cancel"


def _measures(task: str, metrics: dict[str, Any]) -> list[tuple[str, float, float | None, bool]]:
    """(metric, value, stderr, higher is better) of one task's result: its metric, or KL and
    perplexity for the calibration pseudo-task. Standard errors and counts are not rows."""
    if task == fitness_kinds.CALIBRATION:
        return [
            (name, float(metrics[name]), metrics.get(f"{name}_stderr"), False)
            for name in ("kl", "ppl")
            if metrics.get(name) is not None
        ]
    metric = next(iter(metrics), None)
    if metric is None:
        return []
    value, se = stats.task_score(metrics)
    return [(metric, value, se, True)]


def scores_table(
    scores: dict[str, dict[str, Any]] | None,
    base: dict[str, dict[str, Any]] | None,
) -> Table:
    """Per-task scores of a genome beside the unpruned model's, each ± its standard error, with
    the difference and whether it is beyond noise (two standard errors of the difference)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("task", "metric", "score", "base", "change", "vs base"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, metrics in (scores or {}).items():
        base_metrics = (base or {}).get(task) or {}
        base_by_name = {m: (v, s) for m, v, s, _ in _measures(task, base_metrics)}
        for metric, value, se, higher in _measures(task, metrics):
            base_value, base_se = base_by_name.get(metric, (None, None))
            change = verdict = ""
            if base_value is not None:
                change = f"{value - base_value:+.4f}"
                if se is not None and base_se is not None:
                    verdict = stats.compare((value, se), (base_value, base_se), higher).outcome
            table.add_row(
                task,
                metric,
                fmt.score(value, se),
                "" if base_value is None else fmt.score(base_value, base_se),
                change,
                verdict,
            )
    return table


class ScoresDialog(Dialog[None]):
    """One genome's fitness and per-task scores; any of enter/escape/q closes it."""

    BINDINGS = [Binding("escape,enter,q", "dismiss(None)", "Close")]

    def __init__(
        self, view: RunView, dropped: list[int], scored: HasScores | None, note: str | None = None
    ) -> None:
        """``scored`` is None for a genome not scored yet; the run's unpruned model (``view``) is
        drawn beside it."""
        super().__init__(id="scores")
        self.dropped = dropped
        self.note = note
        self.fitness = scored.fitness if scored else None
        self.scores = scored.scores if scored else None
        self.view = view

    def compose(self) -> ComposeResult:
        n_layers, base_fitness = self.view.started.n_layers, self.view.base_fitness
        granularity = self.view.started.granularity
        head = Text()
        if granularity == "sublayer":
            # Units are sub-blocks: say which, attention and MLP apart.
            n_units = n_layers * units_per_layer(granularity)
            head.append("dropped ", style="bold")
            head.append(describe(self.dropped, granularity))
            if n_units:
                head.append(f"   kept {n_units - len(self.dropped)}/{n_units} sub-blocks")
        else:
            kept = n_layers - len(self.dropped) if n_layers else None
            head.append("dropped layers ", style="bold")
            head.append(str(self.dropped))
            if kept is not None:
                head.append(f"   kept {kept}/{n_layers}")
        head.append("\nfitness ", style="bold")
        head.append("not scored yet" if self.fitness is None else fmt.score(self.fitness))
        if base_fitness is not None:
            head.append(f"   (base model {fmt.score(base_fitness)})")
        with Vertical():
            yield Static(head, id="scores-head")
            if granularity == "sublayer" and n_layers:
                # The genome as the Run screen draws it: an attention and an MLP row per layer.
                bitmap = LayerBitmap(
                    n_layers,
                    self.view.started.protect,
                    [BitmapRow(list(self.dropped), self.fitness)],
                    id="scores-bitmap",
                )
                bitmap.granularity = granularity
                bitmap.best_meaning = "this genome"
                yield bitmap
            if self.scores:
                yield Static(scores_table(self.scores, self.view.base_scores), id="scores-table")
            else:
                yield Static("No per-task scores for this genome yet.", id="scores-table")
            if self.note:
                yield Static(self.note, id="scores-note")
            yield Static("[dim]enter / escape closes[/dim]")

    def answer(self, button_id: str) -> None:
        return None


def heal_table(record: dict[str, Any]) -> Table:
    """A heal's measurements before and after, each ± its standard error, with the engine's
    verdict of after against before (paired over the same calibration sequences for KL and
    perplexity)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("measure", "before", "after", "vs before"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    before, after = record.get("before") or {}, record.get("after") or {}
    verdicts = record.get("verdicts") or {}
    for label, key, vkey, digits in (
        ("KL to base", "kl", "kl", 4),
        ("perplexity", "ppl", "nll", 2),
        ("tasks", "confirmed", "confirmed", 4),
        ("held-out", "holdout", "holdout", 4),
    ):
        if before.get(key) is None and after.get(key) is None:
            continue
        outcome = (verdicts.get(vkey) or {}).get("outcome", "")
        table.add_row(
            label,
            fmt.score(before.get(key), before.get(f"{key}_stderr"), digits),
            fmt.score(after.get(key), after.get(f"{key}_stderr"), digits),
            outcome if outcome in ("better", "within noise", "worse") else "",
        )
    return table


class HealDialog(Dialog[None]):
    """A healed row: what was trained, on what, for how long, and before against after."""

    BINDINGS = [Binding("escape,enter,q", "dismiss(None)", "Close")]

    def __init__(self, record: dict[str, Any], summary: str) -> None:
        super().__init__(id="heal-scores")
        self.record = record
        self.summary = summary
        self.heal_table = heal_table(record)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.summary, id="heal-head", markup=False)
            yield Static(self.heal_table, id="heal-table")
            yield Static(
                "[dim]'vs before': beyond two standard errors of the difference, else within "
                "noise. e exports the healed model. enter / escape closes[/dim]"
            )

    def answer(self, button_id: str) -> None:
        return None
