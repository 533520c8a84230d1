"""Fitness of one genome: memo first, else a layer view of the one base model, scored.

Two sources of a score, one interface (``(dropped, limit) -> Outcome`` for ``Search``):

* task fitness: lm-eval tasks (``TaskSet``) through the scorer (``FastLM`` or ``HFLM``);
* calibration fitness (KL, perplexity): ``KLScorer`` on calibration text, reusing the same
  ``FastLM`` and its prefix cache.

Several evaluators can share one ``FastLM`` (``lm=``): the search's, and the confirmation's on
more items and on held-out tasks, so the base model's cached layer states serve them all.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.fitness import CALIBRATION, fitness_of, task_kind
from gaprune_tui.core.store import Memo
from gaprune_tui.core.units import kept_path
from gaprune_tui.engine.model import LoadedModel
from gaprune_tui.engine.scoring import SCORER_VERSION, make_lm
from gaprune_tui.engine.search import Outcome
from gaprune_tui.engine.tasks import TaskSet

if TYPE_CHECKING:
    from gaprune_tui.engine.kl import KLScorer

Scores = dict[str, dict[str, Any]]


@dataclass(eq=False, repr=False)  # it holds the model: no field-by-field == or repr
class Evaluator:
    """Callable ``(dropped, limit) -> Outcome`` for ``Search``; counts its own work.

    ``kind`` is the fitness computed from the scores (the run's own by default); ``kl`` makes this
    a calibration evaluator (KL and perplexity) instead of a task one.
    """

    loaded: LoadedModel
    taskset: TaskSet
    config: RunConfig
    memo: Memo
    _: KW_ONLY
    should_stop: InitVar[Callable[[], bool] | None] = None
    lm: Any = None  # shared with other evaluators when given; else the run's own scorer
    kl: KLScorer | None = None
    # A task evaluator reports a task fitness, whatever the run searches on (a KL run's
    # confirmation, a bench): the run's kind when it is a task kind, else the plain mean.
    kind: str = ""
    eval_seconds: float = field(default=0.0, init=False)
    evaluations: int = field(default=0, init=False)
    cache_hits: int = field(default=0, init=False)

    def __post_init__(self, should_stop: Callable[[], bool] | None) -> None:
        fitness = self.config.fitness
        self.kind = self.kind or (fitness if self.kl is not None else task_kind(fitness))
        if self.lm is None:
            self.lm = self.make_lm(self.loaded, self.config, should_stop)

    @staticmethod
    def make_lm(loaded: LoadedModel, config: RunConfig, should_stop: Any = None) -> Any:
        """The run's task scorer, to share between evaluators (``lm=``)."""
        return make_lm(
            loaded,
            config.scorer,
            prefix_cache=config.prefix_cache,
            prefix_cache_mb=config.prefix_cache_mb,
            should_stop=should_stop,
        )

    def context(self, limit: int | None = None) -> str:
        """Everything besides the kept layers that decides a score: the memo key's context."""
        key: dict[str, Any] = {
            "model": self.loaded.fingerprint,
            # CPU and GPU kernels round differently: scores from one are not the other's.
            "device": self.loaded.device.type,
        }
        if self.kl is not None:
            key["calibration"] = self.kl.context()
            if limit is not None:
                # The first step of multi-step selection: a subset of the calibration sequences.
                key["sequences"] = self.kl.subset_sequences(limit)
        else:
            key.update(
                tasks=self.taskset.context(),
                scorer=f"{self.config.scorer}:{SCORER_VERSION}",
                screen=limit,
            )
        return json.dumps(key, sort_keys=True)

    def fidelity(self, limit: int | None) -> str:
        """The fidelity an outcome at ``limit`` is reported with: ``full``, ``screen:N`` (N items
        per task) or ``tokens:T`` (T calibration tokens, the subset actually scored)."""
        if limit is None:
            return "full"
        if self.kl is not None:
            seq_len = int(self.kl.calibration.input_ids.shape[1])
            return f"tokens:{self.kl.subset_sequences(limit) * seq_len}"
        return _fidelity(limit)

    def kept_of(self, dropped: list[int]) -> list[int]:
        """The path the scorer runs (``core/units.py``): the kept layers, sub-blocks coded. The
        memo is keyed by it, so a genome of whole layers shares its entry across granularities."""
        return kept_path(dropped, self.loaded.n_layers, self.config.granularity)

    def plan(self, dropped_lists: list[list[int]]) -> None:
        """The genomes about to be evaluated (a generation, in order): lets the scorer evaluate
        them as a tree of layer paths, sharing the layers they agree on."""
        target = self.kl if self.kl is not None else self.lm
        plan = getattr(target, "plan", None)
        if plan is not None:
            plan([self.kept_of(d) for d in dropped_lists])

    def normal_limit(self, limit: int | None) -> int | None:
        """``limit``, or None where it covers everything (a calibration subset of all sequences)."""
        kl = self.kl
        if limit is not None and kl is not None and kl.subset_sequences(limit) >= kl.n_sequences:
            return None
        return limit

    def __call__(self, dropped: list[int], limit: int | None = None) -> Outcome:
        limit = self.normal_limit(limit)
        hit = self.lookup(dropped, limit)
        if hit is not None:
            return hit
        scores, seconds = self.score(self.kept_of(dropped), limit)
        return self.record(dropped, limit, scores, seconds)

    def lookup(self, dropped: list[int], limit: int | None = None) -> Outcome | None:
        """The memo's outcome for this genome, or None: the driver's half of ``__call__`` when
        the scoring runs elsewhere (``engine/backends``), so only the driver reads the memo."""
        limit = self.normal_limit(limit)
        kept = self.kept_of(dropped)
        hit = self.memo.get(self.context(limit), kept)
        if hit is None:
            return None
        scores, seconds = hit
        self.cache_hits += 1
        return Outcome(scores, fitness_of(scores, self.kind), seconds, True, self.fidelity(limit))

    def record(
        self, dropped: list[int], limit: int | None, scores: Scores, seconds: float
    ) -> Outcome:
        """Write fresh scores (computed here or by a worker) to the memo; their outcome. Only the
        driver calls this, so the memo has one writer whatever the backend."""
        limit = self.normal_limit(limit)
        self.memo.put(self.context(limit), self.kept_of(dropped), scores, seconds)
        self.evaluations += 1
        return Outcome(scores, fitness_of(scores, self.kind), seconds, False, self.fidelity(limit))

    def score(self, kept: list[int], limit: int | None = None) -> tuple[Scores, float]:
        """Score a kept-layer set now, bypassing the memo. The global RNG is left untouched, so
        whether a genome came from the memo cannot change anything downstream."""
        rng_state = random.getstate()
        start = time.perf_counter()
        try:
            if self.kl is not None:
                scores: Scores = {CALIBRATION: dict(self.kl.score(kept, limit))}
            else:
                self.loaded.view.apply(kept)
                try:
                    with torch.no_grad():
                        scores = self.taskset.evaluate(self.lm, limit=limit)
                finally:
                    self.loaded.view.restore()
        finally:
            random.setstate(rng_state)
        seconds = time.perf_counter() - start
        self.eval_seconds += seconds
        return scores, seconds


def _fidelity(limit: int | None) -> str:
    return "full" if limit is None else f"screen:{limit}"


def fidelity_cost(fidelity: str, config: RunConfig) -> float:
    """What one fresh evaluation at ``fidelity`` costs in full-fidelity evaluations: the budget
    unit every method is compared in (a screen on N items of a limit-L task set costs N / L, a
    selection step on T of C calibration tokens T / C)."""
    if fidelity == "full":
        return 1.0
    kind, _, amount = fidelity.partition(":")
    if kind == "tokens" and amount.isdigit():
        return min(1.0, int(amount) / config.calibration_tokens)
    if kind == "screen" and amount.isdigit():
        limits = [config.task_limit(t) for t in config.tasks]
        known = [lim for lim in limits if lim]
        return min(1.0, int(amount) / max(known)) if known else 1.0
    return 0.0
