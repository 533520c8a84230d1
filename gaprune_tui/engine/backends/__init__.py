"""Where a generation's genomes are scored: here, on local worker processes, or on Ray actors.

The search hands a backend a generation's individuals (already in tree order) and gets its events
back. In-process (one device, the default) the search keeps today's path, genome after genome.
With several workers the driver (this process) still owns everything that must not depend on how
many workers there are or how fast they run:

* all GA randomness (the search's own RNG; workers draw nothing the search sees);
* the memo: the driver looks every genome up first and dispatches only the misses; workers return
  ``(scores, seconds)`` and the driver records them;
* the run store: ``EvaluationFinished`` events are yielded in tree order whatever order the workers
  finish in (out-of-order results wait in a buffer), so the store's rows, and its ranking of equal
  fitnesses, are the in-process ones. ``EvaluationStarted`` is yielded at dispatch.

Faults: a worker that dies mid-genome has its genome handed to another worker (a ``LogMessage``
event and a log line say so); when every worker is gone ``WorkersGone`` ends the run as failed,
and ``gaprune-tui resume`` continues it from its last checkpoint as usual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.devices import devices_error
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.events import (
    EvaluationFinished,
    EvaluationStarted,
    RunEvent,
    WorkerStatus,
)
from gaprune_tui.engine.backends.schedule import Job, Scheduler

if TYPE_CHECKING:
    # Not at run time: result.py imports this package for ``backend_result``, and the fake
    # engine runs result.py without the GA's libraries.
    from gaprune_tui.engine.search import Outcome

log = logging.getLogger(__name__)
Scores = dict[str, dict[str, Any]]
__all__ = [
    "Backend",
    "Dispatched",
    "Done",
    "InProcess",
    "Job",
    "Scheduler",
    "WorkersGone",
    "backend_result",
    "make_backend",
    "worker_threads",
]


class WorkersGone(RuntimeError):
    """Every worker of a several-worker backend died: the run fails and resumes as any crash."""


@dataclass
class Dispatched:
    """A job handed to a worker (the search yields ``EvaluationStarted``)."""

    job: Job
    worker: str


@dataclass
class Done:
    """A job's scores, back from a worker."""

    key: int
    scores: Scores
    seconds: float
    worker: str


class Backend:
    """The in-process backend: the search scores each genome itself (``remote`` is False)."""

    name = "in-process"
    remote = False

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def evaluate(self, search: Any, todo: list[Any], gen: int) -> Iterator[RunEvent]:
        """Score ``todo`` (tree order) for ``search``: the events the search yields."""
        jobs, entries = _triage(search, todo)
        by_key = {entry.key: entry for entry in entries}
        finished: dict[int, Outcome] = {}
        flush = _Flusher(search, entries, gen)
        yield from flush(finished)
        for item in self.run(jobs):
            if isinstance(item, Dispatched):
                e = by_key[item.job.key]
                e.started = True
                yield EvaluationStarted(generation=gen, index=e.key, dropped=e.dropped, kept=e.kept)
            elif isinstance(item, Done):
                e = by_key[item.key]
                record = search.evaluate_fn.record
                finished[item.key] = record(e.dropped, None, item.scores, item.seconds)
                yield from flush(finished)
            else:
                yield item
        yield from flush(finished)
        if flush.next < len(entries):
            raise RuntimeError(f"{len(entries) - flush.next} genomes came back without scores")

    def run(self, jobs: Sequence[Job]) -> Iterator[Dispatched | Done | RunEvent]:
        """Score ``jobs``: yields each dispatch, each result (any order) and worker events."""
        raise NotImplementedError

    def close(self) -> None:
        """End every worker (the run is over, stopped or failed)."""


InProcess = Backend


@dataclass
class _Entry:
    """One individual of the generation, in tree order, and how it gets its fitness."""

    key: int
    ind: Any
    dropped: list[int]
    kept: list[int]
    outcome: Outcome | None = None  # known before dispatch: memo hit or invalid genome
    same_as: int | None = None  # a genome repeated in the batch: the first one's key
    started: bool = False


def _triage(search: Any, todo: list[Any]) -> tuple[list[Job], list[_Entry]]:
    """Split a generation into memo hits, invalid genomes, repeats and jobs for the workers."""
    from gaprune_tui.engine.search import Outcome

    jobs: list[Job] = []
    entries: list[_Entry] = []
    first: dict[tuple[int, ...], int] = {}
    higher = search.higher_is_better
    for index, ind in enumerate(todo):
        dropped = sorted(ind)
        kept = search.kept_of(dropped)
        entry = _Entry(index, ind, dropped, kept)
        entries.append(entry)
        key = tuple(dropped)
        if key in first:
            entry.same_as = first[key]
            continue
        first[key] = index
        if search.config.invalid == "zero" and not search._valid(list(ind)):
            worst = 0.0 if higher else float("inf")
            entry.outcome = Outcome({}, worst, 0.0, False, "invalid")
            entry.started = True  # in-process announces no start for an invalid genome
            continue
        entry.outcome = search.evaluate_fn.lookup(dropped, None)
        if entry.outcome is None:
            jobs.append(Job(index, dropped, kept, None))
    return jobs, entries


class _Flusher:
    """Yields the evaluation events of a generation strictly in tree order."""

    def __init__(self, search: Any, entries: list[_Entry], gen: int) -> None:
        self.search, self.entries, self.gen = search, entries, gen
        self.next = 0
        self.by_key = {e.key: e for e in entries}

    def __call__(self, finished: dict[int, Outcome]) -> Iterator[RunEvent]:
        search = self.search
        while self.next < len(self.entries):
            e = self.entries[self.next]
            if e.same_as is not None:
                _set_fitness(search, e.ind, self.by_key[e.same_as].ind)
                self.next += 1
                continue
            outcome = e.outcome if e.outcome is not None else finished.get(e.key)
            if outcome is None:
                return
            if not e.started:  # a memo hit: announced as in-process, just before its result
                yield EvaluationStarted(
                    generation=self.gen, index=e.key, dropped=e.dropped, kept=e.kept
                )
            if outcome.fidelity != "invalid":
                search._counted(outcome)
            search._set_fitness(e.ind, outcome)
            yield EvaluationFinished(
                generation=self.gen, dropped=e.dropped, kept=e.kept, **vars(outcome)
            )
            self.next += 1


def _set_fitness(search: Any, ind: Any, same: Any) -> None:
    """A genome repeated within the batch takes the first copy's fitness (as in-process)."""
    ind.fitness.values = same.fitness.values
    ind.fidelity = same.fidelity


def worker_threads(n_workers: int) -> int:
    """Torch threads per worker: ``GAPRUNE_THREADS`` when set, else the cores split evenly."""
    wanted = os.environ.get("GAPRUNE_THREADS")
    if wanted:
        return max(1, int(wanted))
    return max(1, len(os.sched_getaffinity(0)) // max(1, n_workers))


def make_backend(config: RunConfig, threads: int) -> Backend:
    """The run's backend from its config (``workers``, ``devices``, ``ray``); its workers start
    loading the model at once. ``threads`` is the driver's own torch thread count."""
    if config.ray:
        from gaprune_tui.engine.backends.ray_actors import RayActors

        return RayActors(config)
    devices = _devices(config)
    if config.devices or len(devices) > 1:
        from gaprune_tui.engine.backends.local import LocalWorkers

        return LocalWorkers(config, devices)
    return Backend(config)


def _devices(config: RunConfig) -> list[str]:
    """One device name per worker: ``--devices`` (``all``: every CUDA device), else
    ``--workers`` copies of ``--device``."""
    if config.devices:
        from gaprune_tui.engine.model import cuda_count

        count = cuda_count()
        error = devices_error(config.devices, count)
        if error is not None:
            raise ConfigError(error)
        if config.devices == "all":
            return [f"cuda:{i}" for i in range(count)]
        return [d.strip() for d in config.devices.split(",") if d.strip()]
    return [config.device] * config.workers


def backend_result(store: Any, config: RunConfig) -> dict[str, Any]:
    """What result.json says of the backend: its label and the genomes each worker scored, over
    every session of the run (counted from the store's ``WorkerStatus`` events)."""
    counts: dict[str, int] = {}
    for event in store.events():
        if isinstance(event, WorkerStatus) and event.scored is not None:
            counts[event.name] = counts.get(event.name, 0) + 1
    return {"backend": backend_label(config), "worker_evaluations": dict(sorted(counts.items()))}
