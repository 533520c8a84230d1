"""The Results screen: the hall of fame beside the base model, the fitness chart, and export.

A Pareto run shows its front instead: one row per k (the best genome found with k layers
dropped, the knee marked) under the front plot; export, scores and confirmation work the same.

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
from gaprune_tui.core import pareto, stats
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.events import GenomeConfirmed
from gaprune_tui.core.follow import Follower, RunView, as_shown
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.ui.widgets.dialogs import ScoresDialog
from gaprune_tui.ui.widgets.fitness_chart import FitnessChart
from gaprune_tui.ui.widgets.front_plot import FrontPlot
from gaprune_tui.ui.widgets.generation_table import genome_text

HALL_OF_FAME = 20
POLL_SECONDS = 1.0
# Below this terminal height the fitness chart folds away so the table keeps 8 rows or more.
CHART_MIN_HEIGHT = 36
# (store, the row's rank, the row's dropped layers) -> the command line of the export.
ExportCommand = Callable[[RunStore, int, list[int]], list[str]]


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

    @property
    def what(self) -> str:
        """How a status line names the row: "k=4" on a front, "rank 2" in a hall of fame."""
        return f"k={self.k}" if self.k is not None else f"rank {self.rank}"

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
                note=f"front member with {fmt.plural(point.k, 'layer')} dropped ({role})",
                k=point.k,
                knee=point.k == knee,
                dominated=point.dominated,
            )
        )
    return rows


def pick_line(view: RunView, ranked: list[Evaluation]) -> Text:
    """The answer to "is this better than the obvious choice?": the recommended genome (the
    result's, or the best so far) against the best baseline at its k, with standard errors."""
    text = Text()
    result = view.result or {}
    kind = view.started.fitness
    if result.get("headline") and not view.pareto:
        text.append(f"pick: drop {genome_text(result['dropped_layers'])} — ", style="bold")
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
    text.append(f"best so far: drop {genome_text(best.dropped)} — ", style="bold")
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


def front_k(row: ResultRow) -> str:
    """A front row's k cell, marked with the plot's glyphs: ◆ the knee, ○ a dominated member
    (one dropping more layers is as good). Marks, not a column: the front's table is wide."""
    return f"{row.k} ◆" if row.knee else (f"{row.k} ○" if row.dominated else str(row.k))


def params_removed(
    dropped: list[int], n_layers: int, meta: dict[str, Any]
) -> tuple[float | None, bool]:
    """(% of parameters removed, exact?) from meta ``n_params`` and ``params_per_layer`` (the
    engine's list, one count per layer), else the share of decoder layers (not exact: it ignores
    embeddings and the head)."""
    n_params = meta.get("n_params")
    per_layer = meta.get("params_per_layer")
    if n_params and isinstance(per_layer, list) and all(0 <= i < len(per_layer) for i in dropped):
        removed = sum(float(per_layer[i]) for i in dropped)
        return 100.0 * removed / float(n_params), True
    if n_layers:
        return 100.0 * len(dropped) / n_layers, False
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
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, store: RunStore, *, export_command: ExportCommand | None = None) -> None:
        super().__init__(id="results")
        self.store = store
        self.export_command = export_command or default_export_command
        self.follower = Follower(store)
        self.rows: list[ResultRow] = []
        self.export_result: dict[str, Any] | None = None
        self.export_error: str | None = None
        self._columns: tuple[str, ...] = ()
        self._store_failed = False

    def compose(self) -> ComposeResult:
        yield Static(f"results · run {self.store.id}", id="results-title")
        yield Static("", id="pick-line")
        yield Static("", id="base-scores")
        yield FrontPlot(id="front-plot", plot_height=6)
        yield DataTable(id="hall-of-fame", cursor_type="row", zebra_stripes=True)
        yield FitnessChart(id="fitness-chart", plot_height=5)
        yield Static("e exports the selected genome; enter shows its scores.", id="export-status")
        yield RichLog(id="export-log", max_lines=200, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.query_one("#hall-of-fame", DataTable).focus()
        self.query_one("#export-log", RichLog).display = False
        self.set_interval(POLL_SECONDS, self.poll)

    def on_resize(self) -> None:
        self._fold()

    def _fold(self) -> None:
        """On a short terminal the table keeps its rows (at least 8 at 80x24): the fitness
        chart folds away below ``CHART_MIN_HEIGHT`` rows (the Run screen has it live)."""
        chart = self.query_one(FitnessChart)
        chart.display = not self.follower.view.pareto and self.size.height >= CHART_MIN_HEIGHT

    # ---- data ------------------------------------------------------------------------------
    def poll(self) -> None:
        """Reload when the store has news (a running search keeps adding genomes). A store
        that cannot be read is reported once, never raised into the app."""
        try:
            if self.follower.poll():
                self.reload()
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
        # A front's table leaves the per-task scores to the scores dialog (enter): it is wide.
        tasks = list(view.started.tasks) or sorted({t for r in self.rows for t in r.scores})
        if view.pareto:
            tasks = []
        title = [f"results · run {self.store.id}", view.started.model, view.state]
        title.append(f"{len(self.store.evaluations())} evaluations")
        self.query_one("#results-title", Static).update(" · ".join(title))
        ranked = self.store.best_evaluations()
        self.query_one("#pick-line", Static).update(pick_line(view, ranked))
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
            how = (
                "\none row per k: the best genome found with k layers dropped; past the knee "
                "each dropped layer costs more quality"
            )
        else:
            how = "\nbaselines named at their rank; confirmed finalists first (c confirms)"
        text.append(f"{how}; 'vs base': a gap beyond 2 standard errors", style="dim")
        return text

    def _fill_table(self, tasks: list[str], n_layers: int, meta: dict[str, Any]) -> None:
        table = self.query_one("#hall-of-fame", DataTable)
        exact = bool(meta.get("n_params") and meta.get("params_per_layer"))
        pct_header = "% params" if exact else "% layers*"
        view = self.follower.view
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
            pct, _ = params_removed(row.dropped, n_layers, meta)
            if view.pareto:
                cells = [front_k(row), genome_text(row.dropped)]
            else:
                cells = [row.label, genome_text(row.dropped), str(n_layers - len(row.dropped))]
            cells.append("" if pct is None else f"{pct:.1f}")
            cells += row.score_cells(view)
            for task in tasks:
                metrics = row.scores.get(task) or {}
                cells.append(fmt.score(*stats.task_score(metrics)) if metrics else "")
            table.add_row(*cells, key=str(index))
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        if not exact:
            self.query_one("#base-scores", Static).update(
                Text.assemble(
                    self._base_text(self.follower.view, n_layers),
                    ("\n* share of decoder layers dropped; parameter count not recorded", "dim"),
                )
            )

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

    # ---- export ------------------------------------------------------------------------------
    def action_export(self) -> None:
        row = self.selected_row
        if row is None:
            self.notify("No evaluated genome to export yet.", severity="warning")
            return
        rank = row.rank
        if rank is None:
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
        self._status(f"exporting {row.what} (dropping {genome_text(row.dropped)})…")
        log = self.query_one("#export-log", RichLog)
        log.clear()
        log.display = True
        self.run_export(rank, row.dropped)

    @property
    def export_running(self) -> bool:
        return any(w.is_running for w in self.app.workers if w.node is self and w.group == "export")

    @work(exclusive=True, group="export", exit_on_error=False)
    async def run_export(self, rank: int, dropped: list[int]) -> None:
        """Run the export CLI and follow its JSON lines; never raises into the app."""
        cmd = self.export_command(self.store, rank, dropped)
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
