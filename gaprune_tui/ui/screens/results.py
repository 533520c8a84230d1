"""The Results screen: the hall of fame beside the base model, the fitness chart, and export.

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
from typing import Any, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static
from textual.worker import Worker, WorkerState

from gaprune_tui.core import format as fmt
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.follow import Follower, RunView, as_shown
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.ui.widgets.dialogs import ScoresDialog
from gaprune_tui.ui.widgets.fitness_chart import FitnessChart
from gaprune_tui.ui.widgets.generation_table import genome_text

HALL_OF_FAME = 20
POLL_SECONDS = 1.0
ExportCommand = Callable[[RunStore, int], list[str]]


def default_export_command(store: RunStore, rank: int) -> list[str]:
    """The export CLI, run with this interpreter so it uses the same installation."""
    return [
        sys.executable,
        "-m",
        "gaprune_tui",
        "export",
        str(store.path),
        "--rank",
        str(rank),
        "--progress-json",
    ]


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
    """Hall of fame of a run (finished or not) and export of any of its rows."""

    BINDINGS = [
        Binding("e", "export", "Export"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, store: RunStore, *, export_command: ExportCommand | None = None) -> None:
        super().__init__(id="results")
        self.store = store
        self.export_command = export_command or default_export_command
        self.follower = Follower(store)
        self.ranked: list[Evaluation] = []
        self.export_result: dict[str, Any] | None = None
        self.export_error: str | None = None
        self._columns: tuple[str, ...] = ()
        self._store_failed = False

    def compose(self) -> ComposeResult:
        yield Static(f"results · run {self.store.id}", id="results-title")
        yield Static("", id="base-scores")
        yield DataTable(id="hall-of-fame", cursor_type="row", zebra_stripes=True)
        yield FitnessChart(id="fitness-chart", plot_height=5)
        yield Static("e exports the selected genome; enter shows its scores.", id="export-status")
        yield RichLog(id="export-log", max_lines=200, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.query_one("#hall-of-fame", DataTable).focus()
        self.set_interval(POLL_SECONDS, self.poll)

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
        n_layers = view.n_layers or int(meta.get("n_layers") or 0)
        # The engine also keeps the base scores in meta: use them if the event is missing.
        if view.base_scores is None and meta.get("base_scores"):
            view.base_scores = meta["base_scores"]
            view.base_fitness = meta.get("base_fitness")
        self.ranked = self.store.best_evaluations(HALL_OF_FAME)
        tasks = list(view.tasks) or sorted({t for e in self.ranked for t in e.scores})
        title = [f"results · run {self.store.id}", view.model, view.state]
        title.append(f"{len(self.store.evaluations())} evaluations")
        self.query_one("#results-title", Static).update(" · ".join(title))
        self.query_one("#base-scores", Static).update(self._base_text(view, n_layers))
        self._fill_table(tasks, n_layers, meta)
        self.query_one(FitnessChart).set_series(view.best_history, view.mean_history)

    def _base_text(self, view: RunView, n_layers: int) -> Text:
        text = Text()
        text.append("base model", style="bold")
        if n_layers:
            text.append(f" (all {n_layers} layers)")
        text.append(": ")
        if not view.base_scores:
            text.append("scores not recorded for this run", style="dim")
            return text
        parts = []
        for task, metrics in view.base_scores.items():
            for metric, value in metrics.items():
                parts.append(f"{task} {metric} {fmt.score(value)}")
        text.append("  ".join(parts))
        if view.base_fitness is not None:
            text.append(f"  fitness {fmt.score(view.base_fitness)}", style="bold")
        return text

    def _fill_table(self, tasks: list[str], n_layers: int, meta: dict[str, Any]) -> None:
        table = self.query_one("#hall-of-fame", DataTable)
        exact = bool(meta.get("n_params") and meta.get("params_per_layer"))
        pct_header = "% params" if exact else "% layers*"
        columns = ("rank", "dropped", "kept", "fitness", *map(short_task, tasks), pct_header)
        cursor = table.cursor_row
        if columns != self._columns:
            table.clear(columns=True)
            for name in columns:
                table.add_column(name, key=name)
            self._columns = columns
        else:
            table.clear()
        for rank, ev in enumerate(self.ranked, start=1):
            cells = [str(rank), genome_text(ev.dropped), str(len(ev.kept)), fmt.score(ev.fitness)]
            for task in tasks:
                metrics = ev.scores.get(task) or {}
                value = next(iter(metrics.values()), None)
                cells.append("" if value is None else fmt.score(value))
            pct, _ = params_removed(ev.dropped, n_layers, meta)
            cells.append("" if pct is None else f"{pct:.1f}")
            table.add_row(*cells, key=str(rank))
        if self.ranked:
            table.move_cursor(row=min(cursor, len(self.ranked) - 1))
        if not exact:
            self.query_one("#base-scores", Static).update(
                Text.assemble(
                    self._base_text(self.follower.view, n_layers),
                    ("\n* share of decoder layers dropped; parameter count not recorded", "dim"),
                )
            )

    @property
    def selected_rank(self) -> int | None:
        table = self.query_one("#hall-of-fame", DataTable)
        if not self.ranked or table.cursor_row < 0:
            return None
        return min(table.cursor_row, len(self.ranked) - 1) + 1

    # ---- scores -----------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#hall-of-fame")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        rank = self.selected_rank
        if rank is None:
            return
        ev = self.ranked[rank - 1]
        view = self.follower.view
        self.app.push_screen(
            ScoresDialog.beside_base(
                view,
                ev.dropped,
                fitness=ev.fitness,
                scores=ev.scores,
                note=f"rank {rank} of the hall of fame",
                n_layers=view.n_layers or len(ev.dropped) + len(ev.kept),
            )
        )

    # ---- export ------------------------------------------------------------------------------
    def action_export(self) -> None:
        rank = self.selected_rank
        if rank is None:
            self.notify("No evaluated genome to export yet.", severity="warning")
            return
        if self.export_running:
            self.notify("An export is already running.", severity="warning")
            return
        self.export_result = None
        self.export_error = None
        self._status(
            f"exporting rank {rank} (dropping {genome_text(self.ranked[rank - 1].dropped)})…"
        )
        self.query_one("#export-log", RichLog).clear()
        self.run_export(rank)

    @property
    def export_running(self) -> bool:
        return any(w.is_running for w in self.app.workers if w.node is self and w.group == "export")

    @work(exclusive=True, group="export", exit_on_error=False)
    async def run_export(self, rank: int) -> None:
        """Run the export CLI and follow its JSON lines; never raises into the app."""
        cmd = self.export_command(self.store, rank)
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
