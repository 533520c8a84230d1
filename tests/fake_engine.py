"""A fake engine that writes a believable search into a real RunStore, for UI tests.

The TUI only ever reads the run store, so a UI test does not need torch, a model or lm-eval: it
needs a store with the same rows and events the real engine writes (see the event list in the
engine's worker). This module writes exactly those, fast and deterministically under a seed, so
Pilot and snapshot tests run in milliseconds. It is for UI tests only; the end-to-end test drives
the real engine on the embedded model.

- ``populate(store, ...)`` writes a whole search (or all of it but the ending) at once.
- ``FakeEngine(store, ...)`` writes it one event per ``step()``, for live-update tests. Like the
  real engine it honours control requests (pause / resume / stop) between evaluations, and it
  can ``fail()`` (run_failed) or ``crash()`` (the engine process vanished) on demand.
- ``fake_store(**kw)`` creates a run (``RunStore.create``) whose config.toml matches the fake.
- A store created with ``objective="pareto", prune_range=[MIN, MAX]`` gets a Pareto run: genomes of
  every size in the range, a front and its hypervolume on each generation event, and result.json's
  ``front`` (one member per k, the knee's genome at the top level), as the real engine writes them.
- A store created with ``granularity="sublayer"`` (and ``attention_drops``) gets a sub-block run:
  genomes of units (``core/units.py``: 2 i attention, 2 i + 1 MLP of layer i), paths as ``kept``,
  the granularity in run_started, ``params_per_unit`` in the meta and result.json's sub-block keys.

result.json comes from the engine's own builder, its pick's ``speed`` made up (the fake has no
model to time; ``measure_speed=False``: null, "not measured").

Fitness is a made-up but structured function of the genome (some layers hurt a lot, most a
little), so the best genomes, memo hits and per-generation statistics look like a real search.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gaprune_tui.core import events, pareto, units
from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.stats import binomial_stderr
from gaprune_tui.core.store import (
    BASELINE_GENERATION,
    ControlAction,
    Evaluation,
    Generation,
    RunState,
    RunStore,
)

TASKS = ("hellaswag_offline", "openbookqa_offline")
METRIC = "acc_norm"
# The fake scores tasks with the method's default fitness, whatever the config says.
KIND = "squared_mean"
BASE_SCORES = {"hellaswag_offline": 0.44, "openbookqa_offline": 0.36}
# SmolLM2-135M: 30 layers of 3,540,096 parameters each, 134,515,008 in all (tied embeddings).
PARAMS_PER_LAYER = 3_540_096
N_PARAMS_30 = 134_515_008
# Its sub-blocks: attention (q, k, v, o and the input norm) and MLP (gate, up, down and its norm).
PARAMS_PER_ATTENTION = 885_312
PARAMS_PER_MLP = PARAMS_PER_LAYER - PARAMS_PER_ATTENTION
# The made-up speed of the unpruned model (tokens/s on 2 CPU threads), for result.json's ``speed``.
BASE_SPEED = {"prompt_tokens_per_s": 812.4, "generate_tokens_per_s": 41.7}


class _Tokens:
    """A stand-in for the calibration's token tensor: its size."""

    def __init__(self, n: int) -> None:
        self.n = n

    def numel(self) -> int:
        return self.n


def fitness_of(scores: dict[str, dict[str, Any]]) -> float:
    """The method's default fitness: mean of squared task scores."""
    return fitness_kinds.fitness_of(scores, "squared_mean")


def dead_pid() -> int:
    """A pid that belonged to a process which has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def confirmed_genome(
    label: str,
    role: str,
    rank: int,
    dropped: list[int],
    confirmed: dict[str, dict[str, Any]],
    holdout: dict[str, dict[str, Any]],
    **more: Any,
) -> events.GenomeConfirmed:
    """A ``GenomeConfirmed`` whose confirmed and held-out numbers are the mean fitness (and its
    standard error) of the ``confirmed`` and ``holdout`` scores, as the engine derives them;
    ``more``: its other fields (the search's fitness, seconds)."""
    return events.GenomeConfirmed(
        label=label,
        role=role,
        rank=rank,
        dropped=dropped,
        confirmed=fitness_kinds.fitness_of(confirmed, "mean"),
        confirmed_stderr=fitness_kinds.fitness_stderr(confirmed, "mean"),
        confirmed_scores=confirmed,
        holdout=fitness_kinds.fitness_of(holdout, "mean") if holdout else None,
        holdout_stderr=fitness_kinds.fitness_stderr(holdout, "mean") if holdout else None,
        holdout_scores=holdout,
        **more,
    )


def fake_store(*, run_id: str | None = None, **config: Any) -> RunStore:
    """Create a run folder whose config matches what a default ``FakeEngine`` writes: its
    generations, population, prune, protect and seed, limit 20 and the squared_mean fitness the
    fake scores with. ``config``: RunConfig fields that override these or add more, e.g.
    finalists, confirm_limit, holdout_tasks."""
    searched = {f.name: f.default for f in dataclasses.fields(FakeEngine) if f.name in _SHARED}
    run_config = RunConfig(**{**searched, "limit": 20, "fitness": KIND, **config})
    return RunStore.create(run_config, run_id=run_id)


# The fake's parameters that are RunConfig fields too, so that ``fake_store`` writes their defaults.
_SHARED = ("generations", "population", "prune", "protect", "seed")


@dataclass(eq=False)
class FakeEngine:
    """Writes one engine event per ``step()`` into a real store. See the module docstring."""

    store: RunStore
    _: KW_ONLY
    generations: int = 3
    population: int = 8
    n_layers: int = 30
    prune: int = 4
    protect: int = 2
    seed: int = 0
    finished: bool = True
    model: str = "demo"
    seconds_per_eval: float = 2.5
    # faithful: everything the real engine writes (scores with stderr and n, the baselines, the
    # confirmation). Off, the search alone, as the UI tests and snapshots were written against;
    # result.json has the real engine's keys either way.
    faithful: bool = False
    # result.json's ``speed``: made-up timings, or null (the engine did not measure them).
    measure_speed: bool = True

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        config = self.store.config()
        # Sub-blocks (``granularity = "sublayer"``): genomes are units, two per layer.
        self.granularity = config.granularity
        self.attention_drops = config.attention_drops
        self.space = units.GenomeSpace(
            self.n_layers, self.protect, self.granularity, self.attention_drops
        )
        self.n_units = self.space.n_units
        # Per-unit damage per task: a few critical layers, most cheap to drop; an attention
        # sub-block costs less than an MLP one.
        sublayer = self.granularity == "sublayer"
        scale = [
            (0.4 if u % 2 == units.ATTENTION else 0.7) if sublayer else 1.0
            for u in range(self.n_units)
        ]
        self._damage = {task: [self._draw_damage(f) for f in scale] for task in TASKS}
        self.limit = config.limit or 20
        self.finalists = config.finalists
        self.confirm_limit = config.confirm_limit or 100
        self.holdout = config.holdout
        # Pareto: every k in the range at once; ``prune`` is then unused.
        self.ks = config.ks if config.pareto else [self.prune]
        self.pareto = config.pareto
        # A KL (or perplexity) run scores calibration text, as the engine does; any other
        # fitness is the fake's task fitness.
        self.kind = config.fitness if config.fitness in fitness_kinds.CALIBRATION_KINDS else KIND
        self.hv_ref = 0.0  # a Pareto run's reference fitness (the initial population's worst)
        # Several workers: WorkerStatus events as engine/backends writes them, round robin.
        self.workers = [
            {"name": f"worker-{i}", "pid": os.getpid(), "evaluations": 0, "seconds": 0.0}
            for i in range(1, config.workers + 1)
        ]
        self.backend = backend_label(config)
        self.references: list[events.ReferenceScored] = []
        self.memo: dict[tuple[int, ...], dict[str, dict[str, Any]]] = {}
        self.paused = False
        self.done = False
        self.events_written = 0
        self._best: tuple[float, list[int]] | None = None  # (fitness, dropped) so far
        self._new_evaluations = self._cache_hits = 0
        self._script: Iterator[None] = self._run()

    # ---- public ------------------------------------------------------------------------------
    def step(self) -> bool:
        """Write the next event (or honour a pending control request). False once done."""
        if self.done:
            return False
        if self._handle_control():
            return not self.done
        if self.paused:
            return True
        try:
            next(self._script)
        except StopIteration:
            self.done = True
            return False
        self.events_written += 1
        return True

    def run(self, max_steps: int | None = None) -> int:
        """Step until done (or ``max_steps``); return the number of steps taken."""
        steps = 0
        while (max_steps is None or steps < max_steps) and self.step():
            steps += 1
        return steps

    def fail(self, error: str = "CUDA out of memory while scoring hellaswag_offline") -> None:
        """End the run the way the engine does when an evaluation raises."""
        self._log("Traceback (most recent call last):")
        self._log(f"RuntimeError: {error}")
        self.store.add_event(events.RunFailed(error=error))
        self.store.set_state(RunState.FAILED, error=error)
        self.done = True

    def crash(self) -> None:
        """The engine process vanished (kill -9, OOM killer): state stays active, pid is dead."""
        self._log("Killed")
        self.store.set_meta(pid=dead_pid())
        self.done = True

    def fit(self, scores: dict[str, dict[str, Any]]) -> float:
        """The run's fitness of ``scores`` (task fitness, or KL: lower is better)."""
        return fitness_kinds.fitness_of(scores, self.kind)

    def scores_of(self, dropped: list[int], items: int | None = None) -> dict[str, dict[str, Any]]:
        """A genome's scores as the search sees them: KL on calibration text for a KL run,
        else the task scores."""
        if self.kind not in fitness_kinds.CALIBRATION_KINDS:
            return self.task_scores(dropped, items)
        # The KL grows with the damage, as the task scores fall; the base model's is 0.
        damage = sum(self._damage[t][i] for t in TASKS for i in dropped)
        kl = round(4 * damage, 4)
        nll = 2.5 + kl
        ppl = math.exp(nll)
        calibration = {"kl": kl, "kl_stderr": round(0.1 * kl, 5), "ppl": ppl}
        calibration.update({"ppl_stderr": 0.02 * ppl, "nll": nll, "tokens": 2032.0})
        # Per-sequence values (16 sequences of 128 tokens), as the engine keeps them for
        # paired comparisons.
        calibration["kl_seq"] = [round(kl * (0.9 + 0.0125 * i), 6) for i in range(16)]
        calibration["nll_seq"] = [round(nll + 0.01 * (i - 8), 6) for i in range(16)]
        return {fitness_kinds.CALIBRATION: calibration}

    def task_scores(
        self, dropped: list[int], items: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per-task scores of a genome (deterministic; rounded like accuracy over 100 items),
        with lm-eval's binomial standard error and the item count, as the engine stores them."""
        n = items or self.limit
        out: dict[str, dict[str, Any]] = {}
        for task in TASKS:
            damage = sum(self._damage[task][i] for i in dropped)
            # Dropping adjacent layers hurts a little more than the sum.
            adjacent = sum(1 for a, b in zip(dropped, dropped[1:], strict=False) if b == a + 1)
            value = round(max(0.18, BASE_SCORES[task] - damage - 0.01 * adjacent), 2)
            out[task] = {METRIC: value}
            if self.faithful:
                out[task].update({f"{METRIC}_stderr": binomial_stderr(value, n), "n": n})
        return out

    # ---- internals ---------------------------------------------------------------------------
    def _draw_damage(self, scale: float) -> float:
        """One unit's damage to a task (a layer run's draws are the same as they always were)."""
        critical = self.rng.random() < 0.15
        damage = self.rng.uniform(0.04, 0.09) if critical else self.rng.uniform(0.002, 0.02)
        return scale * damage

    def _kept(self, dropped: list[int]) -> list[int]:
        """What the engine stores as ``kept``: the genome's path (the kept layers in a layer run)."""
        return units.kept_path(dropped, self.n_layers, self.granularity)

    @property
    def params_per_unit(self) -> list[int]:
        if self.granularity != "sublayer":
            return [PARAMS_PER_LAYER] * self.n_layers
        return [PARAMS_PER_ATTENTION, PARAMS_PER_MLP] * self.n_layers

    def _handle_control(self) -> bool:
        """Honour the oldest pending request, as the engine does between evaluations."""
        pending = self.store.pending_requests()
        if not pending:
            return False
        request = pending[0]
        self.store.mark_handled(request.id)
        if request.action == ControlAction.PAUSE and not self.paused:
            self._set_paused(True)
        elif request.action == ControlAction.UNPAUSE and self.paused:
            self._set_paused(False)
        elif request.action == ControlAction.STOP:
            self.store.add_event(events.RunStopped())
            self.store.set_state(RunState.STOPPED)
            self._log("stopped on request")
            self.done = True
        return True

    def _set_paused(self, paused: bool) -> None:
        """Record a pause or an unpause: event, state and log line (the engine's ``_set_paused``)."""
        self.paused = paused
        self.store.add_event(events.RunPaused() if paused else events.RunResumed())
        self.store.set_state(RunState.PAUSED if paused else RunState.RUNNING)
        self._log("paused on request" if paused else "resumed on request")

    def _log(self, message: str) -> None:
        with open(self.store.log_path, "a", encoding="utf-8") as fh:
            fh.write(message + "\n")

    def _log_event(self, message: str) -> None:
        self._log(message)
        self.store.add_event(events.LogMessage(message=message))

    def _random_genome(self, k: int | None = None) -> list[int]:
        if self.granularity == "sublayer":
            return self.space.draw(k or self.prune, self.rng)
        return sorted(self.rng.sample(range(self.protect, self.n_layers), k or self.prune))

    def _repair(self, genome: list[int]) -> list[int]:
        """Replace duplicates and protected layers with unused allowed ones (the default)."""
        if self.granularity == "sublayer":
            return self.space.repair(genome, self.prune, self.rng)
        seen: set[int] = set()
        out = []
        for gene in genome:
            if gene < self.protect or gene in seen:
                continue
            seen.add(gene)
            out.append(gene)
        free = [i for i in range(self.protect, self.n_layers) if i not in seen]
        while len(out) < self.prune:
            gene = self.rng.choice(free)
            free.remove(gene)
            out.append(gene)
        return sorted(out)

    def _fitness(self, dropped: list[int]) -> float:
        return self.fit(self.scores_of(dropped))

    def _goodness(self, dropped: list[int]) -> float:
        """The fitness oriented so that larger is better."""
        return -fitness_kinds.rank_key(self._fitness(dropped), self.kind)

    def _tournament(self, population: list[list[int]]) -> list[int]:
        group = self.rng.sample(population, min(5, len(population)))
        return list(max(group, key=lambda g: (self._goodness(g), [-x for x in g])))

    def _run(self) -> Iterator[None]:
        """The engine's script, one store write (or a few) per step."""
        yield from self._start()
        base = self.scores_of([])
        self.store.set_meta(base_scores=base, base_fitness=self.fit(base))
        self.store.add_event(
            events.BaseScores(scores=base, fitness=self.fit(base), from_memo=False)
        )
        yield
        if self.faithful:
            yield from self._references()

        # A Pareto run's first population cycles through the range, so every k is on the front.
        population = [
            self._random_genome(self.ks[i % len(self.ks)]) for i in range(self.population)
        ]
        invalid = list(range(len(population)))
        breed = self._pareto_offspring if self.pareto else self._offspring
        for gen in range(self.generations + 1):
            yield from self._generation(gen, population, invalid)
            if gen == self.generations:
                break
            population, invalid = breed(population)
        if not self.finished:
            return
        self._finish(base)
        yield

    def _start(self) -> Iterator[None]:
        store = self.store
        store.set_meta(
            pid=os.getpid(),
            n_layers=self.n_layers,
            n_params=N_PARAMS_30 + PARAMS_PER_LAYER * (self.n_layers - 30),
            params_per_layer=[PARAMS_PER_LAYER] * self.n_layers,
            params_per_unit=self.params_per_unit,
            max_evaluations=self.population * (1 + self.generations),
        )
        store.set_state(RunState.RUNNING)
        store.add_event(
            events.RunStarted(
                model=self.model,
                n_layers=self.n_layers,
                protect=self.protect,
                prune=self.prune,
                population=self.population,
                generations=self.generations,
                tasks=list(TASKS),
                max_evaluations=self.population * (1 + self.generations),
                objective="pareto" if self.pareto else "single",
                prune_range=[self.ks[0], self.ks[-1]] if self.pareto else None,
                fitness=self.kind,
                granularity=self.granularity,
                attention_drops=self.attention_drops,
            )
        )
        self._log(f"loaded {self.model}: {self.n_layers} layers")
        yield
        self._log_event("scoring the base model")
        yield

    def _references(self) -> Iterator[None]:
        """The one-shot baselines the engine scores before the search (ShortGPT, angular
        distance, the last k before the final layer); a Pareto run's at every k of its range
        ("shortgpt k=3")."""
        upl = units.units_per_layer(self.granularity)
        last = (self.n_layers - 1) * upl  # the final layer's first unit
        first = self.protect * upl
        for k in self.ks:
            picks = {
                "shortgpt": (sorted(range(last - k, last)), 0.031),
                "angular": (list(range(first, first + k)), 0.412),
                "last_k": (list(range(last - k, last)), None),
            }
            for name, (dropped, signal) in picks.items():
                if self.granularity == "sublayer":  # as many attention units as the run takes
                    dropped = self.space.repair(dropped, k, self.rng)
                scores = self.scores_of(dropped)
                event = events.ReferenceScored(
                    name=f"{name} k={k}" if self.pareto else name,
                    dropped=dropped,
                    fitness=self.fit(scores),
                    scores=scores,
                    signal=signal,
                )
                self.store.add_event(event)
                # As the engine does: the pick is ranked with the search's genomes (generation -1).
                kept = self._kept(dropped)
                self.store.add_evaluation(
                    Evaluation(
                        BASELINE_GENERATION, dropped, kept, event.fitness, scores, 0.0, False
                    ),
                    event=False,
                )
                self.references.append(event)
                yield

    def _generation(
        self, gen: int, population: list[list[int]], invalid: list[int]
    ) -> Iterator[None]:
        """Score the genomes without a fitness (a repeat within the batch once), then close."""
        store = self.store
        evaluated = from_memo = 0
        gen_seconds = 0.0
        done_here: set[tuple[int, ...]] = set()
        if gen == 0 and len(self.workers) > 1:
            for w in self.workers:  # each worker has loaded the model
                store.add_event(self._worker_status(w, "idle"))
        for index, i in enumerate(invalid):
            dropped = population[i]
            if tuple(dropped) in done_here:
                continue  # like the engine: a genome repeated within a batch is done once
            done_here.add(tuple(dropped))
            kept = self._kept(dropped)
            store.add_event(
                events.EvaluationStarted(generation=gen, index=index, dropped=dropped, kept=kept)
            )
            hit = tuple(dropped) in self.memo
            seconds = 0.0 if hit else round(self.seconds_per_eval + 0.1 * (index % 3), 2)
            worker = None
            if len(self.workers) > 1 and not hit:  # memo hits are never sent to a worker
                worker = self.workers[self._new_evaluations % len(self.workers)]
                store.add_event(self._worker_status(worker, "busy", dropped=dropped))
            yield
            if worker is not None:
                worker["evaluations"] += 1
                worker["seconds"] += seconds
                store.add_event(self._worker_status(worker, "idle", scored=dropped))
            self._evaluate(gen, dropped, kept, hit, seconds)
            gen_seconds += seconds
            evaluated += 1
            from_memo += int(hit)
            yield
        fits = [self._fitness(g) for g in population]
        best = self._best
        assert best is not None
        generation = Generation(
            gen=gen,
            evaluated=evaluated - from_memo,
            from_memo=from_memo,
            min=min(fits),
            mean=sum(fits) / len(fits),
            max=max(fits),
            best_dropped=best[1],
            best_fitness=best[0],
            seconds=round(gen_seconds, 2),
            population=[list(g) for g in population],
        )
        store.add_generation(generation)
        event = generation.event()
        if self.pareto:
            front = self.front()
            event.front = pareto.front_to_dicts(front)
            if gen == 0:
                self.hv_ref = pareto.reference_quality(fits, self.kind)
            event.hypervolume = pareto.hypervolume(front, self.kind, self.hv_ref, self.ks[0] - 1)
        store.add_event(event)
        store.set_meta(best_fitness=best[0], best_dropped=best[1])
        self._log(f"generation {gen}: best {best[0]:.4f} dropping {best[1]}")
        yield

    def _worker_status(
        self,
        w: dict[str, Any],
        state: str,
        dropped: list[int] | None = None,
        scored: list[int] | None = None,
    ) -> events.WorkerStatus:
        """One worker's status as ``engine/backends/pool.py`` reports it."""
        return events.WorkerStatus(
            name=w["name"],
            device="cpu",
            state=state,
            dropped=dropped,
            scored=scored,
            evaluations=w["evaluations"],
            seconds=round(w["seconds"], 3),
            backend=self.backend,
            pid=w["pid"],
        )

    def _evaluate(
        self, gen: int, dropped: list[int], kept: list[int], hit: bool, seconds: float
    ) -> None:
        """Score one genome (from the memo on a repeat) and store it as the engine does."""
        scores = self.memo.get(tuple(dropped)) or self.scores_of(dropped)
        self.memo[tuple(dropped)] = scores
        self._cache_hits += int(hit)
        self._new_evaluations += int(not hit)
        fitness = self.fit(scores)
        self.store.add_evaluation(
            Evaluation(gen, dropped, kept, fitness, scores, seconds, from_memo=hit)
        )
        if self._best is None or fitness_kinds.better(fitness, self._best[0], self.kind):
            self._best = (fitness, dropped)

    def front(self) -> list[pareto.FrontPoint]:
        """A Pareto run's front over every genome scored so far (the memo, in evaluation order)."""
        scored = [(list(g), self.fit(s)) for g, s in self.memo.items()]
        return pareto.per_k_best(scored, self.kind, self.ks)

    def _confirm(self, base: dict[str, dict[str, Any]]) -> list[events.GenomeConfirmed]:
        """Confirmation as the engine writes it: the base model, the top finalists (a Pareto
        run's: one front member per k) and the baselines re-scored on more items and on the
        held-out tasks."""
        cands = [("base model", "base", [], self.fit(base), 0)]
        if self.pareto:
            # As the engine: one front member per k, the baselines not re-scored.
            for p in self.front():
                cands.append((f"k={p.k}", "finalist", p.dropped, p.fitness, p.k))
        else:
            for i, e in enumerate(self.store.best_evaluations(self.finalists), 1):
                cands.append((f"finalist {i}", "finalist", e.dropped, e.fitness, i))
            cands += [(r.name, "baseline", r.dropped, r.fitness, 0) for r in self.references]
        self.store.add_event(
            events.ConfirmationStarted(
                genomes=len(cands),
                confirm_limit=self.confirm_limit,
                tasks=list(TASKS),
                holdout_tasks=self.holdout,
                offsets={t: self.limit for t in TASKS},
            )
        )
        out = []
        for label, role, dropped, fitness, rank in cands:
            confirmed = self.task_scores(dropped, self.confirm_limit)
            holdout = {
                task: {**next(iter(confirmed.values())), "n": self.confirm_limit}
                for task in self.holdout
            }
            event = confirmed_genome(
                label,
                role,
                rank,
                dropped,
                confirmed,
                holdout,
                fitness=fitness,
                fitness_stderr=fitness_kinds.fitness_stderr(self.scores_of(dropped), self.kind),
                seconds=round(self.seconds_per_eval * 3, 2),
            )
            self.store.add_event(event)
            out.append(event)
        return out

    def _finish(self, base: dict[str, dict[str, Any]]) -> None:
        """result.json through the engine's own builder (``engine/result.py``, which imports no
        torch), fed a stand-in for the loaded model: the fake cannot drift from its fields."""
        from gaprune_tui.engine.result import build_result

        store = self.store
        confirmations = self._confirm(base) if self.faithful else []
        config = store.config()
        n_params = N_PARAMS_30 + PARAMS_PER_LAYER * (self.n_layers - 30)
        # One count per genome unit (per layer in a layer run): what ``params_removed`` sums.
        per_unit = self.params_per_unit
        setup = SimpleNamespace(
            config=config,
            loaded=SimpleNamespace(
                name=self.model,
                source=Path("/models") / self.model,
                n_layers=self.n_layers,
                dtype="float32",
                dtype_reason="float32: the fake engine (no model)",
                device=SimpleNamespace(type="cpu"),
                model=SimpleNamespace(parameters=lambda: [SimpleNamespace(numel=lambda: n_params)]),
            ),
            taskset=SimpleNamespace(
                tasks=[
                    SimpleNamespace(name=t, metric=METRIC, num_fewshot=0, limit=self.limit)
                    for t in TASKS
                ]
            ),
            calibration=SimpleNamespace(
                spec="offline",
                description="BoolQ passages and SciQ support paragraphs (validation, from the end)",
                input_ids=_Tokens(16 * 128),
            ),
        )
        base_event = events.BaseScores(scores=base, fitness=self.fit(base))
        result = build_result(
            store, setup, base_event, self.references, confirmations, per_unit, 0.0
        )  # type: ignore[arg-type]  # the stand-in has what build_result reads
        result["speed"] = self._speed(result)
        store.write_result(result)
        store.set_state(RunState.FINISHED)
        store.add_event(events.RunFinished(result=result))
        self._log("search finished")

    def _speed(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """result.json's ``speed`` of the pick, made up (the fake has no model to time) in the
        engine's shape: faster the more parameters the pick removes; None with
        ``measure_speed=False``, as when the engine could not measure it."""
        if not self.measure_speed:
            return None
        share = result["params_removed"] / max(1, result["params_total"])
        base = dict(BASE_SPEED)
        pruned = {
            "prompt_tokens_per_s": round(base["prompt_tokens_per_s"] / (1 - 0.9 * share), 1),
            "generate_tokens_per_s": round(base["generate_tokens_per_s"] / (1 - 0.7 * share), 1),
        }
        return {
            "device": "cpu",
            "threads": 2,
            "prompt_tokens": 128,
            "new_tokens": 8,
            "repeats": 3,
            "base": base,
            "pruned": pruned,
            "prompt_speedup": round(pruned["prompt_tokens_per_s"] / base["prompt_tokens_per_s"], 3),
            "generate_speedup": round(
                pruned["generate_tokens_per_s"] / base["generate_tokens_per_s"], 3
            ),
        }

    def _pareto_offspring(self, population: list[list[int]]) -> tuple[list[list[int]], list[int]]:
        """A stand-in for NSGA-II's variation: each slot takes the best of three genomes of its
        own size (so every k keeps improving), then swaps one dropped layer for a kept one, or
        drops or restores one layer within the range."""
        low, high = self.ks[0], self.ks[-1]
        free = self.space.droppable
        offspring, changed = [], []
        for i, genome in enumerate(population):
            same = [g for g in population if len(g) == len(genome)]
            child = list(max(self.rng.sample(same, min(3, len(same))), key=self._goodness))
            if self.rng.random() < 0.7:
                kept = [x for x in free if x not in child]
                child[self.rng.randrange(len(child))] = self.rng.choice(kept)
            elif len(child) < high and self.rng.random() < 0.5:
                child.append(self.rng.choice([x for x in free if x not in child]))
            elif len(child) > low:
                child.remove(self.rng.choice(child))
            child = sorted(child)
            offspring.append(child)
            if child != genome:
                changed.append(i)
        return offspring, changed

    def _offspring(self, population: list[list[int]]) -> tuple[list[list[int]], list[int]]:
        """eaSimple's varAnd: select, one-point crossover, uniform-int mutation, repair."""
        offspring = [self._tournament(population) for _ in population]
        changed = [False] * len(offspring)
        for i in range(1, len(offspring), 2):
            if self.rng.random() < 0.5:
                cut = self.rng.randrange(1, self.prune) if self.prune > 1 else 0
                a, b = offspring[i - 1], offspring[i]
                offspring[i - 1], offspring[i] = a[:cut] + b[cut:], b[:cut] + a[cut:]
                changed[i - 1] = changed[i] = True
        for i, genome in enumerate(offspring):
            if self.rng.random() < 0.5:
                for j in range(len(genome)):
                    if self.rng.random() < 1 / self.prune:
                        genome[j] = self.rng.randrange(0, self.n_units)
                changed[i] = True
        offspring = [self._repair(g) if c else g for g, c in zip(offspring, changed, strict=True)]
        return offspring, [i for i, c in enumerate(changed) if c]


def populate(store: RunStore, **options: Any) -> FakeEngine:
    """Write a whole search into ``store``; ``options`` are ``FakeEngine``'s (with
    ``finished=False`` it stays running: no ending; ``faithful`` as there)."""
    engine = FakeEngine(store, **options)
    engine.run()
    return engine


def history_runs(*, failed: bool = True) -> dict[str, RunStore]:
    """One run per state the History screen treats differently (finished, running, crashed,
    stopped, and with ``failed`` a failed one), with fixed ids in this order."""
    finished = fake_store(run_id="20260101-000001-aaaa")
    populate(finished)
    running = fake_store(run_id="20260101-000002-bbbb")
    populate(running, finished=False)  # pid = this test process: alive
    crashed = fake_store(run_id="20260101-000003-cccc")
    engine = FakeEngine(crashed)
    engine.run(max_steps=12)
    engine.crash()
    stopped = fake_store(run_id="20260101-000004-dddd")
    populate(stopped, generations=1)
    stopped.set_state(RunState.STOPPED)
    runs = {"finished": finished, "running": running, "crashed": crashed, "stopped": stopped}
    if failed:
        runs["failed"] = fake_store(run_id="20260101-000005-eeee")
        engine = FakeEngine(runs["failed"])
        engine.run(max_steps=5)
        engine.fail()
    return runs


def write_log(store: RunStore, lines: list[str]) -> Path:
    """Append raw lines to the run's engine.log (for log-tail tests)."""
    with open(store.log_path, "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)
    return store.log_path
