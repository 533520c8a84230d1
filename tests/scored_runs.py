"""Real run stores of a tiny model for the export tests: genomes scored once with the real tasks
and scorer (or the real KL scorer), then laid into a ``RunStore`` the way the engine writes them.

Scoring is the slow part (seconds per genome), so a test module scores once in a module-scoped
fixture and builds a fresh store per test from the ``ScoredRun`` it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.store import Evaluation, RunStore

Scores = dict[str, dict[str, Any]]


def tiny_run_config(model: Path, **overrides: Any) -> RunConfig:
    """The small run every export test uses: one bundled task, 6 items, prune 2 on CPU."""
    fields: dict[str, Any] = dict(
        fitness="squared_mean",  # these runs score tasks unless the test asks for KL
        model=str(model),
        tasks=[TaskSpec("hellaswag_offline")],
        limit=6,
        prune=2,
        population=4,
        generations=1,
        device="cpu",
    )
    return RunConfig(**{**fields, **overrides}).validate()


@dataclass
class ScoredRun:
    """Real scores of a few genomes and of the base model, computed once for a run config."""

    config: RunConfig
    genomes: dict[tuple[int, ...], tuple[list[int], Scores, float]]  # dropped: kept, scores, fit
    base: Scores
    # The dtype the model was scored in and why (what the engine records in a run's meta).
    dtype: str = "float32"
    dtype_reason: str = ""

    def store(
        self,
        *,
        base_event: bool = True,
        base_kind: str | None = None,
        fitness_offset: float = 0.0,
    ) -> RunStore:
        """A new run store holding every genome as an evaluation, and (unless ``base_event`` is
        False) the base model's scores with their fitness of ``base_kind`` (default: the run's).
        ``fitness_offset`` stores a fitness that disagrees with the scores, for the checks that
        must notice it."""
        store = RunStore.create(self.config)
        if base_event:
            kind = base_kind or self.config.fitness
            store.add_event(
                "base_scores", scores=self.base, fitness=fitness_kinds.fitness_of(self.base, kind)
            )
        for dropped, (kept, scores, fitness) in self.genomes.items():
            stored = fitness + fitness_offset
            store.add_evaluation(Evaluation(0, list(dropped), kept, stored, scores, 1.0, False))
        return store


def score_tasks(config: RunConfig, genomes: list[list[int]]) -> ScoredRun:
    """Each genome (and the base model) scored on the config's tasks by the real scorer."""
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.tasks import build_tasks

    loaded = load_model(config.model, dtype=config.dtype, device="cpu")
    taskset = build_tasks(config)
    lm = make_lm(loaded, config.scorer)

    def score(kept: list[int]) -> Scores:
        with loaded.view.view(kept), torch.no_grad():
            return taskset.evaluate(lm)

    return _scored(config, loaded, genomes, score)


def score_kl(config: RunConfig, genomes: list[list[int]]) -> ScoredRun:
    """Each genome (and the base model) scored by KL and perplexity on the calibration text."""
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.model import load_model

    loaded = load_model(config.model, dtype=config.dtype, device="cpu")
    calibration = load_calibration(config.calibration, loaded.tokenizer, config.calibration_tokens)
    scorer = KLScorer(loaded, calibration, BaseDistributions.compute(loaded, calibration))

    def score(kept: list[int]) -> Scores:
        return {fitness_kinds.CALIBRATION: scorer.score(kept)}

    return _scored(config, loaded, genomes, score)


def _scored(
    config: RunConfig,
    loaded: Any,
    genomes: list[list[int]],
    score: Callable[[list[int]], Scores],
) -> ScoredRun:
    """Score every genome and the base model (all layers kept) with ``score(kept)``."""
    scored = {}
    n_layers = loaded.n_layers
    for dropped in genomes:
        kept = [i for i in range(n_layers) if i not in dropped]
        scores = score(kept)
        scored[tuple(dropped)] = (kept, scores, fitness_kinds.fitness_of(scores, config.fitness))
    dtype = str(loaded.dtype).removeprefix("torch.")
    return ScoredRun(config, scored, score(list(range(n_layers))), dtype, loaded.dtype_reason)
