"""Follow a run store from the UI side: turn its event stream into one plain ``RunView``.

The Run screen polls a few times a second; each poll reads every event written since the last one
and folds them into the view in one go, so a burst of a hundred evaluations costs one repaint, not a
hundred. Pure Python over the store (no textual), so the folding is unit-tested without an app and
the same logic serves any future headless viewer.

``LogTail`` follows ``engine.log`` the same way: only new bytes per poll, bounded on the first read.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.events import (
    BaseScores,
    ConfirmationStarted,
    EvaluationFinished,
    EvaluationStarted,
    EvaluationTask,
    ExportFinished,
    GenerationFinished,
    GenomeConfirmed,
    LogMessage,
    ReferenceScored,
    RunEvent,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    RunStopped,
    WorkerStatus,
)
from gaprune_tui.core.pareto import FrontPoint, front_from_dicts
from gaprune_tui.core.store import Generation, RunState, RunStore

LOG_TAIL_BYTES = 64 * 1024
MAX_MESSAGES = 200


@dataclass
class WorkerRow:
    """One worker as the Run screen shows it: its latest status and when it was first seen
    in this session (for genomes per hour)."""

    status: WorkerStatus
    since: float

    @property
    def per_hour(self) -> float | None:
        hours = (self.status.ts - self.since) / 3600
        return self.status.evaluations / hours if hours > 0 and self.status.evaluations else None


@dataclass
class RunView:
    """Everything the Run screen draws, derived only from the store's events (and its state)."""

    run_id: str = ""
    # The run's shape: its latest ``run_started`` event (until one arrives, the store's meta:
    # model, layer count and evaluation budget).
    started: RunStarted = field(default_factory=RunStarted)
    state: RunState = RunState.CREATED
    error: str | None = None
    generation: int = 0
    population: list[list[int]] = field(default_factory=list)
    best_dropped: list[int] | None = None
    best_fitness: float | None = None
    rows: list[Generation] = field(default_factory=list)
    # The genome the engine is scoring now (its ``task`` follows ``evaluation_task`` events;
    # ``fidelity`` is set, e.g. "screen:5", for a multi-fidelity screening pass).
    evaluating: EvaluationStarted | None = None
    evaluations_done: int = 0
    generation_done: int = 0
    # Every genome scored so far, by its dropped layers (a full evaluation wins over a screen).
    scored: dict[tuple[int, ...], EvaluationFinished] = field(default_factory=dict)
    base_scores: dict[str, dict[str, float]] | None = None
    base_fitness: float | None = None
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES))
    result: dict[str, Any] | None = None
    last_seq: int = 0
    # Set when the run ended while we watched (not when we opened an already finished run).
    finished_live: bool = False
    exports: list[ExportFinished] = field(default_factory=list)
    references: dict[str, ReferenceScored] = field(default_factory=dict)
    confirming: ConfirmationStarted | None = None
    confirmations: list[GenomeConfirmed] = field(default_factory=list)
    # Pareto runs: the front after each generation (index = generation;
    # ``core/pareto.FrontPoint``) and the hypervolume history.
    fronts: list[list[FrontPoint]] = field(default_factory=list)
    hypervolumes: list[float] = field(default_factory=list)
    # Several workers (engine/backends): the latest status of each, by worker name.
    workers: dict[str, WorkerRow] = field(default_factory=dict)

    @property
    def pareto(self) -> bool:
        return self.started.objective == "pareto"

    @property
    def front(self) -> list[FrontPoint]:
        """The latest front (the finished run's, from result.json, once there is one)."""
        if self.result and self.result.get("front"):
            return front_from_dicts(self.result["front"])
        return self.fronts[-1] if self.fronts else []

    @property
    def higher_is_better(self) -> bool:
        return fitness_kinds.higher_is_better(self.started.fitness)

    @property
    def best_history(self) -> list[float]:
        return [r.best_fitness for r in self.rows]

    @property
    def mean_history(self) -> list[float]:
        return [r.mean for r in self.rows]

    @property
    def search_fraction(self) -> float:
        if self.state == RunState.FINISHED:
            return 1.0
        if not self.started.max_evaluations:
            return 0.0
        return min(1.0, self.evaluations_done / self.started.max_evaluations)

    @property
    def active(self) -> bool:
        return self.state.active

    def scored_for(self, dropped: list[int]) -> EvaluationFinished | None:
        return self.scored.get(tuple(dropped))

    def fitness_of(self, dropped: list[int]) -> float | None:
        found = self.scored.get(tuple(dropped))
        return found.fitness if found else None


class Follower:
    """Reads new events from a store and folds them into ``self.view``."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.view = RunView(run_id=store.id)
        self._loaded = False
        self._counted: set[tuple[int, tuple[int, ...]]] = set()
        self._per_gen: dict[int, int] = {}
        self._state_changed = False
        self._handlers: dict[type[RunEvent], Callable[[Any, bool], None]] = {
            RunStarted: self._on_run_started,
            BaseScores: self._on_base_scores,
            EvaluationStarted: self._on_evaluation_started,
            EvaluationTask: self._on_evaluation_task,
            EvaluationFinished: self._on_evaluation_finished,
            GenerationFinished: self._on_generation_finished,
            RunPaused: self._on_run_paused,
            RunResumed: self._on_run_resumed,
            RunStopped: self._on_run_stopped,
            RunFinished: self._on_run_finished,
            RunFailed: self._on_run_failed,
            LogMessage: self._on_log,
            ExportFinished: self._on_export_finished,
            ReferenceScored: self._on_reference_scored,
            ConfirmationStarted: self._on_confirmation_started,
            GenomeConfirmed: self._on_genome_confirmed,
        }
        self._handlers[WorkerStatus] = self._on_worker_status

    def poll(self) -> bool:
        """Apply every event written since the last poll; True when anything changed.
        Construction touches nothing: store errors surface here, where callers handle them."""
        first = not self._loaded
        events = self.read()
        return bool(events) or first or self._state_changed

    def read(self) -> list[RunEvent]:
        """Apply every event written since the last call and refresh the state; the events
        applied, for a reader that also prints them (the CLI)."""
        first = not self._loaded
        if first:
            meta = self.store.meta()
            self.view.started = RunStarted(
                model=meta.get("model", "?"),
                n_layers=int(meta.get("n_layers") or 0),
                max_evaluations=int(meta.get("max_evaluations") or 0),
            )
        events = self.store.events(after=self.view.last_seq)
        self._loaded = True
        for event in events:
            self.apply(event, live=not first)
        self._state_changed = self._refresh_state()
        return events

    def _refresh_state(self) -> bool:
        """The store's state is the truth (it knows a dead engine); events only hint at it."""
        meta = self.store.meta()
        state = self.store.display_state()
        failed = (RunState.FAILED, RunState.CRASHED, RunState.INVALID)
        error = meta.get("error") if state in failed else None
        changed = state != self.view.state or error != self.view.error
        self.view.state = state
        self.view.error = error
        if not self.view.started.n_layers and meta.get("n_layers"):
            self.view.started.n_layers = int(meta["n_layers"])
            changed = True
        return changed

    def apply(self, event: RunEvent, *, live: bool = True) -> None:
        view = self.view
        view.last_seq = max(view.last_seq, event.seq)
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, live)

    # ---- handlers, one per event kind --------------------------------------------------------
    def _on_run_started(self, e: RunStarted, live: bool) -> None:
        view = self.view
        prune_range = list(e.prune_range) if e.prune_range else None
        view.started = replace(e, tasks=list(e.tasks), prune_range=prune_range)
        view.state = RunState.RUNNING
        view.error = None

    def _on_base_scores(self, e: BaseScores, live: bool) -> None:
        self.view.base_scores = e.scores
        self.view.base_fitness = e.fitness

    def _on_evaluation_started(self, e: EvaluationStarted, live: bool) -> None:
        view = self.view
        if e.generation != view.generation:
            view.generation = e.generation
            view.generation_done = self._per_gen.get(e.generation, 0)
        view.evaluating = replace(e, dropped=list(e.dropped))  # a copy: its task changes

    def _on_evaluation_task(self, e: EvaluationTask, live: bool) -> None:
        """Optional finer-grained progress: the task being scored inside one evaluation."""
        if self.view.evaluating is not None:
            self.view.evaluating.task = e.task

    def _on_evaluation_finished(self, e: EvaluationFinished, live: bool) -> None:
        view = self.view
        dropped = list(e.dropped)
        gen = e.generation
        scored = replace(e, dropped=dropped, scores=e.scores or {})
        key = tuple(dropped)
        old = view.scored.get(key)
        if old is None or old.fidelity != "full" or e.fidelity == "full":
            view.scored[key] = scored
        view.generation = gen
        # A genome counts once per generation: a screening pass and its promotion to the full
        # evaluation are one slot of the budget, and a resumed engine replaying a generation
        # (from the memo) does not count it twice.
        if (gen, key) not in self._counted:
            self._counted.add((gen, key))
            self._per_gen[gen] = self._per_gen.get(gen, 0) + 1
            view.evaluations_done += 1
        view.generation_done = self._per_gen.get(view.generation, 0)
        if gen == 0 and not any(r.gen == 0 for r in view.rows) and dropped not in view.population:
            # Before the first generation closes, the population is what has been scored so far.
            view.population.append(dropped)
        # A Pareto run's best is its front's knee, which only generations announce.
        if (
            not view.pareto
            and e.fidelity == "full"
            and (
                view.best_fitness is None
                or fitness_kinds.better(e.fitness, view.best_fitness, view.started.fitness)
            )
        ):
            view.best_fitness = e.fitness
            view.best_dropped = dropped
        if view.evaluating is not None and view.evaluating.dropped == dropped:
            view.evaluating = None

    def _on_reference_scored(self, e: ReferenceScored, live: bool) -> None:
        self.view.references[e.name] = e

    def _on_confirmation_started(self, e: ConfirmationStarted, live: bool) -> None:
        self.view.confirming = e
        self.view.confirmations = []
        self.view.evaluating = None

    def _on_genome_confirmed(self, e: GenomeConfirmed, live: bool) -> None:
        view = self.view
        view.confirmations = [c for c in view.confirmations if c.label != e.label] + [e]

    def _on_generation_finished(self, e: GenerationFinished, live: bool) -> None:
        view = self.view
        row = Generation.from_event(e)
        if not e.population:  # an old payload without the population: keep what we have
            row.population = [list(g) for g in view.population]
        view.rows = [r for r in view.rows if r.gen != row.gen] + [row]
        view.rows.sort(key=lambda r: r.gen)
        if e.front:
            # Index = generation; a resumed engine re-announcing a generation replaces it.
            del view.fronts[row.gen :]
            del view.hypervolumes[row.gen :]
            view.fronts.append(front_from_dicts(e.front))
            view.hypervolumes.append(e.hypervolume or 0.0)
        view.population = row.population
        view.best_fitness = row.best_fitness
        view.best_dropped = row.best_dropped
        view.generation = row.gen + 1 if row.gen < view.started.generations else row.gen
        view.generation_done = self._per_gen.get(view.generation, 0)
        view.evaluating = None

    def _on_run_paused(self, e: RunPaused, live: bool) -> None:
        self.view.state = RunState.PAUSED

    def _on_run_resumed(self, e: RunResumed, live: bool) -> None:
        self.view.state = RunState.RUNNING

    def _on_run_stopped(self, e: RunStopped, live: bool) -> None:
        self.view.state = RunState.STOPPED
        self.view.evaluating = None

    def _on_run_finished(self, e: RunFinished, live: bool) -> None:
        view = self.view
        view.state = RunState.FINISHED
        view.result = e.result
        view.evaluating = None
        view.finished_live = view.finished_live or live

    def _on_run_failed(self, e: RunFailed, live: bool) -> None:
        self.view.state = RunState.FAILED
        self.view.error = e.error
        self.view.evaluating = None

    def _on_log(self, e: LogMessage, live: bool) -> None:
        if e.message:
            self.view.messages.append(str(e.message))

    def _on_export_finished(self, e: ExportFinished, live: bool) -> None:
        self.view.exports.append(e)

    def _on_worker_status(self, e: WorkerStatus, live: bool) -> None:
        row = self.view.workers.get(e.name)
        # A new session (its first status has done nothing yet) restarts the rate.
        keep = row is not None and not (e.evaluations == 0 and row.status.evaluations > 0)
        self.view.workers[e.name] = WorkerRow(e, row.since if keep and row else e.ts)


class LogTail:
    """New lines of a growing log file, a bounded tail at first. Survives the file not existing."""

    def __init__(self, path: Path, first_bytes: int = LOG_TAIL_BYTES) -> None:
        self.path = Path(path)
        self.first_bytes = first_bytes
        self._offset: int | None = None
        self._partial = ""

    def read(self) -> list[str]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if self._offset is None:
            self._offset = max(0, size - self.first_bytes)
            skip_partial = self._offset > 0
        else:
            skip_partial = False
            if size < self._offset:  # truncated or replaced: start over
                self._offset = 0
                self._partial = ""
        if size == self._offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(size - self._offset)
        self._offset = size
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_partial and lines:
            lines = lines[1:]  # the first line of a mid-file tail is cut
        return [as_shown(line) for line in lines]


def as_shown(line: str) -> str:
    """What a terminal would show for a line rewritten with carriage returns (tqdm bars)."""
    if "\r" not in line:
        return line
    parts = [part for part in line.split("\r") if part.strip()]
    return parts[-1] if parts else ""


def last_error_lines(path: Path, n: int = 6) -> list[str]:
    """The end of engine.log, for showing why an engine died when meta has no error."""
    tail = LogTail(path, first_bytes=16 * 1024).read()
    return [line for line in tail if line.strip()][-n:]
