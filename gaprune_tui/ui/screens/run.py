"""The Run screen: watch a search live and steer it from the keyboard.

It follows the run store (``follow.Follower``) on a 4 Hz timer: each tick applies every new event
at once and repaints each widget once, so a fast engine or a slow SSH link never floods the
terminal. Steering is requests in the store (pause / resume / stop) that the engine honours
between evaluations; the screen shows the engine's own run_paused / run_resumed / run_stopped
answers rather than assuming them. A failed or vanished engine is shown with its error and can be
resumed from here; the UI never depends on the engine being alive.
"""

from __future__ import annotations

import sqlite3

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, RichLog, Sparkline, Static

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format as fmt
from gaprune_tui.core import pareto
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.follow import Follower, LogTail, RunView, last_error_lines
from gaprune_tui.core.resume import resume_choice, start_resume
from gaprune_tui.core.store import ControlAction, RunState, RunStore
from gaprune_tui.ui.widgets.dialogs import ConfirmDialog, QuitDialog, ScoresDialog
from gaprune_tui.ui.widgets.front_plot import FrontPlot
from gaprune_tui.ui.widgets.generation_table import GenerationTable, genome_text
from gaprune_tui.ui.widgets.layer_bitmap import BitmapRow, LayerBitmap
from gaprune_tui.ui.widgets.worker_table import WorkerTable

POLL_SECONDS = 0.25
LOG_LINES = 500


def best_summary(view: RunView) -> str:
    """``0.4500 ± 0.1100  dropping 3 10 20 23  (base 0.3000 ± 0.1000: within noise)``."""
    if view.best_fitness is None or view.best_dropped is None:
        return ""
    kind = view.started.fitness
    scored = view.scored_for(view.best_dropped)
    se = fitness_kinds.fitness_stderr(scored.scores, kind) if scored else None
    dropping = genome_text(view.best_dropped, view.started.granularity)
    summary = f"{fmt.score(view.best_fitness, se)}  dropping {dropping}"
    if view.base_fitness is not None:
        base_se = fitness_kinds.fitness_stderr(view.base_scores or {}, kind)
        verdict = fitness_kinds.verdict(view.best_fitness, se, view.base_fitness, base_se, kind)
        shown = "" if verdict == "no stderr" else f": {verdict}"
        summary += f"  (base {fmt.score(view.base_fitness, base_se)}{shown})"
    return summary


def front_summary(view: RunView) -> str:
    """A Pareto run's line beside the hypervolume sparkline: the hypervolume, how much of the
    range the front covers, and the knee with its standard error."""
    front = view.front
    if not front:
        return ""
    kind = view.started.fitness
    hv = view.hypervolumes[-1] if view.hypervolumes else None
    dominated = sum(1 for p in front if p.dominated)
    low, high = view.started.prune_range or [front[0].k, front[-1].k]
    parts = [f"{fmt.score(hv)}  front: {len(front)} of k {low}–{high}"]
    if dominated:
        parts[0] += f" ({dominated} dominated)"
    knee = pareto.knee_k(front, kind, (view.result or {}).get("knee_k"))
    point = next((p for p in front if p.k == knee), None)
    if point is not None:
        scored = view.scored_for(point.dropped)
        se = fitness_kinds.fitness_stderr(scored.scores, kind) if scored else None
        parts.append(f"knee k={point.k}: {fmt.score(point.fitness, se)}")
    return "  ·  ".join(parts)


_STATE_LABELS = {RunState.CREATED: "starting", RunState.CRASHED: "crashed (engine gone)"}


def state_label(state: str) -> str:
    return _STATE_LABELS.get(RunState(state), str(state))


class RunScreen(Screen[None]):
    """Live view of one run. ``poll()`` is public so tests can apply new events without waiting."""

    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("s", "stop", "Stop"),
        Binding("o", "results", "Results"),
        # The app's f10 Quit (shown in the footer) asks the same question; q stays as a shortcut.
        Binding("q", "quit_run", "Quit", show=False),
    ]

    def __init__(self, store: RunStore) -> None:
        super().__init__(id="run")
        self.store = store
        self.follower = Follower(store)
        self.log_tail = LogTail(store.log_path)
        self._announced_end = False
        self._seen_active = False
        self._store_error: str | None = None

    @property
    def view(self) -> RunView:
        return self.follower.view

    # ---- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        eta = not getattr(self.app, "deterministic", False)  # snapshots: no ETA
        yield Static(f"run {self.store.id}", id="run-title")
        yield Static("", id="banner")
        with Horizontal(id="progress-row"):
            yield Label("generation", id="gen-label")
            yield ProgressBar(id="gen-progress", show_eta=False)
            yield Label("search", id="search-label")
            yield ProgressBar(id="search-progress", show_eta=eta)
        yield Static("", id="evaluating")
        with Horizontal(id="fitness-row"):
            yield Label("best fitness", id="fitness-label")
            yield Sparkline([], id="best-fitness")
            yield Static("", id="best-summary")
        with VerticalScroll(id="body"):
            yield FrontPlot(id="front-plot")
            yield LayerBitmap(id="layer-bitmap")
            yield GenerationTable(id="generations")
            yield RichLog(id="engine-log", max_lines=LOG_LINES, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.query_one(LayerBitmap).focus()
        self.set_interval(POLL_SECONDS, self.poll)

    # ---- following -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Apply all new events and log lines, then repaint once. A store that cannot be read
        (deleted, disk gone) is reported once and retried; it never takes the UI down."""
        try:
            changed = self.follower.poll()
        except (sqlite3.Error, OSError, GapruneError) as exc:
            if self._store_error is None:
                self._store_error = str(exc)
                banner = self.query_one("#banner", Static)
                banner.update(f"Cannot read the run store {self.store.path}: {exc}")
                banner.remove_class("info", "warning")
                banner.add_class("error")
            return
        if self._store_error is not None:
            self._store_error = None
            changed = True
        lines = self.log_tail.read()
        if lines:
            log = self.query_one("#engine-log", RichLog)
            for line in lines:
                log.write(line)
        if changed:
            self.refresh_view()

    def refresh_view(self) -> None:
        view = self.view
        self._show_title(view)
        self._show_banner(view)
        self._show_progress(view)
        self._show_evaluating(view)
        if view.pareto:
            self._show_front(view)
        else:
            self._show_best(view)
            self.query_one(LayerBitmap).set_rows(
                view.started.n_layers,
                view.started.protect,
                self._bitmap_rows(view),
                granularity=view.started.granularity,
            )
        self.query_one(GenerationTable).show_rows(
            view.rows,
            higher_is_better=view.higher_is_better,
            granularity=view.started.granularity,
        )
        WorkerTable.show(self, view, after="#generations")  # several workers only
        self._announce_end(view)

    def _show_best(self, view: RunView) -> None:
        """The sparkline rises as the search improves (KL and perplexity are drawn negated), and
        the best genome's fitness carries its standard error and its verdict against the base."""
        label = fitness_kinds.short_label(view.started.fitness)
        self.query_one("#fitness-label", Label).update(f"best {label}")
        sign = 1.0 if view.higher_is_better else -1.0
        self.query_one("#best-fitness", Sparkline).data = [sign * v for v in view.best_history]
        self.query_one("#best-summary", Static).update(best_summary(view))

    def _show_front(self, view: RunView) -> None:
        """A Pareto run: the hypervolume per generation in place of the best fitness, the front
        plot, and the front's members (one row per k) in the bitmap in place of the population."""
        front = view.front
        kind = view.started.fitness
        knee = pareto.knee_k(front, kind, (view.result or {}).get("knee_k"))
        self.query_one("#fitness-label", Label).update("hypervolume")
        self.query_one("#best-fitness", Sparkline).data = list(view.hypervolumes)
        self.query_one("#best-summary", Static).update(front_summary(view))
        plot = self.query_one(FrontPlot)
        plot.display = True
        unit = "sub-blocks" if view.started.granularity == "sublayer" else "layers"
        plot.set_fronts([*view.fronts[:-1], front], view.started.prune_range, kind, knee, unit=unit)
        rows = [
            BitmapRow(
                list(p.dropped),
                p.fitness,
                best=p.k == knee,
                marker=("★" if p.k == knee else " ") + f"k={p.k}",
            )
            for p in front
        ]
        self.query_one(LayerBitmap).set_rows(
            view.started.n_layers,
            view.started.protect,
            rows,
            best_meaning="knee",
            granularity=view.started.granularity,
        )

    def _show_title(self, view: RunView) -> None:
        gen = (
            f"generation {view.generation}/{view.started.generations}"
            if view.started.generations
            else ""
        )
        parts = [f"run {self.store.id}", view.started.model, state_label(view.state), gen]
        self.query_one("#run-title", Static).update(" · ".join(p for p in parts if p))

    def _show_banner(self, view: RunView) -> None:
        banner = self.query_one("#banner", Static)
        banner.remove_class("error", "info", "warning")
        if view.state == RunState.INVALID:
            banner.update(
                Text.assemble(("The search could not start: ", "bold"), view.error or "bad input")
            )
            banner.add_class("error")
        elif view.state in (RunState.FAILED, RunState.CRASHED):
            error = view.error
            if not error:
                tail = last_error_lines(self.store.log_path, 3)
                error = " / ".join(tail) if tail else "the engine process is gone"
            what = "failed" if view.state == RunState.FAILED else "stopped unexpectedly"
            banner.update(
                Text.assemble(
                    (f"The engine {what}: ", "bold"),
                    error,
                    "\nPress r to resume from the last finished generation.",
                )
            )
            banner.add_class("error")
        elif view.state == RunState.STOPPED:
            banner.update("Search stopped. Press r to resume it, o for results.")
            banner.add_class("warning")
        elif view.state == RunState.PAUSED:
            banner.update("Paused: the engine waits between evaluations. Press r to resume.")
            banner.add_class("warning")
        elif view.state == RunState.FINISHED:
            banner.update("Search finished. Press o for the results and export.")
            banner.add_class("info")

    def _show_progress(self, view: RunView) -> None:
        gen_bar = self.query_one("#gen-progress", ProgressBar)
        search_bar = self.query_one("#search-progress", ProgressBar)
        size = max(1, view.started.population or len(view.population) or 1)
        done = size if view.state == RunState.FINISHED else min(view.generation_done, size)
        gen_bar.update(total=size, progress=done)
        total = max(1, view.started.max_evaluations)
        search_bar.update(total=total, progress=round(view.search_fraction * total))
        self.query_one("#search-label", Label).update(
            f"search {view.evaluations_done}/{view.started.max_evaluations or '?'}"
        )
        # After generation 0 only changed offspring are scored: the population size is a bound.
        bound = "" if view.generation == 0 or view.state == RunState.FINISHED else "≤"
        self.query_one("#gen-label", Label).update(f"gen {done}/{bound}{size}")

    def _show_evaluating(self, view: RunView) -> None:
        widget = self.query_one("#evaluating", Static)
        current = view.evaluating
        confirming = view.confirming
        if confirming is not None and view.active:
            held = ", ".join(confirming.holdout_tasks) or "none"
            widget.update(
                f"confirming finalists: {len(view.confirmations)}/{confirming.genomes} done "
                f"({confirming.confirm_limit or 'all'} items per task; held out: {held})"
            )
        elif current is not None and view.active:
            task = current.task or ", ".join(view.started.tasks) or "the run's tasks"
            what = "screening" if current.fidelity else "evaluating"
            items = ""
            if current.fidelity and ":" in current.fidelity:
                items = f" ({current.fidelity.split(':', 1)[1]} items per task)"
            widget.update(
                f"{what} gen {current.generation} #{current.index + 1}: "
                f"dropping {genome_text(current.dropped, view.started.granularity)} "
                f"on {task}{items}"
            )
        elif view.state in (RunState.CREATED, RunState.RUNNING) and not view.evaluations_done:
            if view.messages:
                widget.update(view.messages[-1])
            elif not view.started.tasks:
                widget.update("loading the model and tasks…")
            elif view.base_scores is None:
                widget.update("scoring the unpruned model (for comparison)…")
            else:
                widget.update("starting the search…")
        elif view.state == RunState.RUNNING:
            widget.update("between evaluations…")
        else:
            widget.update("")

    def _bitmap_rows(self, view: RunView) -> list[BitmapRow]:
        evaluating = view.evaluating.dropped if view.evaluating else None
        rows = []
        if view.best_dropped is not None:
            rows.append(BitmapRow(list(view.best_dropped), view.best_fitness, best=True))
        for genome in view.population:
            rows.append(
                BitmapRow(list(genome), view.fitness_of(genome), evaluating=genome == evaluating)
            )
        return rows

    def _announce_end(self, view: RunView) -> None:
        """A toast when the run ends while we watch; an ended run we open only gets the banner."""
        if not self._seen_active:
            self._seen_active = view.active
            if not view.active:
                return
        if self._announced_end:
            return
        if view.state == RunState.FINISHED and view.finished_live:
            self._announced_end = True
            self.notify("Search finished: press o for the results.", title="Done", timeout=10)
        elif view.state in (RunState.FAILED, RunState.CRASHED):
            self._announced_end = True
            self.notify(
                "The engine stopped with an error: see the banner; r resumes.",
                severity="error",
                timeout=10,
            )

    # ---- scores ------------------------------------------------------------------------------------
    def show_scores(self, dropped: list[int], note: str | None = None) -> None:
        view = self.view
        self.app.push_screen(ScoresDialog(view, dropped, view.scored_for(dropped), note))

    @on(LayerBitmap.Selected)
    def _bitmap_selected(self, event: LayerBitmap.Selected) -> None:
        self.show_scores(event.dropped)

    @on(DataTable.RowSelected, "#generations")
    def _generation_selected(self, event: DataTable.RowSelected) -> None:
        best = self.query_one(GenerationTable).best_at_cursor()
        if best is not None:
            self.show_scores(best, note=f"best genome as of generation {event.row_key.value}")

    # ---- actions ------------------------------------------------------------------------------------
    def _engine_running(self) -> bool:
        return self.view.active and self.store.alive()

    def _can_control(self) -> bool:
        """Whether a pause or stop can reach the engine; says so when it cannot."""
        if not self._engine_running():
            self.notify("The search is not running.", severity="warning")
            return False
        return True

    def action_pause(self) -> None:
        if not self._can_control():
            return
        if self.view.state == RunState.PAUSED:
            self.notify("Already paused: r resumes.")
            return
        self.store.request(ControlAction.PAUSE)
        self.notify("Pause requested: the engine pauses after the current evaluation.")

    def action_resume(self) -> None:
        state = self.view.state
        alive = self.store.alive()
        choice = None if alive else resume_choice(self.store, alive=False)
        if state == RunState.PAUSED and alive:
            self.store.request(ControlAction.UNPAUSE)
            self.notify("Resume requested.")
        elif choice is not None:
            # An unfinished heal goes first (as `gaprune-tui resume` decides); the Results
            # screen follows a heal.
            try:
                start_resume(self.store, choice)
            except (GapruneError, OSError) as exc:
                self.notify(f"Cannot resume: {exc}", severity="error", timeout=10)
                return
            if choice.kind == "heal":
                self.notify(f"Engine restarted: continuing {choice.what} from its checkpoint.")
                self.action_results()
                return
            self._announced_end = False
            self._seen_active = True
            self.notify("Engine restarted: resuming from the last finished generation.")
        elif state == RunState.FINISHED:
            self.notify("The search has finished: o opens the results.")
        else:
            self.notify("The search is already running.")

    def action_stop(self) -> None:
        if not self._can_control():
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.store.request(ControlAction.STOP)
                self.notify("Stop requested: the engine stops after the current batch.")

        self.app.push_screen(
            ConfirmDialog(
                "Stop the search? It can be resumed later from its last finished generation.",
                yes="Stop (y)",
                no="Keep running (n)",
            ),
            answered,
        )

    def action_results(self) -> None:
        opener = getattr(self.app, "open_results", None)
        if callable(opener):
            opener(self.store)
        else:
            from gaprune_tui.ui.screens.results import ResultsScreen

            self.app.push_screen(ResultsScreen(self.store))

    def action_quit_run(self) -> None:
        if not self._engine_running():
            self.app.exit(0)
            return

        def answered(choice: str | None) -> None:
            if choice == "stop":
                self.store.request(ControlAction.STOP)
                self.app.exit(0)
            elif choice == "detach":
                self.app.exit(0)

        self.app.push_screen(QuitDialog(), answered)
