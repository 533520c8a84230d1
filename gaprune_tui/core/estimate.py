"""What a search will cost on this machine, from past runs of the same model in the run store.

The Setup screen previews it before Start; it lives here, below the screens, because it reads the
store and does arithmetic, neither of which is drawing. Stdlib only.
"""

from __future__ import annotations

import sqlite3
import statistics
from dataclasses import dataclass

from gaprune_tui.core import format as fmt
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.store import RunStore, list_runs


@dataclass(frozen=True)
class TimingSample:
    """Seconds one scored item took in a past run, and the tasks that run used."""

    tasks: frozenset[str]
    seconds_per_item: float


@dataclass(frozen=True)
class CostEstimate:
    """The worst case of a search: its evaluation budget and, once measured, a duration."""

    max_evaluations: int
    seconds: float | None  # None: no measurement of this model with similar tasks yet
    samples: int
    reason: str = ""

    def text(self) -> str:
        """One line for a preview: the budget, then the duration or why there is none."""
        line = f"at most {fmt.plural(self.max_evaluations, 'evaluation')}"
        if self.seconds is None:
            return f"{line}; duration: {self.reason}"
        return (
            f"{line}; estimated ≤ {fmt.duration(self.seconds)} "
            f"(estimate from {fmt.plural(self.samples, 'measured evaluation')} on this machine)"
        )


def items_per_evaluation(config: RunConfig) -> int | None:
    """Items scored per genome (limit x tasks); None when a task has no limit (size unknown here)."""
    total = 0
    for spec in config.tasks:
        limit = config.task_limit(spec)
        if limit is None:
            return None
        total += limit
    return total


def measure_timings(model: str) -> list[TimingSample]:
    """Per-item seconds of every evaluation that was really computed (not memo hits, not the
    screening pass) in stored runs of ``model``. Reads the run store only; runs that cannot be
    read are skipped."""
    samples: list[TimingSample] = []
    for summary in list_runs():
        if summary.model != model:
            continue
        try:
            store = RunStore(summary.path)
        except sqlite3.Error:
            continue
        try:
            config = store.config()
            evaluations = store.evaluations()
        except (GapruneError, sqlite3.Error):
            continue
        finally:
            store.close()
        items = items_per_evaluation(config)
        if not items:
            continue
        names = frozenset(t.name for t in config.tasks)
        samples.extend(
            TimingSample(names, ev.seconds / items)
            for ev in evaluations
            if not ev.from_memo and ev.fidelity == "full" and ev.seconds > 0
        )
    return samples


def estimate_cost(config: RunConfig, samples: list[TimingSample]) -> CostEstimate:
    """Worst-case duration: max evaluations x items per evaluation x median seconds per item,
    measured on runs of the same model that share at least one task with this config."""
    names = {t.name for t in config.tasks}
    similar = [s.seconds_per_item for s in samples if s.tasks & names]
    items = items_per_evaluation(config)
    if not similar:
        return CostEstimate(config.max_evaluations, None, 0, "no measurement yet")
    if items is None:
        return CostEstimate(config.max_evaluations, None, len(similar), "set a limit to estimate")
    per_eval = statistics.median(similar) * items
    return CostEstimate(config.max_evaluations, per_eval * config.max_evaluations, len(similar))
