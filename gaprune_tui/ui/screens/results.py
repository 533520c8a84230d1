"""The Results screen: the hall of fame beside the base model, the fitness chart, and export.

A Pareto run shows its front instead: one row per k (the best genome found with k layers
dropped, the knee marked) under the front plot; export, scores and confirmation work the same.

Under the pick's line, what the pick saves (result.json, where the run recorded it): the parameters
removed, the KV cache's reduction and the prompt and generation speed measured on the run's machine
against the base model, and in a sub-block run which attention and MLP sub-blocks it drops.

Healing: ``h`` heals the selected genome in the engine process (``core.launch.heal_run``, with
the default ``HealConfig`` for the run's device); while it runs a panel under the table follows
its events (progress, loss chart, speed, before and after) and p / r / s pause, resume and stop
it as on the Run screen. Every heal in result.json's ``heals`` is a row under its genome's row,
with the healed model's numbers and its verdicts against the genome before healing; ``e`` on it
exports the healed model (``export RUN --healed ID``). ``r`` continues an unfinished heal first,
as ``gaprune-tui resume`` does (``core.resume``).

Export runs the same CLI a user would (``python -m gaprune_tui export RUN --rank N
--progress-json``) as a child process and follows its JSON lines in an async worker: MergeKit and
torch never enter the UI process (they would stall the UI and cost seconds of imports), a crash
of the export cannot take the UI down, and the CLI and the UI cannot drift apart. The command is
a constructor argument so tests can substitute a stand-in that speaks the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static
from textual.worker import Worker, WorkerState

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format as fmt
from gaprune_tui.core import heal as heals
from gaprune_tui.core import launch, pareto, stats
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.events import GenomeConfirmed
from gaprune_tui.core.follow import Follower, RunView, as_shown, last_error_lines
from gaprune_tui.core.heal_view import HealWatch
from gaprune_tui.core.launch import Process
from gaprune_tui.core.resume import resume_choice, start_resume
from gaprune_tui.core.store import ControlAction, Evaluation, RunState, RunStore
from gaprune_tui.core.units import split, units_per_layer
from gaprune_tui.ui.widgets.dialogs import ConfirmDialog, HealDialog, ScoresDialog
from gaprune_tui.ui.widgets.fitness_chart import FitnessChart
from gaprune_tui.ui.widgets.front_plot import FrontPlot
from gaprune_tui.ui.widgets.generation_table import genome_text
from gaprune_tui.ui.widgets.heal_panel import (
    HealPanel,
    heal_row_cells,
    heal_summary,
    heal_verdicts,
    record_label,
)

HALL_OF_FAME = 20
POLL_SECONDS = 1.0
# Below this terminal height the fitness chart folds away so the table keeps 8 rows or more.
CHART_MIN_HEIGHT = 36
# (store, the row's rank, the row's dropped layers) -> the command line of the export.
ExportCommand = Callable[[RunStore, int, list[int]], list[str]]
# (store, heal id) -> the command line of the healed model's export.
HealedExportCommand = Callable[[RunStore, str], list[str]]
# (store, heal id) -> the engine process healing it (``core.launch.heal_run``, or a stand-in).
HealLauncher = Callable[[RunStore, str], Process | None]


def default_export_command(store: RunStore, rank: int, dropped: list[int]) -> list[str]:
    """The export CLI, run with this interpreter so it uses the same installation. The genome
    is named by its dropped layers (``--drop``): the row the user sees is the one exported,
    whichever order (confirmed or search) ranks it."""
    return [
        sys.executable,
        "-m",
        "gaprune_tui",
        "export",
        str(store.path),
        "--drop",
        ",".join(map(str, dropped)),
        "--progress-json",
    ]


def default_healed_export_command(store: RunStore, heal_id: str) -> list[str]:
    """The export CLI on a heal: the pruned model with the healed weights over it."""
    return [
        sys.executable,
        "-m",
        "gaprune_tui",
        "export",
        str(store.path),
        "--healed",
        heal_id,
        "--progress-json",
    ]


@dataclass
class ResultRow:
    """One row of the Results table: a genome of the search (``rank`` is its export rank) or a
    one-shot baseline (rank None unless the search scored it too), with its confirmation."""

    label: str
    dropped: list[int]
    rank: int | None
    fitness: float | None
    scores: dict[str, Any]
    confirmation: GenomeConfirmed | None = None
    note: str = ""
    # A Pareto run's front row: its k, and whether it is the knee or dominated.
    k: int | None = None
    knee: bool = False
    dominated: bool = False
    # A healed row: the heal's record in result.json's ``heals`` (under its genome's row).
    heal: dict[str, Any] | None = None

    @property
    def what(self) -> str:
        """How a status line names the row: "k=4" on a front, "rank 2" in a hall of fame,
        "the healed rank 2" under it."""
        name = f"k={self.k}" if self.k is not None else f"rank {self.rank}"
        return f"the healed {name}" if self.heal is not None else name

    def score_cells(self, view: RunView) -> list[str]:
        """Search fitness, confirmed, held-out (each ± stderr) and the verdict against the base:
        on held-out tasks where measured, else on confirmation, else on the search's fitness."""
        kind = view.started.fitness
        se = fitness_kinds.fitness_stderr(self.scores, kind) if self.scores else None
        c = self.confirmation
        cells = [
            fmt.score(self.fitness, se),
            "" if c is None else fmt.score(c.confirmed, c.confirmed_stderr),
            "" if c is None else fmt.score(c.holdout, c.holdout_stderr),
        ]
        base = next((b for b in view.confirmations if b.role == "base"), None)
        verdict = ""
        if c is not None and base is not None:
            for key in ("holdout", "confirmed"):
                value, base_value = getattr(c, key), getattr(base, key)
                if value is not None and base_value is not None:
                    verdict = fitness_kinds.verdict(
                        value,
                        getattr(c, f"{key}_stderr"),
                        base_value,
                        getattr(base, f"{key}_stderr"),
                        "mean",
                    )
                    break
        elif self.fitness is not None and view.base_fitness is not None and view.base_scores:
            base_se = fitness_kinds.fitness_stderr(view.base_scores, kind)
            verdict = fitness_kinds.verdict(self.fitness, se, view.base_fitness, base_se, kind)
        cells.append("" if verdict == "no stderr" else verdict)
        return cells


@dataclass
class _Lookup:
    """What a row of either table reads about a genome: its search evaluation, its confirmation
    and its export rank (its place in the pick order)."""

    by_genome: dict[tuple[int, ...], Evaluation]
    confirmed: dict[tuple[int, ...], GenomeConfirmed]
    order: list[list[int]]

    @classmethod
    def of(cls, ranked: list[Evaluation], view: RunView) -> _Lookup:
        return cls(
            by_genome={tuple(e.dropped): e for e in ranked},
            confirmed={tuple(c.dropped): c for c in view.confirmations if c.role != "base"},
            order=fitness_kinds.pick_order([e.dropped for e in ranked], view.confirmations),
        )

    def rank(self, dropped: list[int]) -> int | None:
        return self.order.index(dropped) + 1 if dropped in self.order else None


def baseline_names(dropped: list[int], view: RunView) -> list[str]:
    """The baselines whose pick is this genome (names without " k=N")."""
    return sorted(
        {r.name.split(" k=")[0] for r in view.references.values() if list(r.dropped) == dropped}
    )


def result_rows(ranked: list[Evaluation], view: RunView, limit: int) -> list[ResultRow]:
    """Every genome the run scored, the baselines included, in pick order (confirmed finalists
    first, by confirmed score): a baseline sits at its own rank, named, next to the finalists it
    competes with. Baselines ranked past ``limit`` follow as reference rows."""
    known = _Lookup.of(ranked, view)
    confirmed = known.confirmed
    rows = []
    shown: set[tuple[int, ...]] = set()
    for rank, dropped in enumerate(known.order[:limit], start=1):
        ev = known.by_genome.get(tuple(dropped))
        names = baseline_names(dropped, view)
        what = f" = {', '.join(names)}'s pick" if names else ""
        rows.append(
            ResultRow(
                label=f"{rank} {names[0]}{'+' if len(names) > 1 else ''}" if names else str(rank),
                dropped=dropped,
                rank=rank,
                fitness=ev.fitness if ev else None,
                scores=ev.scores if ev else {},
                confirmation=confirmed.get(tuple(dropped)),
                note=f"rank {rank}{what}" + (" (confirmed)" if tuple(dropped) in confirmed else ""),
            )
        )
        shown.add(tuple(dropped))
    for ref in view.references.values():
        if tuple(ref.dropped) in shown:
            continue
        shown.add(tuple(ref.dropped))
        rows.append(
            ResultRow(
                label=f"ref {ref.name}",
                dropped=list(ref.dropped),
                rank=known.rank(ref.dropped),
                fitness=ref.fitness,
                scores=ref.scores,
                confirmation=confirmed.get(tuple(ref.dropped)),
                note=f"baseline {ref.name}",
            )
        )
    return rows


def front_rows(
    front: list[pareto.FrontPoint], ranked: list[Evaluation], view: RunView, knee: int | None
) -> list[ResultRow]:
    """A Pareto run's front, one row per k (sorted by k), each with its search scores, its
    confirmation (a Pareto run confirms one member per k) and its export rank."""
    known = _Lookup.of(ranked, view)
    rows = []
    for point in sorted(front, key=lambda p: p.k):
        dropped = list(point.dropped)
        ev = known.by_genome.get(tuple(dropped))
        role = "knee" if point.k == knee else ("dominated" if point.dominated else "front")
        rows.append(
            ResultRow(
                label=str(point.k),
                dropped=dropped,
                rank=known.rank(dropped),
                fitness=point.fitness,
                scores=ev.scores if ev else {},
                confirmation=known.confirmed.get(tuple(dropped)),
                note=f"front member with {fmt.plural(point.k, unit_word(view))} dropped ({role})",
                k=point.k,
                knee=point.k == knee,
                dominated=point.dominated,
            )
        )
    return rows


def with_heals(rows: list[ResultRow], records: list[dict[str, Any]]) -> list[ResultRow]:
    """``rows`` with a healed row under each genome's row for every heal of it (in the order
    result.json lists them); a heal of a genome not in the table follows at the end."""
    by_genome: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("dropped"), list):
            by_genome.setdefault(tuple(sorted(record["dropped"])), []).append(record)
    out: list[ResultRow] = []
    for row in rows:
        out.append(row)
        for record in by_genome.pop(tuple(sorted(row.dropped)), []):
            out.append(heal_row(record, row))
    for records_left in by_genome.values():
        out += [heal_row(record, None) for record in records_left]
    return out


def heal_row(record: dict[str, Any], parent: ResultRow | None) -> ResultRow:
    """The row of one heal, under ``parent`` (its genome's row, when the table has it)."""
    dropped = list(record.get("dropped") or [])
    rank = parent.rank if parent is not None else record.get("rank") or None
    return ResultRow(
        label="└",
        dropped=dropped,
        rank=rank,
        fitness=None,
        scores={},
        confirmation=None,
        note=f"{record_label(record)} (heal {record.get('id')})",
        k=parent.k if parent is not None else None,
        heal=record,
    )


def pick_line(view: RunView, ranked: list[Evaluation]) -> Text:
    """The answer to "is this better than the obvious choice?": the recommended genome (the
    result's, or the best so far) against the best baseline at its k, with standard errors."""
    text = Text()
    result = view.result or {}
    kind = view.started.fitness
    g = granularity_of(view)
    if result.get("headline") and not view.pareto:
        text.append(f"pick: drop {genome_text(result['dropped_layers'], g)} — ", style="bold")
        verdict = result.get("vs_best_baseline", "")
        style = {"better": "green", "worse": "red"}.get(verdict, "yellow")
        text.append(str(result["headline"]), style=style)
        for key, what in (("confirmed", "confirmed"), ("holdout", "held-out")):
            if result.get(f"{key}_vs_best_baseline"):
                text.append(f" · {what}: {result[f'{key}_vs_best_baseline']}")
        return text
    refs = [r for r in view.references.values() if r.dropped]
    if view.pareto or not ranked or not refs:
        return text
    best = ranked[0]
    same_k = [r for r in refs if len(r.dropped) == len(best.dropped)]
    if not same_k:
        return text
    ref = min(same_k, key=lambda r: (fitness_kinds.rank_key(r.fitness, kind), r.dropped))
    se = fitness_kinds.fitness_stderr(best.scores, kind)
    ref_se = fitness_kinds.fitness_stderr(ref.scores, kind)
    name = ref.name.split(" k=")[0]
    label = fitness_kinds.short_label(kind)
    text.append(f"best so far: drop {genome_text(best.dropped, g)} — ", style="bold")
    if list(ref.dropped) == list(best.dropped):
        text.append(f"{name}'s pick; the search has found nothing better yet", style="yellow")
        return text
    verdict = fitness_kinds.genome_verdict(best.fitness, best.scores, ref.fitness, ref.scores, kind)
    text.append(
        f"{verdict} vs {name}: {label} {fmt.score(best.fitness, se)} vs "
        f"{fmt.score(ref.fitness, ref_se)}",
        style={"better": "green", "worse": "red"}.get(verdict, "yellow"),
    )
    return text


def granularity_of(view: RunView) -> str:
    """The run's granularity: its run_started event's, else result.json's (older runs: layer)."""
    if view.started.granularity != "layer":
        return view.started.granularity
    return str((view.result or {}).get("granularity") or "layer")


def unit_word(view: RunView) -> str:
    """What a genome's k counts: layers, or sub-blocks in a sub-block run."""
    return "sub-block" if granularity_of(view) == "sublayer" else "layer"


def _rate(tokens_per_s: Any) -> str:
    """Tokens per second, as precise as it is useful: ``812``, ``41.7``."""
    if not isinstance(tokens_per_s, int | float):
        return "?"
    return f"{tokens_per_s:,.0f}" if tokens_per_s >= 100 else f"{tokens_per_s:.1f}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def pick_facts(
    result: dict[str, Any] | None, *, pareto_run: bool = False, granularity: str = "layer"
) -> Text:
    """What the pick (a Pareto run's knee) saves, from result.json: in a sub-block run its
    attention and MLP drops apart; the parameters removed (count and share of the model's); the
    KV cache's reduction; the speed the engine measured on its machine, or that it did not.
    Keys a run did not record are left out: empty for a run without any (older runs).
    ``granularity``: the run's, where result.json does not say."""
    text = Text()
    if not result or "dropped_layers" not in result:
        return text
    lines: list[Text] = []
    if str(result.get("granularity") or granularity) == "sublayer":
        lines.append(sublayer_drops(result))
    saves = Text()
    removed, total = result.get("params_removed"), result.get("params_total")
    if isinstance(removed, int | float) and isinstance(total, int | float) and total:
        saves.append("params", style="bold")
        saves.append(
            f" −{fmt.params(int(removed))} of {fmt.params(int(total))} ({_pct(removed / total)})"
        )
    kv = result.get("kv_cache")
    if isinstance(kv, dict) and isinstance(kv.get("reduction"), int | float):
        saves.append(" · " if saves else "")
        saves.append("KV cache", style="bold")
        saves.append(f" −{_pct(kv['reduction'])}")
        if kv.get("layers"):
            saves.append(f" (attention in {kv.get('attention_kept', '?')}/{kv['layers']} layers)")
    if saves:
        lines.append(saves)
    if "speed" in result:
        lines.append(speed_text(result.get("speed")))
    if pareto_run and lines and result.get("knee_k") is not None:
        lines[0] = Text.assemble((f"knee k={result['knee_k']}: ", "bold"), lines[0])
    for i, line in enumerate(lines):
        text.append("\n" if i else "")
        text.append_text(line)
    return text


def sublayer_drops(result: dict[str, Any]) -> Text:
    """A sub-block pick's drops, attention and MLP apart (a whole layer counts in both)."""
    parts = result.get("dropped_split")
    if isinstance(parts, dict):
        whole = list(parts.get("layers") or [])
        attention = sorted([*whole, *(parts.get("attention") or [])])
        mlp = sorted([*whole, *(parts.get("mlp") or [])])
    else:
        whole, attention_only, mlp_only = split(result.get("dropped_layers") or [], "sublayer")
        attention, mlp = sorted(whole + attention_only), sorted(whole + mlp_only)
    text = Text()
    text.append("attention", style="bold")
    text.append(" dropped in ")
    text.append(_layers(attention, "layer"))
    text.append(" · ")
    text.append("MLP", style="bold")
    text.append(" in ")
    text.append(_layers(mlp, ""))
    return text


def _layers(layers: list[int], word: str) -> str:
    """``6 layers: 2, 9, 11`` (``2: 7, 25`` without the word); ``no layer`` for none."""
    if not layers:
        return "no layer"
    count = fmt.plural(len(layers), word) if word else str(len(layers))
    return f"{count}: {', '.join(map(str, layers))}"


def speed_text(speed: Any) -> Text:
    """result.json's ``speed``: the pick's speed-up over the base model and both models' tokens
    per second, timed on the run's machine (medians of a few runs: a measurement there, not a
    quality claim), or "speed not measured"."""
    text = Text()
    if not isinstance(speed, dict):
        text.append("speed", style="bold")
        text.append(" not measured", style="dim")
        return text
    base, pruned = speed.get("base") or {}, speed.get("pruned") or {}
    where = f"measured on {speed.get('device', '?')}"
    if speed.get("threads"):
        where += f", {fmt.plural(int(speed['threads']), 'thread')}"
    text.append(f"{where}: ")
    for i, (what, key) in enumerate((("prompt", "prompt"), ("generation", "generate"))):
        up = speed.get(f"{key}_speedup")
        text.append(", " if i else "")
        text.append(f"{what} {up:.2f}x" if isinstance(up, int | float) else f"{what} ?", "bold")
        text.append(
            f" ({_rate(base.get(f'{key}_tokens_per_s'))}→"
            f"{_rate(pruned.get(f'{key}_tokens_per_s'))} tok/s)"
        )
    return text


def front_k(row: ResultRow) -> str:
    """A front row's k cell, marked with the plot's glyphs: ◆ the knee, ○ a dominated member
    (one dropping more layers is as good). Marks, not a column: the front's table is wide."""
    return f"{row.k} ◆" if row.knee else (f"{row.k} ○" if row.dominated else str(row.k))


def params_removed(
    dropped: list[int], n_layers: int, meta: dict[str, Any], granularity: str = "layer"
) -> tuple[float | None, bool]:
    """(% of parameters removed, exact?) from meta ``n_params`` and ``params_per_layer`` (the
    engine's list, one count per layer; in a sub-block run ``params_per_unit``, one per
    sub-block), else the share of decoder layers or sub-blocks (not exact: it ignores embeddings
    and the head, and that attention and MLP differ in size)."""
    n_params = meta.get("n_params")
    per_unit = meta.get("params_per_unit" if granularity == "sublayer" else "params_per_layer")
    if n_params and isinstance(per_unit, list) and all(0 <= i < len(per_unit) for i in dropped):
        removed = sum(float(per_unit[i]) for i in dropped)
        return 100.0 * removed / float(n_params), True
    n_units = n_layers * units_per_layer(granularity)
    if n_units:
        return 100.0 * len(dropped) / n_units, False
    return None, False


def short_task(name: str) -> str:
    """A column header: the bundled tasks' "_offline" suffix says nothing in a narrow table."""
    return name.removesuffix("_offline")


def verified_text(value: bool | None) -> str:
    """The export's ``verified`` field (True, False, or None when verification was skipped)."""
    if value is None:
        return "not verified"
    return "verification passed" if value else "verification FAILED"


class ResultsScreen(Screen[None]):
    """Hall of fame of a run (its front, for a Pareto run), finished or not, and export of any
    of its rows."""

    BINDINGS = [
        Binding("e", "export", "Export"),
        Binding("c", "confirm", "Confirm"),
        Binding("h", "heal", "Heal"),
        # A heal's controls, shown in the footer only while they apply (``check_action``).
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("s", "stop", "Stop"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        store: RunStore,
        *,
        export_command: ExportCommand | None = None,
        healed_export_command: HealedExportCommand | None = None,
        heal_launcher: HealLauncher | None = None,
    ) -> None:
        super().__init__(id="results")
        self.store = store
        self.export_command = export_command or default_export_command
        self.healed_export_command = healed_export_command or default_healed_export_command
        # None: ``core.launch.heal_run``, looked up when a heal starts.
        self.heal_launcher = heal_launcher
        self.heals = HealWatch(store)
        self.heal_proc: Process | None = None
        # What the footer offers for a heal (refreshed by ``poll``): its controls while one is
        # live, resume while one is paused or unfinished.
        self._heal_live = False
        self._heal_paused = False
        self._resumable = False
        self.follower = Follower(store)
        self.rows: list[ResultRow] = []
        self.export_result: dict[str, Any] | None = None
        self.export_error: str | None = None
        self._columns: tuple[str, ...] = ()
        self._store_failed = False
        self._announced: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Static(f"results · run {self.store.id}", id="results-title")
        yield Static("", id="pick-line")
        yield Static("", id="pick-facts")
        yield Static("", id="base-scores")
        yield FrontPlot(id="front-plot", plot_height=6)
        yield DataTable(id="hall-of-fame", cursor_type="row", zebra_stripes=True)
        yield HealPanel(id="heal-panel")
        yield FitnessChart(id="fitness-chart", plot_height=5)
        yield Static(
            "e exports the selected genome, h heals it; enter shows its scores.",
            id="export-status",
        )
        yield RichLog(id="export-log", max_lines=200, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        panel = self.query_one(HealPanel)
        panel.display = False  # until a heal is there to show (the first poll may find one)
        panel.eta = not getattr(self.app, "deterministic", False)
        self.poll()
        self.query_one("#hall-of-fame", DataTable).focus()
        self.query_one("#export-log", RichLog).display = False
        self.set_interval(POLL_SECONDS, self.poll)

    def on_resize(self) -> None:
        self._fold()

    def _fold(self) -> None:
        """On a short terminal the table keeps its rows (at least 8 at 80x24): the fitness
        chart folds away below ``CHART_MIN_HEIGHT`` rows (the Run screen has it live), and
        the base model's lines while the heal panel takes their place."""
        tall = self.size.height >= CHART_MIN_HEIGHT
        chart = self.query_one(FitnessChart)
        chart.display = not self.follower.view.pareto and tall
        self.query_one("#base-scores").display = tall or not self.query_one(HealPanel).display

    # ---- data ------------------------------------------------------------------------------
    def poll(self) -> None:
        """Reload when the store has news (a running search keeps adding genomes). A store
        that cannot be read is reported once, never raised into the app."""
        try:
            if self.follower.poll():
                self.reload()
            self.poll_heal()
        except (sqlite3.Error, OSError, GapruneError) as exc:
            if not self._store_failed:
                self._store_failed = True
                self.notify(f"Cannot read the run store: {exc}", severity="error", timeout=10)
            return
        self._store_failed = False

    def reload(self) -> None:
        view = self.follower.view
        meta = self.store.meta()
        n_layers = view.started.n_layers or int(meta.get("n_layers") or 0)
        # The engine also keeps the base scores in meta: use them if the event is missing.
        if view.base_scores is None and meta.get("base_scores"):
            view.base_scores = meta["base_scores"]
            view.base_fitness = meta.get("base_fitness")
        knee = pareto.knee_k(view.front, view.started.fitness, (view.result or {}).get("knee_k"))
        if view.pareto:
            self.rows = front_rows(view.front, self.store.best_evaluations(), view, knee)
        else:
            self.rows = result_rows(self.store.best_evaluations(), view, HALL_OF_FAME)
        self.rows = with_heals(self.rows, list((self.store.result() or {}).get("heals") or []))
        # A front's table leaves the per-task scores to the scores dialog (enter): it is wide.
        tasks = list(view.started.tasks) or sorted({t for r in self.rows for t in r.scores})
        if view.pareto:
            tasks = []
        self.query_one("#results-title", Static).update(self._title())
        ranked = self.store.best_evaluations()
        self.query_one("#pick-line", Static).update(pick_line(view, ranked))
        facts = self.query_one("#pick-facts", Static)
        facts_text = pick_facts(
            view.result or self.store.result(),
            pareto_run=view.pareto,
            granularity=granularity_of(view),
        )
        facts.update(facts_text)
        facts.display = bool(facts_text)
        self.query_one("#base-scores", Static).update(self._base_text(view, n_layers))
        self._fill_table(tasks, n_layers, meta)
        plot = self.query_one(FrontPlot)
        plot.display = view.pareto
        self._fold()
        if view.pareto:
            plot.set_fronts(
                [*view.fronts[:-1], view.front],
                view.started.prune_range,
                view.started.fitness,
                knee,
                unit=f"{unit_word(view)}s",
            )
        self.query_one(FitnessChart).set_series(
            view.best_history,
            view.mean_history,
            higher_is_better=view.higher_is_better,
            label=fitness_kinds.short_label(view.started.fitness),
        )

    def _base_text(self, view: RunView, n_layers: int) -> Text:
        text = Text()
        text.append("base model", style="bold")
        if n_layers:
            text.append(f" (all {n_layers} layers)")
        text.append(": ")
        if not view.base_scores:
            text.append("scores not recorded for this run", style="dim")
            return text
        text.append(fmt.scores_line(view.base_scores))
        kind = view.started.fitness
        if view.base_fitness is not None:
            se = fitness_kinds.fitness_stderr(view.base_scores, kind)
            label = fitness_kinds.short_label(kind)
            text.append(f"  {label} {fmt.score(view.base_fitness, se)}", style="bold")
        base = next((c for c in view.confirmations if c.role == "base"), None)
        if base is not None:
            text.append(
                f"  confirmed {fmt.score(base.confirmed, base.confirmed_stderr)}"
                f"  held-out {fmt.score(base.holdout, base.holdout_stderr)}"
            )
        if view.pareto:
            unit = unit_word(view)
            how = (
                f"\none row per k: the best genome found with k {unit}s dropped; past the knee "
                f"each dropped {unit} costs more quality"
            )
        else:
            how = "\nbaselines named at their rank; confirmed finalists first (c confirms)"
        if any(row.heal is not None for row in self.rows):
            how += "; └ healed: vs the genome before healing"
        text.append(f"{how}; 'vs base': a gap beyond 2 standard errors", style="dim")
        return text

    def _fill_table(self, tasks: list[str], n_layers: int, meta: dict[str, Any]) -> None:
        table = self.query_one("#hall-of-fame", DataTable)
        view = self.follower.view
        g = granularity_of(view)
        n_units = n_layers * units_per_layer(g)
        per_unit = "params_per_unit" if g == "sublayer" else "params_per_layer"
        exact = bool(meta.get("n_params") and meta.get(per_unit))
        pct_header = "% params" if exact else f"% {unit_word(view)}s*"
        label = fitness_kinds.short_label(view.started.fitness)
        columns = (
            "k" if view.pareto else "rank",
            "dropped",
            *([] if view.pareto else ["kept"]),
            pct_header,
            label,
            "confirmed",
            "held-out",
            "vs base",
            *map(short_task, tasks),
        )
        cursor = table.cursor_row
        if columns != self._columns:
            table.clear(columns=True)
            for name in columns:
                table.add_column(name, key=name)
            self._columns = columns
        else:
            table.clear()
        for index, row in enumerate(self.rows):
            pct, _ = params_removed(row.dropped, n_layers, meta, g)
            if row.heal is not None:
                heal_cells: list[str | Text] = [row.label, record_label(row.heal)]
                if not view.pareto:
                    heal_cells.append(str(n_units - len(row.dropped)))
                heal_cells.append("" if pct is None else f"{pct:.1f}")
                heal_cells += heal_row_cells(row.heal, view.started.fitness)
                heal_cells += [""] * len(tasks)
                table.add_row(*heal_cells, key=str(index))
                continue
            if view.pareto:
                cells = [front_k(row), genome_text(row.dropped, g)]
            else:
                cells = [row.label, genome_text(row.dropped, g), str(n_units - len(row.dropped))]
            cells.append("" if pct is None else f"{pct:.1f}")
            cells += row.score_cells(view)
            for task in tasks:
                metrics = row.scores.get(task) or {}
                cells.append(fmt.score(*stats.task_score(metrics)) if metrics else "")
            table.add_row(*cells, key=str(index))
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        if not exact:
            what = "sub-blocks" if g == "sublayer" else "decoder layers"
            self.query_one("#base-scores", Static).update(
                Text.assemble(
                    self._base_text(self.follower.view, n_layers),
                    (f"\n* share of {what} dropped; parameter count not recorded", "dim"),
                )
            )

    def _genome(self, dropped: list[int]) -> str:
        return genome_text(dropped, granularity_of(self.follower.view))

    @property
    def selected_row(self) -> ResultRow | None:
        table = self.query_one("#hall-of-fame", DataTable)
        if not self.rows or table.cursor_row < 0:
            return None
        return self.rows[min(table.cursor_row, len(self.rows) - 1)]

    @property
    def selected_rank(self) -> int | None:
        """The export rank of the selected row (None for a baseline the search never scored)."""
        row = self.selected_row
        return None if row is None else row.rank

    # ---- scores -----------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#hall-of-fame")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        row = self.selected_row
        if row is None:
            return
        if row.heal is not None:
            granularity = granularity_of(self.follower.view)
            self.app.push_screen(HealDialog(row.heal, heal_summary(row.heal, granularity)))
            return
        self.app.push_screen(ScoresDialog(self.follower.view, row.dropped, row, row.note))

    # ---- confirmation -------------------------------------------------------------------------
    def action_confirm(self) -> None:
        """Re-score the finalists, baselines and base model on more items and held-out tasks,
        in the engine's own process; the table re-ranks as the confirmations arrive."""
        from gaprune_tui.core.launch import confirm_run

        state = self.store.display_state()
        if self.store.alive():
            self.notify(f"The run is {state}: confirm once it has ended.", severity="warning")
            return
        if not state.has_result:
            self.notify(
                f"The run is {state}: only a finished or stopped search can be confirmed.",
                severity="warning",
            )
            return
        confirm_run(self.store)
        self._status("confirming the finalists on more items and held-out tasks…")

    # ---- healing -------------------------------------------------------------------------------
    def action_heal(self) -> None:
        """Heal the selected genome with the default settings for the run's device, in the
        engine process; refused (one line) while an engine is alive or for a genome that drops
        nothing."""
        row = self.selected_row
        if row is None:
            self._refuse("No evaluated genome to heal yet.")
            return
        if not row.dropped:
            self._refuse(f"{row.what} drops no layer: there is nothing to heal.")
            return
        state = self.store.display_state()
        if self._engine_alive():
            what = "a heal is running" if self._heal_live else f"the run is {state}"
            self._refuse(f"Cannot heal now: {what}; heal once the engine has ended.")
            return
        if not state.has_result:
            choice = resume_choice(self.store, alive=False)
            hint = f" (r continues its {choice.what})" if choice is not None else ""
            self._refuse(
                f"The run is {state}: only a finished or stopped search can be healed{hint}."
            )
            return
        device = str(self.store.meta().get("device") or "cpu")
        try:
            config = heals.HealConfig(tokens=heals.default_tokens(device)).validate()
            rank = row.rank or 0
            heal_id = heals.write_request(self.store, config, row.dropped, rank, str(state))
            self.heal_proc = self._launch_heal(heal_id)
        except (GapruneError, OSError) as exc:
            self._refuse(f"Cannot start the heal: {exc}")
            return
        self.heals.expect(heal_id, row.dropped, rank)
        self._status(
            f"healing {row.what} (dropping {self._genome(row.dropped)}): {config.method} / "
            f"{config.objective} on {config.tokens:,} tokens of {config.data} text; "
            "p pauses, s stops it"
        )
        self.poll_heal(force=True)

    def _launch_heal(self, heal_id: str) -> Process | None:
        launcher = self.heal_launcher or launch.heal_run
        return launcher(self.store, heal_id)

    def _refuse(self, message: str) -> None:
        """A one-line answer to a key that cannot act now: on the status line and as a toast."""
        self._status(message)
        self.notify(message, severity="warning")

    def _engine_alive(self) -> bool:
        """An engine works on this run: the store says so, or the heal this screen started is
        still loading (before it marks the run running)."""
        starting = self.heal_proc is not None and self.heal_proc.poll() is None
        return starting or self.store.alive()

    def poll_heal(self, *, force: bool = False) -> None:
        """Fold new heal events; show the panel while a heal runs (or was watched, or is left
        unfinished), and offer its keys in the footer."""
        changed = self.heals.poll() or force
        starting = self.heal_proc is not None and self.heal_proc.poll() is None
        alive = self.store.alive()
        live = starting or (alive and bool(self.store.meta().get("healing")))
        alive = alive or starting
        paused = live and self.store.state == RunState.PAUSED
        resumable = not alive and resume_choice(self.store, alive=False) is not None
        keys = (live, paused, resumable)
        if keys != (self._heal_live, self._heal_paused, self._resumable):
            self._heal_live, self._heal_paused, self._resumable = keys
            changed = True
            self.refresh_bindings()
            self.query_one("#results-title", Static).update(self._title())
        if changed:
            self._show_heal(alive)

    def _show_heal(self, alive: bool) -> None:
        panel = self.query_one(HealPanel)
        progress = self.heals.current
        shown = progress is not None and (
            not progress.ended or progress.id in self.heals.live or progress.state != "finished"
        )
        if panel.display != shown:
            panel.display = shown
            self._fold()
        if not shown or progress is None:
            return
        note = Text()
        if progress.ended:
            if progress.state == "finished":
                note.append("healed: ", style="bold green")
                note.append("its row is under its genome's in the table; e on it exports it")
            else:
                what = f"{progress.state} at step {progress.step}/{progress.steps or '?'}"
                note.append(
                    f"heal {what}",
                    style="bold red" if progress.state == "failed" else "bold yellow",
                )
                if progress.error:
                    note.append(f": {progress.error}")
                note.append(" · r continues it from its last checkpoint")
        elif not alive:
            note.append("the engine is gone", style="bold red")
            if not progress.losses:  # it died before training: say why, from engine.log
                tail = last_error_lines(self.store.log_path, 1)
                if tail:
                    note.append(f": {tail[-1].strip()}")
            if self._resumable:
                note.append(" · r continues the heal from its last checkpoint")
        elif self._heal_paused:
            note.append("paused", style="bold yellow")
            note.append(" · r resumes, s stops")
        else:
            note.append("p pauses · s stops (r continues it later from its last checkpoint)", "dim")
        view = self.follower.view
        panel.show(progress, note, kind=view.started.fitness, granularity=granularity_of(view))
        if progress.ended and progress.id in self.heals.live and progress.state == "finished":
            self._heal_done(progress.record)

    def _heal_done(self, record: dict[str, Any]) -> None:
        """A heal finished while we watched: say so once, with its verdicts."""
        if record.get("id") in self._announced:
            return
        self._announced.add(str(record.get("id")))
        verdicts = heal_verdicts(record, self.follower.view.started.fitness).plain
        self.notify(f"Heal finished: {verdicts or 'measured'}.", title="Healed", timeout=10)
        self.reload()

    def _title(self) -> str:
        view = self.follower.view
        state = f"{view.state} (healing)" if self._heal_live else str(view.state)
        parts = [f"results · run {self.store.id}", view.started.model, state]
        parts.append(f"{len(self.store.evaluations())} evaluations")
        return " · ".join(parts)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """p and s while a heal runs, r while one is paused or left unfinished (or the search
        can be resumed): the footer offers a key only where it acts."""
        if action in ("pause", "stop"):
            return self._heal_live
        if action == "resume":
            return self._heal_paused or self._resumable
        return True

    def action_pause(self) -> None:
        if not self._heal_live:
            self.notify("No heal is running: h heals the selected genome.", severity="warning")
            return
        if self.store.state == RunState.PAUSED:
            self.notify("Already paused: r resumes.")
            return
        self.store.request(ControlAction.PAUSE)
        self.notify("Pause requested: the heal pauses after the current step.")

    def action_resume(self) -> None:
        alive = self.store.alive()
        if alive and self.store.state == RunState.PAUSED:
            self.store.request(ControlAction.UNPAUSE)
            self.notify("Resume requested.")
            return
        choice = None if self._engine_alive() else resume_choice(self.store, alive=False)
        if choice is None:
            self.notify("Nothing to resume: no heal or search is left unfinished.")
            return
        try:
            if choice.kind == "heal":
                assert choice.heal_id is not None
                self.heal_proc = self._launch_heal(choice.heal_id)
                self.heals.follow(choice.heal_id)
            else:
                start_resume(self.store, choice)
        except (GapruneError, OSError) as exc:
            self.notify(f"Cannot resume: {exc}", severity="error", timeout=10)
            return
        if choice.kind == "heal":
            self._status(f"continuing {choice.what} from its last checkpoint…")
            self.poll_heal(force=True)
        else:
            self.notify("Engine restarted: resuming the search from its last generation.")
            opener = getattr(self.app, "open_run", None)
            if callable(opener):
                opener(self.store)

    def action_stop(self) -> None:
        if not self._heal_live:
            self.notify("No heal is running.", severity="warning")
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.store.request(ControlAction.STOP)
                self.notify("Stop requested: the heal stops after the current step.")

        self.app.push_screen(
            ConfirmDialog(
                "Stop the heal? r continues it later from its last checkpoint.",
                yes="Stop (y)",
                no="Keep healing (n)",
            ),
            answered,
        )

    # ---- export ------------------------------------------------------------------------------
    def action_export(self) -> None:
        row = self.selected_row
        if row is None:
            self.notify("No evaluated genome to export yet.", severity="warning")
            return
        rank = row.rank
        if rank is None and row.heal is None:
            self.notify(
                f"{row.label} is a reference the search never scored: run with --init "
                "heuristics to have the search consider it.",
                severity="warning",
            )
            return
        if self.export_running:
            self.notify("An export is already running.", severity="warning")
            return
        self.export_result = None
        self.export_error = None
        self._status(f"exporting {row.what} (dropping {self._genome(row.dropped)})…")
        log = self.query_one("#export-log", RichLog)
        log.clear()
        log.display = True
        store, dropped, heal = self.store, list(row.dropped), row.heal
        if heal is not None:
            heal_id = str(heal.get("id"))
            self.run_export(lambda: self.healed_export_command(store, heal_id))
        else:
            assert rank is not None
            self.run_export(lambda: self.export_command(store, rank, dropped))

    @property
    def export_running(self) -> bool:
        return any(w.is_running for w in self.app.workers if w.node is self and w.group == "export")

    @work(exclusive=True, group="export", exit_on_error=False)
    async def run_export(self, command: Callable[[], list[str]]) -> None:
        """Run the export CLI (``command()`` builds its command line) and follow its JSON
        lines; never raises into the app."""
        cmd = command()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        other: list[str] = []
        assert proc.stdout is not None
        pending = b""
        try:
            # Read chunks, not lines: a library's progress bar redrawn with \r can make one
            # "line" longer than asyncio's line-length limit.
            while chunk := await proc.stdout.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._export_output(raw, other)
            if pending:
                self._export_output(pending, other)
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            raise
        if self.export_result is None and self.export_error is None:
            reason = other[-1] if other else "no output"
            self._export_failed(f"the export exited with code {code}: {reason}")

    def _export_output(self, raw: bytes, other: list[str]) -> None:
        line = as_shown(raw.decode("utf-8", errors="replace")).rstrip()
        if line and not self._export_line(line):
            other.append(line)

    def _export_line(self, line: str) -> bool:
        """Apply one line of the export's output; False when it is not a protocol line."""
        log = self.query_one("#export-log", RichLog)
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            log.write(line)
            return False
        if not isinstance(data, dict):
            log.write(line)
            return False
        if data.get("error"):
            self._export_failed(str(data["error"]))
        elif data.get("done"):
            self._export_done(data)
        else:
            stage = data.get("stage", "")
            message = data.get("message", "")
            log.write(f"{stage}: {message}" if stage and message else str(stage or message))
            self.query_one("#export-status", Static).update(
                f"exporting… {stage}" + (f": {message}" if message else "")
            )
        return True

    def _export_done(self, data: dict[str, Any]) -> None:
        self.export_result = data
        text = Text.assemble(("Exported to ", "bold"), str(data.get("path", "?")))
        before, after = data.get("params_before"), data.get("params_after")
        if before and after:
            text.append(f" · {100 * (before - after) / before:.1f}% parameters removed")
        if data.get("size_bytes"):
            text.append(f" · {fmt.size(data['size_bytes'])}")
        text.append("\n")
        verdict = verified_text(data.get("verified"))
        summary = data.get("summary")
        text.append(
            str(summary) if summary else verdict,
            "bold" if data.get("verified") is not False else "bold red",
        )
        self._status(text, "done")
        self.notify(f"Exported to {data.get('path')}", title="Export done", timeout=10)

    def _status(self, text: str | Text, outcome: Literal["", "done", "error"] = "") -> None:
        """The export line: in progress (plain), done (green) or failed (red)."""
        status = self.query_one("#export-status", Static)
        status.set_class(outcome == "done", "done")
        status.set_class(outcome == "error", "error")
        status.update(text)

    def _export_failed(self, error: str) -> None:
        self.export_error = error
        self._status(Text.assemble(("Export failed: ", "bold"), error), "error")
        self.notify(error, title="Export failed", severity="error", timeout=10)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "export" and event.state == WorkerState.ERROR:
            self._export_failed(f"could not run the export: {event.worker.error}")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
