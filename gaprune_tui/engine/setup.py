"""A run's setup: what the engine, its worker processes and Ray actors load once from a config.

``build_scoring`` loads the model, the tasks and the calibration text and builds the scorers;
``Setup`` is what ``Worker.setup`` keeps for the search; ``configure_logging`` and ``set_threads``
are the process settings they share. It sits below ``worker.py`` (the engine's main loop),
``backends/`` and ``result.py``, which all import it, so the engine's imports have no circle
(an import-linter contract in pyproject.toml keeps it so).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from gaprune_tui.core import preflight
from gaprune_tui.core.store import Memo

if TYPE_CHECKING:
    from gaprune_tui.core.config import RunConfig
    from gaprune_tui.engine.calibration import Calibration
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.model import LoadedModel
    from gaprune_tui.engine.search import SearchState
    from gaprune_tui.engine.tasks import TaskSet

log = logging.getLogger(__name__)


def set_threads() -> int:
    """Use every core we may run on (2 threads were 1.8x faster than 1 here); GAPRUNE_THREADS wins."""
    import torch

    wanted = os.environ.get("GAPRUNE_THREADS")
    n = int(wanted) if wanted else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@dataclass
class Scoring:
    """The model, tasks and scorers a run's config builds: the engine's, and each worker's of a
    several-worker backend (``engine/backends``), which must score exactly as the engine would."""

    config: RunConfig
    loaded: LoadedModel
    taskset: TaskSet
    calibration: Calibration
    lm: Any
    kl: Any

    def evaluator(self, memo: Memo) -> Evaluator:
        from gaprune_tui.engine.evaluator import Evaluator

        return Evaluator(self.loaded, self.taskset, self.config, memo, lm=self.lm, kl=self.kl)


def build_scoring(
    config: RunConfig, should_stop: Any = None, *, fitness_only: bool = False
) -> Scoring:
    """Load the model, the tasks and the calibration text of ``config`` and build its scorers
    (the KL scorer computes the base model's distributions once). ``fitness_only`` (a worker of
    ``engine/backends``) loads only what the search's fitness reads: the tasks or the
    calibration text, not both (the engine needs both: baselines and confirmation)."""
    from gaprune_tui.core.fitness import is_calibration
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.model import cuda_count, load_model
    from gaprune_tui.engine.tasks import build_tasks

    if not fitness_only:
        # What the CLI and the Setup screen checked before creating the run, with torch's count.
        preflight.check_run(config, cuda_count=cuda_count())
    loaded = load_model(
        config.model,
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
    )
    config.check_layers(loaded.n_layers, loaded.family)
    calibration_fitness = is_calibration(config.fitness)
    taskset: Any = None
    if not (fitness_only and calibration_fitness):
        log.info("building tasks %s", ", ".join(t.name for t in config.tasks))
        taskset = build_tasks(config)
    calibration: Any = None
    if calibration_fitness or not fitness_only:
        calibration = load_calibration(
            config.calibration, loaded.tokenizer, config.calibration_tokens
        )
    lm = Evaluator.make_lm(loaded, config, should_stop)
    kl = kl_scorer(config, loaded, calibration, lm, should_stop)
    return Scoring(config, loaded, taskset, calibration, lm, kl)


def kl_scorer(
    config: RunConfig, loaded: LoadedModel, calibration: Calibration, lm: Any, should_stop: Any
) -> Any:
    """The KL/perplexity scorer of a calibration-fitness run (None for task fitness): the base
    model's distributions are computed once here, sharing the task scorer's prefix cache when it
    is the fast scorer."""
    from gaprune_tui.core.fitness import is_calibration

    if not is_calibration(config.fitness):
        return None
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.scoring import FastLM

    fast = lm if isinstance(lm, FastLM) else None
    base = BaseDistributions.compute(loaded, calibration, lm=fast)
    return KLScorer(loaded, calibration, base, lm=fast, should_stop=should_stop)


@dataclass
class Setup:
    """What ``Worker.setup`` loaded once and the search uses throughout."""

    config: RunConfig
    loaded: LoadedModel
    taskset: TaskSet
    evaluator: Evaluator
    state: SearchState | None
    memo: Memo
    calibration: Calibration
    # The task scorer (FastLM or HFLM) shared by the search's and the confirmation's evaluators.
    lm: Any = None
    # Where the search's genomes are scored (engine/backends): in this process, or on workers.
    backend: Any = None


@dataclass
class ModelSize:
    """Parameter counts of the base model: the whole, each decoder layer, and each unit a genome
    can drop (the layers, or in a sub-block run each layer's attention then its MLP)."""

    total: int
    per_layer: list[int]
    per_unit: list[int]


def configure_logging(fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Log at INFO with ``fmt`` to ``stream`` (None: Python's default format, stderr), with the
    libraries' chatter quieted: the same for the engine, its worker processes and Ray actors."""
    logging.basicConfig(
        level=logging.INFO, format=fmt or logging.BASIC_FORMAT, stream=stream, force=True
    )
    # lm-eval logs and draws progress bars on every evaluate() call: one genome would flood the log.
    for noisy in ("lm_eval", "lm-eval", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
