"""The genetic search, as a generator of events.

DEAP with the original method's operators: a genome is the sorted list of ``k`` layer indices to
drop, drawn from ``[protect, n_layers)``; ``cxOnePoint``; ``mutUniformInt(low=0, up=n_layers-1,
indpb=1/k)``; ``selTournament``; ``eaSimple``-style generations (``varAnd`` with cxpb/mutpb); a
HallOfFame. Variation can produce invalid genomes (a repeated index, or a protected layer put back
by the mutation, which draws from ``[0, n)``). By default they are repaired deterministically; with
``invalid="zero"`` they score 0 as in the original. ``mutation="swap"`` uses EvoPress's
count-preserving swap mutation instead (``engine/operators.py``), and ``seeds`` (the one-shot
baselines with ``--init heuristics``) start the initial population.

The fitness kind decides the direction: task fitness is maximised, KL and perplexity are minimised
(DEAP fitness weights, see ``individual_class``).

The generator yields the events of ``core/events.py``; the worker writes them to the run store and honours
pause/stop between them. Everything random comes from one ``random.Random`` owned by the search,
so the same config and seed give the same genomes, and evaluation code that touches the global
``random`` module cannot change the sequence. The state at each generation boundary is yielded as
a checkpoint (``GenerationFinished.checkpoint``) so a killed run resumes exactly.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from deap import algorithms, base, creator, tools

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import pareto
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.events import (
    EvaluationFinished,
    EvaluationStarted,
    GenerationFinished,
    RunEvent,
    SearchFinished,
)
from gaprune_tui.core.fitness import fitness_of
from gaprune_tui.core.units import GenomeSpace
from gaprune_tui.engine.operators import cx_sets, mut_resize, mut_swap, repair_range

# DEAP compares fitnesses through their weights: +1 maximises task fitness, -1 minimises KL and
# perplexity, so selection, the HallOfFame and "best" follow the fitness kind with no sign tricks.
if not hasattr(creator, "GapruneFitness"):
    creator.create("GapruneFitness", base.Fitness, weights=(1.0,))
if not hasattr(creator, "GapruneIndividual"):
    creator.create("GapruneIndividual", list, fitness=creator.GapruneFitness)
if not hasattr(creator, "GapruneFitnessMin"):
    creator.create("GapruneFitnessMin", base.Fitness, weights=(-1.0,))
if not hasattr(creator, "GapruneIndividualMin"):
    creator.create("GapruneIndividualMin", list, fitness=creator.GapruneFitnessMin)

# A Pareto run's two objectives: the fitness (its kind's direction) and k, the layers dropped (up).
if not hasattr(creator, "GaprunePareto"):
    creator.create("GaprunePareto", base.Fitness, weights=(1.0, 1.0))
if not hasattr(creator, "GapruneParetoIndividual"):
    creator.create("GapruneParetoIndividual", list, fitness=creator.GaprunePareto)
if not hasattr(creator, "GapruneParetoMin"):
    creator.create("GapruneParetoMin", base.Fitness, weights=(-1.0, 1.0))
if not hasattr(creator, "GapruneParetoIndividualMin"):
    creator.create("GapruneParetoIndividualMin", list, fitness=creator.GapruneParetoMin)

Individual = creator.GapruneIndividual
IndividualMin = creator.GapruneIndividualMin
CHECKPOINT_VERSION = 1
__all__ = [
    "Outcome",
    "Search",
    "SearchState",
    "fitness_of",
    "is_screened",
    "is_valid",
    "make_search",
    "repair",
]


def individual_class(kind: str, pareto: bool = False) -> type:
    """The DEAP individual type whose fitness weights match the kind's direction (and, for a
    Pareto run, add k as a second objective to maximise)."""
    if pareto:
        if fitness_kinds.higher_is_better(kind):
            return creator.GapruneParetoIndividual
        return creator.GapruneParetoIndividualMin
    return Individual if fitness_kinds.higher_is_better(kind) else IndividualMin


@dataclass
class Outcome:
    """What evaluating one genome produced."""

    scores: dict[str, dict[str, Any]]
    fitness: float
    seconds: float
    from_memo: bool
    fidelity: str = "full"


# evaluate(dropped, limit) -> Outcome; limit None means each task's configured limit.
EvaluateFn = Callable[[list[int], int | None], Outcome]


@dataclass
class SearchState:
    """Everything needed to continue after generation ``gen``."""

    gen: int
    population: list[list[int]]
    fitnesses: list[float]
    fidelities: list[str]
    hof: list[tuple[list[int], float]]
    rng_state: Any
    logbook: list[dict[str, Any]] = field(default_factory=list)
    version: int = CHECKPOINT_VERSION
    # Pareto runs: every full evaluation so far (the front is built from it) and the fixed
    # reference fitness of the hypervolume. None in single-objective runs and older checkpoints.
    archive: list[tuple[list[int], float]] | None = None
    hv_ref: float | None = None

    def dumps(self) -> bytes:
        return pickle.dumps(self)

    @staticmethod
    def loads(blob: bytes) -> SearchState:
        state = pickle.loads(blob)
        if not isinstance(state, SearchState) or state.version != CHECKPOINT_VERSION:
            raise ValueError("checkpoint from an incompatible gaprune-tui version")
        return state


def is_screened(fidelity: str) -> bool:
    """Whether an outcome is a cheap first-step score (``screen:N`` items, ``tokens:T``)."""
    return fidelity.startswith(("screen:", "tokens:"))


def is_valid(genome: list[int], n_layers: int, protect: int, k: int) -> bool:
    return (
        len(genome) == k and len(set(genome)) == k and all(protect <= g < n_layers for g in genome)
    )


def repair(genome: list[int], n_layers: int, protect: int, rng: Any) -> list[int]:
    """Replace repeated or protected indices with unused allowed layers; return sorted.

    Deterministic under the search's RNG: the replacements are drawn from the sorted list of unused
    allowed layers.
    """
    seen: set[int] = set()
    keep: list[int] = []
    missing = 0
    for g in genome:
        if protect <= g < n_layers and g not in seen:
            seen.add(g)
            keep.append(g)
        else:
            missing += 1
    if missing:
        pool = [i for i in range(protect, n_layers) if i not in seen]
        keep.extend(rng.sample(pool, missing))
    return sorted(keep)


class Search:
    """One GA run over a model with ``n_layers`` decoder layers."""

    def __init__(
        self,
        config: RunConfig,
        n_layers: int,
        evaluate: EvaluateFn,
        *,
        state: SearchState | None = None,
        seeds: Sequence[Sequence[int]] = (),
        backend: Any = None,
        known: Sequence[tuple[Sequence[int], float]] = (),
    ) -> None:
        """``seeds`` are genomes put in the initial population before the random ones (the
        one-shot baselines with ``--init heuristics``). ``backend`` scores a generation on
        several workers (``engine/backends``); None scores here, one genome after another.
        ``known`` are (genome, full fitness) the run scored before searching (its baselines):
        the hall of fame and a Pareto run's archive start with them, so every "best" the search
        announces already counts them, whatever the initial population holds."""
        config.check_layers(n_layers)
        # The direction follows what ``evaluate`` computes (an Evaluator says its kind: a task
        # evaluator under a KL config still maximises its task fitness), else the config's kind.
        self.kind: str = getattr(evaluate, "kind", config.fitness)
        self.higher_is_better = fitness_kinds.higher_is_better(self.kind)
        self.pareto = config.pareto
        self.ks = config.ks
        self.individual = individual_class(self.kind, self.pareto)
        self.config = config
        # Genomes are units (``core/units.py``): layers, or attention and MLP sub-blocks.
        self.space = GenomeSpace(
            n_layers, config.protect, config.granularity, config.attention_drops
        )
        self.n_layers = self.space.n_units  # the units a genome draws from
        self.protect = self.space.first_unit  # units below this are never dropped
        self.quota = config.attention_drops is not None and not config.pareto
        self.k = config.prune
        # Pareto runs: (dropped, fitness) of every full evaluation, in evaluation order, and
        # the hypervolume's reference fitness (fixed from the initial population).
        self.archive: dict[tuple[int, ...], float] = {}
        self.hv_ref: float | None = None
        self.evaluate_fn = evaluate
        self.rng = random.Random(config.seed)
        self.state = state
        self.toolbox = self._toolbox()
        self.evaluated = 0
        self.memo_hits = 0
        self._gen_counts = [0, 0]
        # (fitness, fidelity) of the population that produced the offspring being evaluated.
        self.state_population: list[tuple[float, str]] = []
        self.seeds = [sorted(s) for s in seeds]
        self.hof = tools.HallOfFame(max(10, min(50, config.population)))
        self.backend = backend
        self.known = [(sorted(g), float(f)) for g, f in known if self._valid(sorted(g))]

    # ---- DEAP toolbox ---------------------------------------------------------------------------
    def _toolbox(self) -> base.Toolbox:
        cfg, n = self.config, self.n_layers
        tb = base.Toolbox()
        tb.register("individual", lambda: self.individual(self._random(random)))
        tb.register("population", tools.initRepeat, list, tb.individual)
        if self.pareto:
            tb.register("mate", self._mate_sets)
            tb.register("mutate", self._mutate_resize)
            return tb
        tb.register("mate", tools.cxOnePoint)
        if cfg.mutation == "swap":
            tb.register("mutate", self._mutate_swap)
        else:
            tb.register("mutate", tools.mutUniformInt, low=0, up=n - 1, indpb=1.0 / self.k)
        tb.register("select", tools.selTournament, tournsize=cfg.tournament)
        return tb

    def _mutate_swap(self, ind: list[int]) -> tuple[list[int]]:
        """EvoPress's count-preserving mutation, in place as DEAP expects; runs inside
        ``_own_random``, so the global ``random`` is the search's own stream."""
        genome = list(ind)
        if not self._valid(genome):  # crossover made a repeat
            genome = self._repair(genome, random)
        ind[:] = self._swap(genome, random)
        return (ind,)

    def _random(self, rng: Any) -> list[int]:
        """A random genome of the run's k (``rng``: the search's stream)."""
        if self.quota:
            return self.space.draw(self.k, rng)
        return sorted(rng.sample(range(self.protect, self.n_layers), self.k))

    def _repair(self, genome: list[int], rng: Any) -> list[int]:
        if self.quota:
            return self.space.repair(genome, self.k, rng)
        return repair(genome, self.n_layers, self.protect, rng)

    def _swap(self, genome: list[int], rng: Any, max_swaps: int = 3) -> list[int]:
        """EvoPress's swap mutation; with an attention quota, within the attention or MLP pool."""
        if self.quota:
            return self.space.swap(genome, rng, max_swaps)
        return mut_swap(genome, self.n_layers, self.protect, rng, max_swaps)

    def kept_of(self, dropped: list[int]) -> list[int]:
        """The path the scorer runs for a genome (its kept layers, sub-blocks coded)."""
        return self.space.kept(dropped)

    def _mate_sets(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """A Pareto run's crossover (``cx_sets``), in place as DEAP expects."""
        one, two = cx_sets(a, b, random)  # type: ignore[arg-type]
        a[:], b[:] = one, two
        return a, b

    def _mutate_resize(self, ind: list[int]) -> tuple[list[int]]:
        """A Pareto run's mutation (``mut_resize``): grow, shrink or swap within the range."""
        low, high, rng = self.ks[0], self.ks[-1], cast(random.Random, random)
        ind[:] = mut_resize(ind, self.n_layers, self.protect, low, high, rng)
        return (ind,)

    def _valid(self, genome: list[int]) -> bool:
        """Distinct droppable layers, as many as the run's k (a Pareto run: any k of its range)."""
        if self.pareto and len(genome) not in self.ks:
            return False
        k = len(genome) if self.pareto else self.k
        if self.quota:
            return self.space.valid(genome, k)
        return is_valid(genome, self.n_layers, self.protect, k)

    def _initial_population(self) -> list[Any]:
        """The seeds that are valid and distinct, then random genomes up to the population size
        (a Pareto run's spread evenly over the sizes of its range)."""
        cfg = self.config
        seeded: list[Any] = []
        for genome in self.seeds:
            if self._valid(genome) and genome not in seeded and len(seeded) < cfg.population:
                seeded.append(self.individual(genome))
        missing = cfg.population - len(seeded)
        if not self.pareto:
            return seeded + self.toolbox.population(n=missing)
        pool = range(self.protect, self.n_layers)
        sizes = [self.ks[i % len(self.ks)] for i in range(missing)]
        return seeded + [self.individual(sorted(random.sample(pool, k))) for k in sizes]

    @contextlib.contextmanager
    def _own_random(self) -> Iterator[None]:
        """Run DEAP (which draws from the global ``random``) on the search's own stream.

        The global generator's state is swapped for ours around each block of GA work, so the
        sequence depends only on the seed, whatever evaluation code does with ``random``.
        """
        outer = random.getstate()
        random.setstate(self.rng.getstate())
        try:
            yield
        finally:
            self.rng.setstate(random.getstate())
            random.setstate(outer)

    # ---- evaluation -----------------------------------------------------------------------------
    def _assess(self, ind: Any, gen: int, index: int) -> Iterator[RunEvent]:
        """Evaluate one individual (validity, screening, full), yielding its events."""
        dropped = sorted(ind)
        kept = self.kept_of(dropped)
        if self.config.invalid == "zero" and not self._valid(list(ind)):
            # The original scores an invalid genome (a repeated or a protected layer) 0: the
            # worst task fitness. For KL and perplexity (lower is better) the worst is +inf.
            worst = 0.0 if self.higher_is_better else float("inf")
            outcome = Outcome(
                scores={}, fitness=worst, seconds=0.0, from_memo=False, fidelity="invalid"
            )
            self._set_fitness(ind, outcome)
            yield self._finished(gen, dropped, kept, outcome)
            return
        yield EvaluationStarted(generation=gen, index=index, dropped=dropped, kept=kept)
        outcome = self._call(dropped, None)
        self._set_fitness(ind, outcome)
        yield self._finished(gen, dropped, kept, outcome)

    def _set_fitness(self, ind: Any, outcome: Outcome) -> None:
        """Give an individual its evaluation: the DEAP fitness values (a Pareto run's second
        objective is the number of dropped layers) and the fidelity; a Pareto run's full
        evaluations also go into its archive, the source of the front."""
        if self.pareto:
            ind.fitness.values = (outcome.fitness, float(len(ind)))
            if outcome.fidelity == "full":
                self.archive.setdefault(tuple(sorted(ind)), outcome.fitness)
        else:
            ind.fitness.values = (outcome.fitness,)
        ind.fidelity = outcome.fidelity

    def _call(self, dropped: list[int], limit: int | None) -> Outcome:
        return self._counted(self.evaluate_fn(dropped, limit))

    def _counted(self, outcome: Outcome) -> Outcome:
        """Count an outcome (fresh or from the memo), wherever it was computed."""
        if outcome.from_memo:
            self.memo_hits += 1
            self._gen_counts[1] += 1
        else:
            self.evaluated += 1
        self._gen_counts[0] += 1
        return outcome

    def _finished(
        self, gen: int, dropped: list[int], kept: list[int], o: Outcome
    ) -> EvaluationFinished:
        # Outcome's fields are the scoring half of the event's.
        return EvaluationFinished(generation=gen, dropped=dropped, kept=kept, **vars(o))

    def _evaluate_all(self, inds: list[Any], gen: int) -> Iterator[RunEvent]:
        """Evaluate individuals without a fitness; a genome repeated within the batch is done once."""
        # Tree order: genomes sharing their first dropped layers are scored one after another, so
        # the scorer can reuse the layers they agree on (a stable sort: the GA sees no difference,
        # each individual keeps its own fitness).
        todo = sorted((ind for ind in inds if not ind.fitness.valid), key=lambda i: sorted(i))
        plan = getattr(self.evaluate_fn, "plan", None)
        if plan is not None:
            plan([sorted(ind) for ind in todo])
        screen = self.config.screen
        if screen and gen > 0 and self.state_population:
            yield from self._screened(todo, gen, screen)  # always here, whatever the backend
            return
        yield from self._evaluate_full(todo, gen)

    def _evaluate_full(self, todo: list[Any], gen: int) -> Iterator[RunEvent]:
        """Full-fidelity evaluation of ``todo`` (tree order), here or on the backend's workers."""
        if self.backend is not None and self.backend.remote:
            # Several workers score the generation; the events come back in this same order.
            yield from self.backend.evaluate(self, todo, gen)
            return
        done: dict[tuple[int, ...], Any] = {}
        for index, ind in enumerate(todo):
            key = tuple(sorted(ind))
            if key in done:
                ind.fitness.values = done[key].fitness.values
                ind.fidelity = done[key].fidelity
                continue
            yield from self._assess(ind, gen, index)
            done[key] = ind

    def _screened(self, todo: list[Any], gen: int, items: int) -> Iterator[RunEvent]:
        """Multi-fidelity: score offspring on ``items`` per task first; only those at or above the
        median full-fidelity fitness of the current population (or better) get the full evaluation."""
        parents = [f for f, fid in self.state_population if fid == "full"]
        higher = self.higher_is_better
        worst = float("-inf") if higher else float("inf")
        threshold = statistics.median(parents) if parents else worst
        for index, ind in enumerate(todo):
            dropped = sorted(ind)
            kept = self.kept_of(dropped)
            if self.config.invalid == "zero" and not self._valid(list(ind)):
                yield from self._assess(ind, gen, index)
                continue
            yield EvaluationStarted(
                generation=gen, index=index, dropped=dropped, kept=kept, fidelity=f"screen:{items}"
            )
            quick = self._call(dropped, items)
            yield self._finished(gen, dropped, kept, quick)
            promising = quick.fitness >= threshold if higher else quick.fitness <= threshold
            if promising:
                yield from self._assess(ind, gen, index)
            else:
                self._set_fitness(ind, quick)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> Iterator[RunEvent]:
        cfg = self.config
        if self.state is None:
            self.rng.seed(cfg.seed)
            start = time.monotonic()
            self._gen_counts = [0, 0]
            self._add_known()
            with self._own_random():
                population = self._initial_population()
            yield from self._evaluate_all(population, 0)
            self._hof_update(population)
            if self.pareto:
                fits = [ind.fitness.values[0] for ind in population]
                self.hv_ref = pareto.reference_quality(fits, self.kind)
                population = tools.selNSGA2(population, len(population))
            yield self._generation_event(0, population, time.monotonic() - start)
            first_gen = 1
        else:
            population = self._restore(self.state)
            first_gen = self.state.gen + 1
        for gen in range(first_gen, cfg.generations + 1):
            start = time.monotonic()
            self._gen_counts = [0, 0]
            self.state_population = [(ind.fitness.values[0], ind.fidelity) for ind in population]
            with self._own_random():
                offspring = self._breed(population)
            yield from self._evaluate_all(offspring, gen)
            self._hof_update(offspring)
            population[:] = self._survivors(population, offspring)
            yield self._generation_event(gen, population, time.monotonic() - start)
        yield self.summary()

    def _add_known(self) -> None:
        """Start the hall of fame (a Pareto run: its archive) with the ``known`` evaluations."""
        inds = []
        for genome, fitness in self.known:
            ind = self.individual(genome)
            ind.fitness.values = self._values(genome, fitness)
            ind.fidelity = "full"
            inds.append(ind)
            if self.pareto:
                self.archive.setdefault(tuple(genome), fitness)
        self._hof_update(inds)

    def _hof_update(self, inds: list[Any]) -> None:
        """The hall of fame takes full evaluations only: a screened fitness is never a best."""
        self.hof.update([i for i in inds if not is_screened(getattr(i, "fidelity", "full"))])

    def _breed(self, population: list[Any]) -> list[Any]:
        """Offspring of one generation (inside ``_own_random``): selection, ``varAnd``, repair.

        Single objective: tournament selection, as the original method. Pareto: NSGA-II's
        crowded tournament (``selTournamentDCD``; it takes a multiple of four, so the population
        is padded with its own first members and the extra children dropped), and every child
        repaired into the range."""
        cfg = self.config
        if self.pareto:
            padded = population + population[: (-len(population)) % 4]
            parents = tools.selTournamentDCD(padded, len(padded))[: len(population)]
            offspring = algorithms.varAnd(parents, self.toolbox, cfg.cxpb, cfg.mutpb)
            low, high = self.ks[0], self.ks[-1]
            for i, ind in enumerate(offspring):
                if not ind.fitness.valid:
                    rng = cast(random.Random, random)  # the module, on the search's stream
                    fixed = repair_range(ind, self.n_layers, self.protect, low, high, rng)
                    offspring[i] = self.individual(fixed)
            return offspring
        offspring = self.toolbox.select(population, len(population))
        offspring = algorithms.varAnd(offspring, self.toolbox, cfg.cxpb, cfg.mutpb)
        if cfg.invalid == "repair":
            for i, ind in enumerate(offspring):
                if ind.fitness.valid:
                    continue
                if self._valid(list(ind)):
                    ind[:] = sorted(ind)
                else:
                    offspring[i] = self.individual(self._repair(list(ind), random))
        return offspring

    def _survivors(self, population: list[Any], offspring: list[Any]) -> list[Any]:
        """The next population: the offspring (single objective, generational as the original),
        or NSGA-II's elitist choice from parents and offspring together, each genome once
        where the distinct genomes suffice (a duplicate only adds crowding, never a new point)."""
        if not self.pareto:
            return offspring
        distinct: list[Any] = []
        seen: set[tuple[int, ...]] = set()
        for ind in population + offspring:
            key = tuple(sorted(ind))
            if key not in seen:
                seen.add(key)
                distinct.append(ind)
        size = len(population)
        pool = distinct if len(distinct) >= size else population + offspring
        return tools.selNSGA2(pool, size)

    def front(self) -> list[pareto.FrontPoint]:
        """A Pareto run's front: the best full evaluation per k of the range so far."""
        return pareto.per_k_best(self.archive.items(), self.kind, self.ks)

    def summary(self) -> SearchFinished:
        if self.pareto:
            members = [{"dropped": p.dropped, "fitness": p.fitness} for p in self.front()]
        else:
            members = [
                {"dropped": sorted(ind), "fitness": ind.fitness.values[0]} for ind in self.hof
            ]
        return SearchFinished(
            hall_of_fame=members,
            evaluated=self.evaluated,
            memo_hits=self.memo_hits,
        )

    def _generation_event(
        self, gen: int, population: list[Any], seconds: float
    ) -> GenerationFinished:
        fits = [ind.fitness.values[0] for ind in population]
        best_dropped, best_fitness = sorted(self.hof[0]), self.hof[0].fitness.values[0]
        front: list[pareto.FrontPoint] = []
        volume = None
        if self.pareto:
            # A Pareto run's "best" is its front's knee: the point a user would most likely pick.
            front = self.front()
            knee = pareto.knee(front, self.kind)
            if knee is not None:
                best_dropped, best_fitness = knee.dropped, knee.fitness
            ref = self.hv_ref if self.hv_ref is not None else 0.0
            volume = pareto.hypervolume(front, self.kind, ref, self.ks[0] - 1)
        state = SearchState(
            gen=gen,
            population=[list(ind) for ind in population],
            fitnesses=fits,
            fidelities=[getattr(ind, "fidelity", "full") for ind in population],
            hof=[(list(ind), ind.fitness.values[0]) for ind in self.hof],
            rng_state=self.rng.getstate(),
            archive=[(list(g), f) for g, f in self.archive.items()] if self.pareto else None,
            hv_ref=self.hv_ref,
        )
        return GenerationFinished(
            generation=gen,
            evaluated=self._gen_counts[0] - self._gen_counts[1],
            from_memo=self._gen_counts[1],
            min=min(fits),
            mean=sum(fits) / len(fits),
            max=max(fits),
            best_dropped=best_dropped,
            best_fitness=best_fitness,
            seconds=seconds,
            population=[sorted(ind) for ind in population],
            front=pareto.front_to_dicts(front),
            hypervolume=volume,
            checkpoint=state.dumps(),
        )

    def _restore(self, state: SearchState) -> list[Any]:
        self.rng.setstate(state.rng_state)
        population = []
        for genome, fit, fid in zip(
            state.population, state.fitnesses, state.fidelities, strict=True
        ):
            ind = self.individual(genome)
            ind.fitness.values = self._values(genome, fit)
            ind.fidelity = fid
            population.append(ind)
        hof_inds = []
        for genome, fit in state.hof:
            ind = self.individual(genome)
            ind.fitness.values = self._values(genome, fit)
            hof_inds.append(ind)
        self.hof.update(hof_inds)
        if self.pareto:
            self.archive = {tuple(g): f for g, f in state.archive or []}
            self.hv_ref = state.hv_ref
            # NSGA-II's crowded tournament reads the crowding distances selNSGA2 assigns (they
            # are not in the checkpoint); it draws nothing random, so the resume stays exact.
            population = tools.selNSGA2(population, len(population))
        return population

    def _values(self, genome: list[int], fit: float) -> tuple[float, ...]:
        return (fit, float(len(genome))) if self.pareto else (fit,)


def make_search(
    config: RunConfig,
    n_layers: int,
    evaluate: EvaluateFn,
    *,
    state: SearchState | None = None,
    seeds: Sequence[Sequence[int]] = (),
    backend: Any = None,
    known: Sequence[tuple[Sequence[int], float]] = (),
) -> Search:
    """The search a config asks for: EvoPress's (1 + lambda) evolution, the original GA, or
    NSGA-II for a Pareto run (``RunConfig.search_algorithm``)."""
    if config.evopress:
        from gaprune_tui.engine.evopress import EvoPressSearch

        return EvoPressSearch(
            config, n_layers, evaluate, state=state, seeds=seeds, backend=backend, known=known
        )
    return Search(
        config, n_layers, evaluate, state=state, seeds=seeds, backend=backend, known=known
    )
