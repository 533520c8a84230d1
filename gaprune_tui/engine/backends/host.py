"""The scoring half of a worker: built from the run's config, it scores and returns, no more.

A worker process (``local.py``) or a Ray actor (``ray_actors.py``) holds one ``ScorerHost``: the
base model loaded once and kept resident, the run's tasks or calibration text, and its own
prefix cache. It never reads or writes the memo or the run store (the driver is their one writer)
and draws no random numbers the search could see (``Evaluator.score`` restores the global RNG).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from gaprune_tui.core.config import RunConfig

log = logging.getLogger(__name__)
Scores = dict[str, dict[str, Any]]


class _NoMemo:
    """A worker's evaluator has no memo: only the driver may look up or record scores."""

    def get(self, context: str, kept: list[int]) -> None:
        raise RuntimeError("a worker never reads the memo: the driver looks genomes up")

    def put(self, *args: Any) -> None:
        raise RuntimeError("a worker never writes the memo: the driver records scores")


class ScorerHost:
    """Scores genomes exactly as the engine process would, on ``threads`` torch threads."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        import torch

        from gaprune_tui.engine.setup import build_scoring

        torch.set_num_threads(max(1, threads))
        self.config = RunConfig.from_dict(config).validate()
        self.threads = torch.get_num_threads()
        start = time.perf_counter()
        scoring = build_scoring(self.config, fitness_only=True)
        self.evaluator = scoring.evaluator(_NoMemo())  # type: ignore[arg-type]
        self.device = str(scoring.loaded.device)
        log.info(
            "worker %d ready on %s with %d threads in %.1f s",
            os.getpid(),
            self.device,
            self.threads,
            time.perf_counter() - start,
        )

    def plan(self, paths: list[list[int]]) -> None:
        """The kept-layer paths this worker expects next: its scorer shares their prefixes."""
        target = self.evaluator.kl if self.evaluator.kl is not None else self.evaluator.lm
        plan = getattr(target, "plan", None)
        if plan is not None:
            plan(paths)

    def score(self, dropped: list[int], limit: int | None) -> tuple[Scores, float]:
        return self.evaluator.score(self.evaluator.kept_of(dropped), limit)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.device, "threads": self.threads}


def exit_with_parent(parent: int) -> None:
    """End this process when the driver is gone (killed with -9 it cannot tell its workers):
    a watcher thread polls the parent's pid."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
