"""Finalist confirmation: the search's best genomes re-scored where its noise cannot follow them.

A search ranks genomes by a score measured on a sample (task fitness at a small limit, or KL on a
few thousand calibration tokens), and its favourite is partly the sample's favourite: on the
embedded model at limit 20 the task fitness's optimum held out no better than a random genome.
So when a search ends, its top ``finalists`` distinct genomes, the one-shot baselines and the base
model are scored again:

* ``confirmed``: the run's tasks at ``confirm_limit`` items each, taken after the items the search
  scored (fresh items: the search's favourite cannot be the sample's favourite there), as the
  run's task fitness (the plain mean of task scores for a KL or perplexity run);
* ``holdout``: the mean score over held-out tasks the search never saw, at the same limit.

Both carry standard errors, and go through the shared memo and the prefix cache like any genome.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gaprune_tui.core import stats
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.events import GenomeConfirmed
from gaprune_tui.core.fitness import fitness_stderr, task_kind
from gaprune_tui.core.store import Memo
from gaprune_tui.engine.evaluator import Evaluator
from gaprune_tui.engine.model import LoadedModel
from gaprune_tui.engine.tasks import TaskSet, build_tasks


@dataclass(frozen=True)
class Candidate:
    """A genome to confirm: a finalist, a baseline or the base model (nothing dropped)."""

    label: str
    role: str
    dropped: list[int]
    fitness: float | None = None
    fitness_stderr: float | None = None
    rank: int = 0


def confirm_config(config: RunConfig) -> RunConfig:
    """The run's tasks with every limit set to ``confirm_limit``."""
    tasks = [dataclasses.replace(t, limit=None) for t in config.tasks]
    return dataclasses.replace(config, tasks=tasks, limit=config.confirm_limit, screen=None)


def holdout_config(config: RunConfig) -> RunConfig | None:
    """The held-out tasks at ``confirm_limit``, each with its default metric; None if there are none."""
    names = config.holdout
    if not names:
        return None
    return dataclasses.replace(
        config,
        tasks=[TaskSpec(name) for name in names],
        metric=None,
        limit=config.confirm_limit,
        screen=None,
    )


def fresh_items(taskset: TaskSet, config: RunConfig) -> dict[str, int]:
    """Point each confirmation task past the items the search scored (its limit), so the
    confirmed score is measured on items the search never saw; a task with nothing left past them
    is confirmed on its first items again (offset 0). Returns the offset of each task."""
    searched = {spec.name: config.task_limit(spec) for spec in config.tasks}
    for task in taskset.tasks:
        seen = searched.get(task.name)
        task.offset = seen if seen is not None and seen < task.n_docs else 0
    return {task.name: task.offset for task in taskset.tasks}


class Confirmer:
    """Scores candidates on the confirmation and held-out task sets (built once)."""

    def __init__(self, loaded: LoadedModel, config: RunConfig, memo: Memo, lm: Any) -> None:
        self.config = config
        self.kind = task_kind(config.fitness)
        confirm = confirm_config(config)
        taskset = build_tasks(confirm)
        self.offsets = fresh_items(taskset, config)
        self.confirm = Evaluator(loaded, taskset, confirm, memo, lm=lm, kind=self.kind)
        held = holdout_config(config)
        self.holdout = (
            None
            if held is None
            else Evaluator(loaded, build_tasks(held), held, memo, lm=lm, kind="mean")
        )

    @property
    def tasks(self) -> list[str]:
        return self.confirm.taskset.names

    @property
    def holdout_tasks(self) -> list[str]:
        return [] if self.holdout is None else self.holdout.taskset.names

    def plan(self, candidates: list[Candidate]) -> None:
        genomes = sorted(c.dropped for c in candidates)
        self.confirm.plan(genomes)
        if self.holdout is not None:
            self.holdout.plan(genomes)

    def run(
        self, candidates: list[Candidate], between: Callable[[], None] | None = None
    ) -> Iterator[GenomeConfirmed]:
        """Confirm each candidate (tree order for the prefix cache), calling ``between`` before
        each one (pause and stop are honoured there)."""
        order = sorted(candidates, key=lambda c: c.dropped)
        self.plan(order)
        for candidate in order:
            if between is not None:
                between()
            yield self.one(candidate)

    def one(self, candidate: Candidate) -> GenomeConfirmed:
        start = time.perf_counter()
        confirmed = self.confirm(candidate.dropped)
        event = GenomeConfirmed(
            **dataclasses.asdict(
                candidate
            ),  # who it is: label, role, rank, dropped, search fitness
            confirmed=confirmed.fitness,
            confirmed_stderr=fitness_stderr(confirmed.scores, self.kind),
            confirmed_scores=confirmed.scores,
        )
        if self.holdout is not None:
            held = self.holdout(candidate.dropped)
            event.holdout = held.fitness
            event.holdout_stderr = stats.fitness_stderr(held.scores, "mean")
            event.holdout_scores = held.scores
        event.seconds = time.perf_counter() - start
        return event
