"""The History screen: every search in the run store, finished, stopped, crashed or running.

From here a user opens a finished run's results, attaches to a running one (the engine does not
care who watches), resumes a stopped or crashed one (or its unfinished heal, which goes first, as
``gaprune-tui resume`` decides: ``core.resume``), or deletes an ended one. The table is re-read
from the store every few seconds, so a run started from another terminal shows up on its own.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from gaprune_tui.core import format as fmt
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.heal import unfinished_heal
from gaprune_tui.core.resume import resume_choice, start_resume
from gaprune_tui.core.store import RunState, RunStore, RunSummary, delete_run, list_runs
from gaprune_tui.core.units import describe

REFRESH_SECONDS = 2.0
_STATE_STYLE = {
    RunState.RUNNING: "bold green",
    RunState.PAUSED: "yellow",
    RunState.CREATED: "yellow",
    RunState.CRASHED: "bold red",
    RunState.FAILED: "red",
    RunState.STOPPED: "magenta",
    RunState.FINISHED: "",
    RunState.DAMAGED: "bold red",
}


def best_text(run: RunSummary) -> str:
    """A run's best genome as the History line shows it: ``[3, 9]``, or in a sub-block run (its
    config.toml says so) what ``units.describe`` says."""
    dropped = list(run.best_dropped or [])
    try:
        granularity = RunConfig.load(run.path / "config.toml").granularity
    except (GapruneError, OSError, ValueError):
        granularity = "layer"
    return describe(dropped, granularity) if granularity == "sublayer" else str(dropped)


class HistoryScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("o", "open", "Open"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("n", "new", "New search"),
        Binding("f5", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="history")
        self.runs: list[RunSummary] = []
        self._counts: dict[tuple[str, str], int] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="history-status")
        table: DataTable[str | Text] = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, key in (
            ("run", "id"),
            ("state", "state"),
            ("model", "model"),
            ("best fitness", "best"),
            ("started", "started"),
            ("evaluations", "evaluations"),
        ):
            table.add_column(label, key=key)
        self.refresh_runs()
        self.set_interval(REFRESH_SECONDS, self.refresh_runs)
        table.focus()

    # ---- data ------------------------------------------------------------------------------------
    def _evaluation_count(self, run: RunSummary) -> int:
        """Rows in the run's evaluations table; cached for runs that no longer change."""
        key = (run.id, run.state)
        if key in self._counts:
            return self._counts[key]
        if run.state == RunState.DAMAGED:
            return 0
        try:
            store = RunStore(run.path)
            try:
                count = len(store.evaluations())
            finally:
                store.close()
        except (sqlite3.Error, GapruneError):
            return 0
        if run.state.deletable:
            self._counts[key] = count
        return count

    def refresh_runs(self) -> None:
        """Re-read the store and redraw the table, keeping the cursor on the same run."""
        table = self.query_one("#runs", DataTable)
        selected = self.selected_run()
        self.runs = list_runs()
        deterministic = getattr(self.app, "deterministic", False)
        table.clear()
        for run in self.runs:
            best = "—" if run.best_fitness is None else fmt.score(run.best_fitness)
            started = (
                "—"
                if deterministic or not run.started
                else time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started))
            )
            table.add_row(
                run.id,
                Text(run.state, style=_STATE_STYLE.get(run.state, "")),
                run.model,
                best,
                started,
                str(self._evaluation_count(run)),
                key=run.id,
            )
        if selected is not None:
            ids = [r.id for r in self.runs]
            if selected.id in ids:
                table.move_cursor(row=ids.index(selected.id))
        self._show_detail()
        status = self.query_one("#history-status", Static)
        if not self.runs:
            status.update("No searches yet: press n to set one up.")
        else:
            status.update(
                f"{fmt.plural(len(self.runs), 'search')}. o/enter: open results or attach · "
                "r: resume a stopped or crashed run · d: delete an ended run"
            )

    def selected_run(self) -> RunSummary | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.row_count == 0:
            return None
        row = table.cursor_row
        return self.runs[row] if 0 <= row < len(self.runs) else None

    @on(DataTable.RowHighlighted, "#runs")
    def _show_detail(self) -> None:
        """The highlighted run's best genome, and its error when it failed or crashed."""
        detail = self.query_one("#run-detail", Static)
        run = self.selected_run()
        if run is None:
            detail.update("")
            return
        parts = [f"[b]{run.id}[/]"]
        if run.best_dropped is not None:
            parts.append(f"best: drop {escape(best_text(run))}")
        if run.state == RunState.CRASHED:
            parts.append("[b red]the engine process died[/]: r resumes from the last generation")
        if run.state == RunState.DAMAGED and run.error:
            detail.update(f"[b]{run.id}[/] · [b red]{escape(run.error)}[/]")
            return
        if run.error:
            parts.append(f"[red]error: {escape(run.error)}[/]")
        heal = None if run.alive else unfinished_heal(run.path)
        if heal is not None:
            parts.append(f"r continues its unfinished heal {escape(heal)}")
        elif run.can_resume and run.state != RunState.CRASHED:
            parts.append("r resumes it")
        detail.update(" · ".join(parts))

    # ---- actions -----------------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self) -> None:
        self.action_open()

    def action_refresh(self) -> None:
        self.refresh_runs()

    def action_new(self) -> None:
        self.app.open_setup()  # type: ignore[attr-defined]

    def action_open(self) -> None:
        """Results for an ended run, the live Run screen for an active or crashed one."""
        run = self.selected_run()
        if run is None:
            return
        if run.state == RunState.DAMAGED:
            self.notify(run.error or f"run {run.id} is damaged", severity="error", timeout=10)
            return
        try:
            store = RunStore.open(run.path)
        except GapruneError as exc:  # damaged since the table was drawn
            self.notify(str(exc), severity="error", timeout=10)
            self.refresh_runs()
            return
        # Ended runs open on their results; active or crashed ones on the Run screen.
        if run.state.has_result:
            self.app.open_results(store)  # type: ignore[attr-defined]
        else:
            self.app.open_run(store)  # type: ignore[attr-defined]

    def _selected_if(self, allowed: Callable[[RunSummary], bool], unless: str) -> RunSummary | None:
        """The highlighted run when ``allowed`` for it; otherwise None, after a warning that says
        the run's state and ``unless`` (what the user can do instead)."""
        run = self.selected_run()
        if run is not None and not allowed(run):
            self.notify(f"run {run.id} is {run.state}: {unless}", severity="warning")
            return None
        return run

    def action_resume(self) -> None:
        damaged = self.selected_run()
        if damaged is not None and damaged.state == RunState.DAMAGED:
            self.notify(damaged.error or "damaged", severity="error", timeout=10)
            return
        run = self.selected_run()
        if run is None:
            return
        store = RunStore(run.path)
        # An unfinished heal continues first (whatever the search's state), else the search.
        choice = resume_choice(store)
        if choice is None:
            self.notify(
                f"run {run.id} is {run.state}: only stopped, failed or crashed runs resume",
                severity="warning",
            )
            return
        try:
            start_resume(store, choice)
        except (GapruneError, OSError) as exc:
            self.notify(f"cannot resume {run.id}: {exc}", severity="error")
            return
        if choice.kind == "heal":
            self.notify(f"continuing {choice.what} of {run.id} from its last checkpoint")
            self.app.open_results(store)  # type: ignore[attr-defined]
            return
        self.notify(f"resuming {run.id}")
        self.app.open_run(store)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        from gaprune_tui.ui.widgets.dialogs import ConfirmDialog

        run = self._selected_if(
            lambda r: r.state.deletable and not r.alive, "stop it before deleting it"
        )
        if run is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                delete_run(run.path)
                kept = " (its exports stay)" if (run.path / "exports").is_dir() else ""
                self.notify(f"deleted {run.id}{kept}")
                self.refresh_runs()

        self.app.push_screen(
            ConfirmDialog(f"Delete run {run.id} ({run.state}) and its files?"), answered
        )
