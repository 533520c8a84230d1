"""Standard errors, noise verdicts and rank correlation for scores (stdlib only).

At lm-eval limit 20 a task's accuracy has a standard error near 0.11, so most differences between
genomes are noise: every score carries its standard error, and a genome is only called better or
worse than the base model when the gap exceeds ``z`` standard errors of the difference. The engine,
the UI and the model card all judge noise here, so they cannot disagree. Everything is plain
``math`` on floats; the UI imports it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NOISE_Z",
    "Verdict",
    "binomial_stderr",
    "compare",
    "diff_stderr",
    "fitness_stderr",
    "mean_fitness_stderr",
    "mean_stderr",
    "spearman",
    "squared_mean_fitness_stderr",
    "task_score",
    "within_noise",
]

# Two standard errors: a ~95% band for a normal difference.
NOISE_Z = 2.0

Outcome = Literal["better", "worse", "within noise"]


def binomial_stderr(p: float, n: int) -> float | None:
    """Standard error of an accuracy ``p`` over ``n`` 0/1 items: sqrt(p(1-p)/(n-1)).

    This is lm-eval's ``mean_stderr`` for 0/1 samples (sample standard deviation with Bessel's
    correction over sqrt(n)), so our numbers and lm-eval's agree. ``None`` below two items, where
    lm-eval reports "N/A".
    """
    if n < 2:
        return None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_stderr needs a proportion in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / (n - 1))


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean of ``values`` (sample stddev / sqrt(n)); ``None`` below two."""
    n = len(values)
    if n < 2:
        return None
    mu = math.fsum(values) / n
    variance = math.fsum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


def diff_stderr(se_a: float, se_b: float) -> float:
    """Standard error of ``a - b`` for independent estimates."""
    return math.hypot(se_a, se_b)


def within_noise(a: float, se_a: float, b: float, se_b: float, z: float = NOISE_Z) -> bool:
    """Whether ``a`` and ``b`` differ by no more than ``z`` standard errors of their difference."""
    return abs(a - b) <= z * diff_stderr(se_a, se_b)


@dataclass(frozen=True)
class Verdict:
    """How a genome's score compares with the base model's, and the evidence behind it."""

    outcome: Outcome
    diff: float  # genome - base, in the score's own units
    stderr: float  # standard error of diff
    z: float  # the threshold used, in standard errors

    @property
    def within_noise(self) -> bool:
        return self.outcome == "within noise"


def compare(
    genome: tuple[float, float],
    base: tuple[float, float],
    higher_is_better: bool,
    z: float = NOISE_Z,
) -> Verdict:
    """Judge ``genome`` = (value, stderr) against ``base`` = (value, stderr).

    "better"/"worse" only when the difference exceeds ``z`` standard errors; lower-is-better
    scores (KL, perplexity) pass ``higher_is_better=False``.
    """
    (a, se_a), (b, se_b) = genome, base
    return _verdict(a - b, diff_stderr(se_a, se_b), higher_is_better, z)


def _verdict(diff: float, se: float, higher_is_better: bool, z: float) -> Verdict:
    """ "within noise" unless ``diff`` exceeds ``z`` standard errors, else better or worse."""
    if abs(diff) <= z * se:
        outcome: Outcome = "within noise"
    elif (diff > 0) == higher_is_better:
        outcome = "better"
    else:
        outcome = "worse"
    return Verdict(outcome, diff, se, z)


def paired_compare(
    genome: Sequence[float],
    other: Sequence[float],
    higher_is_better: bool,
    z: float = NOISE_Z,
) -> Verdict:
    """Judge two genomes measured on the same samples (KL per calibration sequence): the
    difference's standard error comes from the per-sample differences, sd(d) / sqrt(n), which
    keeps what the two share (a hard sequence is hard for both) out of the noise."""
    if len(genome) != len(other) or len(genome) < 2:
        raise ValueError("a paired comparison needs the same samples, at least two")
    diffs = [a - b for a, b in zip(genome, other, strict=True)]
    n = len(diffs)
    diff = sum(diffs) / n
    sd = math.sqrt(sum((d - diff) ** 2 for d in diffs) / (n - 1))
    return _verdict(diff, sd / math.sqrt(n), higher_is_better, z)


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for i in order[start : end + 1]:
            ranks[i] = mean_rank
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on ranks, ties averaged); ``None`` when undefined.

    Undefined below two pairs or when either side is constant.
    """
    if len(xs) != len(ys):
        raise ValueError(f"spearman needs pairs: got {len(xs)} and {len(ys)} values")
    n = len(xs)
    if n < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = math.fsum(rx) / n, math.fsum(ry) / n
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = math.fsum((a - mx) ** 2 for a in rx)
    syy = math.fsum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def squared_mean_fitness_stderr(scores: Sequence[tuple[float, float]]) -> float:
    """Delta-method stderr of mean_t s_t^2 over tasks (s_t, se_t): sqrt(sum (2 s_t se_t)^2)/T."""
    if not scores:
        return 0.0
    return math.sqrt(math.fsum((2 * s * se) ** 2 for s, se in scores)) / len(scores)


def mean_fitness_stderr(scores: Sequence[tuple[float, float]]) -> float:
    """Stderr of mean_t s_t over independent tasks (s_t, se_t): sqrt(sum se_t^2)/T."""
    if not scores:
        return 0.0
    return math.sqrt(math.fsum(se * se for _, se in scores)) / len(scores)


def fitness_stderr(scores: Mapping[str, Mapping[str, float | None]], kind: str) -> float | None:
    """Stderr of the task fitness ``kind`` ("squared_mean" or "mean") from ``{task: metrics}``.

    ``None`` when any task lacks a standard error (old memo rows, metrics lm-eval gives none for).
    """
    pairs = [task_score(metrics) for metrics in scores.values()]
    if any(se is None for _, se in pairs):
        return None
    known = [(value, se) for value, se in pairs if se is not None]
    if kind == "squared_mean":
        return squared_mean_fitness_stderr(known)
    if kind == "mean":
        return mean_fitness_stderr(known)
    raise ValueError(f"no standard error for fitness {kind!r}")


def task_score(metrics: Mapping[str, float | None]) -> tuple[float, float | None]:
    """(value, stderr) of one task's result ``{metric: v, f"{metric}_stderr": se, "n": n}``.

    The metric is the first key (``TaskSet.evaluate`` keeps it so); rows from before standard
    errors hold only the metric, and give ``None``.
    """
    if not metrics:
        raise ValueError("a task result holds no metric")
    metric, value = next(iter(metrics.items()))
    if value is None:
        raise ValueError(f"task metric {metric!r} has no value")
    stderr = metrics.get(f"{metric}_stderr")
    return float(value), None if stderr is None else float(stderr)
