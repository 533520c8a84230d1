"""EvoPress's search (Sieberling et al., ICML 2025): (1 + lambda) evolution with multi-step selection.

One parent. Generation 0 scores the seeds (the run's baselines, already in the memo) and
``population`` random genomes; the best becomes the parent. Each generation then:

1. makes ``offspring`` children of the parent, each by EvoPress's count-preserving swap mutation
   (1 to 3 dropped layers swapped with kept ones, fewer swaps more likely: ``operators.mut_swap``),
   distinct from the parent and from each other;
2. scores every child on the first ``selection_tokens`` calibration tokens (task fitness: on
   ``screen`` items per task), a cheap estimate reported with its own fidelity (``tokens:T``);
3. scores the best ``survivors`` of them on all the calibration tokens (full fidelity);
4. keeps the best of the parent and those full scores (elitist: a child replaces the parent only
   when strictly better; ties keep the parent).

A screened score never becomes a genome's reported fitness: the hall of fame, the parent and every
"best" hold full evaluations only, and the screened outcomes are stored with their fidelity. With
the calibration fixed, the parent's full fitness comes from the memo instead of being re-measured
as EvoPress does on fresh samples. Everything random comes from the search's own ``random.Random``
and the state at each generation boundary is a checkpoint (the parent first), so a killed run
resumes to the same result.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.events import EvaluationFinished, EvaluationStarted, RunEvent
from gaprune_tui.engine.search import Search

__all__ = ["MAX_SWAPS", "EvoPressSearch"]

# EvoPress's drop search swaps 1 to 3 pairs per child.
MAX_SWAPS = 3


class EvoPressSearch(Search):
    """(1 + lambda) evolution for one k (see the module docstring); the events of ``Search``."""

    def run(self) -> Iterator[RunEvent]:
        cfg = self.config
        limit = cfg.screen_limit
        if self.state is None:
            self.rng.seed(cfg.seed)
            start = time.monotonic()
            self._gen_counts = [0, 0]
            self._add_known()
            seeds = [self.individual(g) for g in self._distinct_seeds()]
            randoms = [self.individual(g) for g in self._random_genomes(seeds)]
            self._plan(seeds)
            yield from self._evaluate_full(sorted(seeds, key=sorted), 0)
            full = list(seeds)
            full += yield from self._select(randoms, 0, limit)
            parent = self._best(full)
            self._hof_update(full)
            yield self._generation_event(
                0, self._population(parent, full), time.monotonic() - start
            )
            first_gen = 1
        else:
            parent = self._restore(self.state)[0]
            first_gen = self.state.gen + 1
        for gen in range(first_gen, cfg.generations + 1):
            start = time.monotonic()
            self._gen_counts = [0, 0]
            children = [self.individual(g) for g in self._children(sorted(parent))]
            full = yield from self._select(children, gen, limit)
            self._hof_update(full)
            best = self._best(full) if full else parent
            if fitness_kinds.better(best.fitness.values[0], parent.fitness.values[0], self.kind):
                parent = best
            yield self._generation_event(
                gen, self._population(parent, full), time.monotonic() - start
            )
        yield self.summary()

    # ---- selection --------------------------------------------------------------------------
    def _select(
        self, inds: list[Any], gen: int, limit: int | None
    ) -> Generator[RunEvent, None, list[Any]]:
        """Multi-step selection of ``inds``: all on ``limit`` (if any), then the best
        ``survivors`` at full fidelity. Returns (as the generator's value) the individuals that
        hold a full fitness."""
        if not inds:
            return []
        todo = sorted(inds, key=sorted)
        if limit is None:
            self._plan(todo)
            yield from self._evaluate_full(todo, gen)
            return todo
        yield from self._screen(todo, gen, limit)
        ranked = sorted(todo, key=lambda i: (self._key(i), sorted(i)))
        promoted = sorted(ranked[: self.config.survivors], key=sorted)
        for ind in promoted:
            del ind.fitness.values  # the full evaluation replaces the screened estimate
        self._plan(promoted)
        yield from self._evaluate_full(promoted, gen)
        return promoted

    def _screen(self, todo: list[Any], gen: int, limit: int) -> Iterator[RunEvent]:
        """Score ``todo`` (tree order, distinct) on the first selection step, in this process."""
        self._plan(todo)
        fidelity_of = getattr(self.evaluate_fn, "fidelity", None)
        label = fidelity_of(limit) if fidelity_of is not None else f"screen:{limit}"
        for index, ind in enumerate(todo):
            dropped = sorted(ind)
            kept = self.kept_of(dropped)
            yield EvaluationStarted(
                generation=gen, index=index, dropped=dropped, kept=kept, fidelity=label
            )
            quick = self._call(dropped, limit)
            self._set_fitness(ind, quick)
            yield EvaluationFinished(generation=gen, dropped=dropped, kept=kept, **vars(quick))

    def _plan(self, todo: list[Any]) -> None:
        plan = getattr(self.evaluate_fn, "plan", None)
        if plan is not None:
            plan([sorted(ind) for ind in todo])

    def _key(self, ind: Any) -> float:
        return fitness_kinds.rank_key(ind.fitness.values[0], self.kind)

    def _best(self, inds: list[Any]) -> Any:
        """The best full evaluation (ties: the smaller genome)."""
        return min(inds, key=lambda i: (self._key(i), sorted(i)))

    def _population(self, parent: Any, full: list[Any]) -> list[Any]:
        """What a generation reports: the parent first, then this generation's full scores."""
        return [parent] + [i for i in full if sorted(i) != sorted(parent)]

    # ---- variation --------------------------------------------------------------------------
    def _distinct_seeds(self) -> list[list[int]]:
        out: list[list[int]] = []
        for genome in self.seeds:
            if self._valid(genome) and genome not in out:
                out.append(genome)
        return out

    def _random_genomes(self, seeds: list[Any]) -> list[list[int]]:
        """``population`` random genomes, distinct from each other and from the seeds."""
        taken = {tuple(sorted(s)) for s in seeds}
        out: list[list[int]] = []
        for _ in range(20 * self.config.population):
            if len(out) == self.config.population:
                break
            genome = self._random(self.rng)
            if tuple(genome) not in taken:
                taken.add(tuple(genome))
                out.append(genome)
        return out

    def _children(self, parent: list[int]) -> list[list[int]]:
        """``offspring`` distinct children of the parent by swap mutation (fewer where the space
        around the parent is smaller)."""
        seen = {tuple(parent)}
        out: list[list[int]] = []
        for _ in range(20 * self.config.offspring):
            if len(out) == self.config.offspring:
                break
            child = self._swap(parent, self.rng, MAX_SWAPS)
            if tuple(child) not in seen:
                seen.add(tuple(child))
                out.append(child)
        return out
