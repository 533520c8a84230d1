"""Fitness kinds: what a genome's number means, which way is better, and its standard error.

Two families:

* task fitness (``squared_mean``, the original method's mean of squared task scores, and
  ``mean``): lm-eval task scores on a sample of items, higher is better;
* calibration fitness (``kl``, mean per-token KL(base || pruned) of next-token distributions, and
  ``ppl``, perplexity of the pruned model): on calibration text, lower is better. Their values live
  in a genome's scores under the pseudo-task ``CALIBRATION``, next to their standard errors.

The engine, the store, the screens, the CLI and the model card all rank and judge through this
module, so "best" cannot mean one thing in one place and another elsewhere. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from gaprune_tui.core import stats

TASK_KINDS = ("squared_mean", "mean")
CALIBRATION_KINDS = ("kl", "ppl")
FITNESS_KINDS = TASK_KINDS + CALIBRATION_KINDS
# The pseudo-task under which a genome's KL and perplexity are stored.
CALIBRATION = "calibration"

Scores = Mapping[str, Mapping[str, float | None]]
T = TypeVar("T")

_LABELS = {
    "squared_mean": "mean of squared task scores",
    "mean": "mean task score",
    "kl": "KL(base || pruned) per token",
    "ppl": "perplexity",
}


def check_kind(kind: str) -> str:
    if kind not in FITNESS_KINDS:
        raise ValueError(f"unknown fitness {kind!r}: use one of {', '.join(FITNESS_KINDS)}")
    return kind


def higher_is_better(kind: str) -> bool:
    """Task fitness climbs; KL and perplexity fall."""
    return check_kind(kind) in TASK_KINDS


def is_calibration(kind: str) -> bool:
    return check_kind(kind) in CALIBRATION_KINDS


def label(kind: str) -> str:
    """How a screen names the kind, with its direction: "perplexity (lower is better)"."""
    direction = "higher" if higher_is_better(kind) else "lower"
    return f"{_LABELS[kind]} ({direction} is better)"


def task_kind(kind: str) -> str:
    """The task fitness used to confirm finalists: the run's own, or the plain mean for KL/ppl."""
    return kind if kind in TASK_KINDS else "mean"


def fitness_of(scores: Scores, kind: str) -> float:
    """A genome's fitness from its scores: ``{task: {metric: value, metric_stderr: se, n: ...}}``.

    Task kinds read each task's first key (its metric); calibration kinds read ``CALIBRATION``.
    """
    check_kind(kind)
    if kind in CALIBRATION_KINDS:
        value = scores.get(CALIBRATION, {}).get(kind)
        if value is None:
            raise ValueError(f"these scores have no {kind}: they were not measured on calibration")
        return float(value)
    values = [stats.task_score(m)[0] for t, m in scores.items() if t != CALIBRATION]
    if not values:
        return 0.0
    if kind == "squared_mean":
        return sum(v * v for v in values) / len(values)
    return sum(values) / len(values)


def fitness_stderr(scores: Scores, kind: str) -> float | None:
    """The standard error of ``fitness_of(scores, kind)``; ``None`` where it is not known."""
    check_kind(kind)
    if kind in CALIBRATION_KINDS:
        value = scores.get(CALIBRATION, {}).get(f"{kind}_stderr")
        return None if value is None else float(value)
    tasks = {t: m for t, m in scores.items() if t != CALIBRATION}
    return stats.fitness_stderr(tasks, kind) if tasks else None


def better(a: float, b: float, kind: str) -> bool:
    """Whether fitness ``a`` is strictly better than ``b`` for this kind."""
    return a > b if higher_is_better(kind) else a < b


def rank_key(fitness: float, kind: str) -> float:
    """Sort key that puts the best first in an ascending sort."""
    return -fitness if higher_is_better(kind) else fitness


def verdict(
    value: float, stderr: float | None, base: float, base_stderr: float | None, kind: str
) -> str:
    """ "better", "worse" or "within noise" against the base model (two standard errors of the
    difference); "no stderr" when either side lacks one, so nothing unmeasured reads as a gain."""
    if stderr is None or base_stderr is None:
        return "no stderr"
    return stats.compare(
        (value, stderr), (base, base_stderr), higher_is_better=higher_is_better(kind)
    ).outcome


def paired_samples(scores: Scores, kind: str) -> list[float] | None:
    """The per-sequence values a calibration fitness is the mean of (KL; NLL for perplexity,
    whose order it shares), or None (task fitness, or scores from before they were kept)."""
    if check_kind(kind) not in CALIBRATION_KINDS:
        return None
    values = scores.get(CALIBRATION, {}).get("kl_seq" if kind == "kl" else "nll_seq")
    return [float(v) for v in values] if isinstance(values, list) else None


def genome_verdict(
    value: float, scores: Scores, other: float, other_scores: Scores, kind: str
) -> str:
    """Two genomes of one run compared on its fitness: paired over the calibration sequences
    both were scored on when the scores carry them (``stats.paired_compare``), else as
    independent estimates (``verdict``)."""
    mine, theirs = paired_samples(scores, kind), paired_samples(other_scores, kind)
    if mine is not None and theirs is not None and len(mine) == len(theirs) > 1:
        return stats.paired_compare(mine, theirs, higher_is_better(kind)).outcome
    return verdict(
        value, fitness_stderr(scores, kind), other, fitness_stderr(other_scores, kind), kind
    )


def confirmed_order(items: Sequence[T], role: str = "finalist") -> list[T]:
    """Confirmations (``GenomeConfirmed``-like: ``role``, ``confirmed``, ``rank``) of one role,
    best confirmed task score first (always higher-is-better: confirmation scores tasks);
    those without a confirmed score last."""
    chosen = [c for c in items if getattr(c, "role", None) == role]
    return sorted(
        chosen,
        # Ties keep the search's order (its rank), so equal confirmed scores change nothing.
        key=lambda c: (c.confirmed is None, -(c.confirmed or 0.0), c.rank),  # type: ignore[attr-defined]
    )


def pick_order(
    search_ranked: Sequence[Sequence[int]], confirmations: Sequence[T]
) -> list[list[int]]:
    """The order a user picks genomes from (Results rows, ``export --rank N``): the confirmed
    finalists by confirmed score, then the rest of the search's ranking."""
    first = [
        list(c.dropped)  # type: ignore[attr-defined]
        for c in confirmed_order(confirmations)
        if c.confirmed is not None  # type: ignore[attr-defined]
    ]
    return first + [list(d) for d in search_ranked if list(d) not in first]


def short_label(kind: str) -> str:
    """A narrow column or line label: "fitness", "KL ↓", "ppl ↓"."""
    return {"kl": "KL ↓", "ppl": "ppl ↓"}.get(check_kind(kind), "fitness")
