"""core/stats.py against hand-computed values and lm-eval's own standard errors."""

from __future__ import annotations

import math
import random

import pytest

from gaprune_tui.core.stats import (
    NOISE_Z,
    binomial_stderr,
    compare,
    diff_stderr,
    fitness_stderr,
    mean_fitness_stderr,
    mean_stderr,
    spearman,
    squared_mean_fitness_stderr,
    task_score,
    within_noise,
)


def test_binomial_stderr_by_hand() -> None:
    # 0.6 over 20 items: sqrt(0.6 * 0.4 / 19)
    assert binomial_stderr(0.6, 20) == pytest.approx(math.sqrt(0.24 / 19))
    assert binomial_stderr(0.0, 10) == 0.0
    assert binomial_stderr(1.0, 10) == 0.0
    assert binomial_stderr(0.5, 2) == pytest.approx(0.5)
    assert binomial_stderr(0.5, 1) is None
    with pytest.raises(ValueError, match="proportion"):
        binomial_stderr(1.5, 10)


@pytest.mark.parametrize("seed", range(5))
def test_binomial_equals_lm_eval_mean_stderr_on_01_samples(seed: int) -> None:
    from lm_eval.api import metrics

    rng = random.Random(seed)
    n = rng.randint(2, 200)
    items = [float(rng.random() < 0.3) for _ in range(n)]
    p = sum(items) / n
    if 0 < p < 1:
        assert binomial_stderr(p, n) == pytest.approx(metrics.mean_stderr(items), rel=1e-12)
    assert mean_stderr(items) == pytest.approx(binomial_stderr(p, n), rel=1e-12, abs=1e-15)


def test_mean_stderr_by_hand() -> None:
    # mean 2.5, sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3, stderr sqrt(5/3 / 4)
    assert mean_stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 12))
    assert mean_stderr([3.0, 3.0]) == 0.0
    assert mean_stderr([1.0]) is None
    assert mean_stderr([]) is None


def test_diff_and_within_noise() -> None:
    assert diff_stderr(0.3, 0.4) == pytest.approx(0.5)
    # |0.6 - 0.5| = 0.1 against 2 * 0.05 = 0.1: on the band edge counts as noise
    assert within_noise(0.6, 0.03, 0.5, 0.04)
    assert not within_noise(0.61, 0.03, 0.5, 0.04)
    assert within_noise(0.61, 0.03, 0.5, 0.04, z=3.0)
    assert NOISE_Z == 2.0


def test_compare_directions() -> None:
    better = compare((0.70, 0.02), (0.50, 0.02), higher_is_better=True)
    assert (better.outcome, better.z) == ("better", 2.0)
    assert better.diff == pytest.approx(0.2)
    assert better.stderr == pytest.approx(math.hypot(0.02, 0.02))
    assert not better.within_noise
    assert compare((0.30, 0.02), (0.50, 0.02), higher_is_better=True).outcome == "worse"
    noise = compare((0.52, 0.02), (0.50, 0.02), higher_is_better=True)
    assert noise.outcome == "within noise" and noise.within_noise
    # KL / perplexity: lower is better
    assert compare((0.1, 0.01), (0.5, 0.01), higher_is_better=False).outcome == "better"
    assert compare((0.9, 0.01), (0.5, 0.01), higher_is_better=False).outcome == "worse"
    assert compare((0.9, 0.01), (0.5, 0.01), False, z=100.0).outcome == "within noise"


def test_spearman_by_hand() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)); ranks y = 2,1,4,3,5 -> d^2 = 1+1+1+1+0 = 4
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # ties: x ranks 1.5, 1.5, 3, 4; y ranks 1, 2, 3, 4 -> Pearson on ranks
    rx, ry = [1.5, 1.5, 3, 4], [1, 2, 3, 4]
    mx, my = 2.5, 2.5
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert spearman([5, 5, 7, 9], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(num / den)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1], [2]) is None
    with pytest.raises(ValueError, match="pairs"):
        spearman([1, 2], [1])


def test_spearman_equals_scipy() -> None:
    from scipy import stats as scipy_stats  # lm-eval's scikit-learn brings scipy

    rng = random.Random(3)
    xs = [rng.randint(0, 5) for _ in range(30)]
    ys = [x + rng.randint(-3, 3) for x in xs]
    assert spearman(xs, ys) == pytest.approx(scipy_stats.spearmanr(xs, ys).statistic)


def test_fitness_stderrs_by_hand() -> None:
    pairs = [(0.5, 0.1), (0.3, 0.2)]
    # squared_mean: sqrt((2*0.5*0.1)^2 + (2*0.3*0.2)^2) / 2 = sqrt(0.01 + 0.0144) / 2
    assert squared_mean_fitness_stderr(pairs) == pytest.approx(math.sqrt(0.0244) / 2)
    # mean: sqrt(0.01 + 0.04) / 2
    assert mean_fitness_stderr(pairs) == pytest.approx(math.sqrt(0.05) / 2)
    assert squared_mean_fitness_stderr([]) == 0.0 and mean_fitness_stderr([]) == 0.0

    scores = {
        "a": {"acc_norm": 0.5, "acc_norm_stderr": 0.1, "n": 20},
        "b": {"acc": 0.3, "acc_stderr": 0.2, "n": 20},
    }
    assert fitness_stderr(scores, "squared_mean") == pytest.approx(math.sqrt(0.0244) / 2)
    assert fitness_stderr(scores, "mean") == pytest.approx(math.sqrt(0.05) / 2)
    assert fitness_stderr({**scores, "c": {"acc": 0.5}}, "mean") is None
    with pytest.raises(ValueError, match="kl"):
        fitness_stderr(scores, "kl")


def test_delta_method_matches_simulation() -> None:
    """The delta-method stderr of mean s^2 is close to the spread of simulated values."""
    rng = random.Random(0)
    truth = [(0.6, 0.05), (0.4, 0.04)]
    draws = []
    for _ in range(20000):
        draws.append(sum(rng.gauss(s, se) ** 2 for s, se in truth) / 2)
    mu = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mu) ** 2 for d in draws) / (len(draws) - 1))
    assert squared_mean_fitness_stderr(truth) == pytest.approx(sd, rel=0.05)


def test_task_score_reads_first_key() -> None:
    assert task_score({"acc_norm": 0.25, "acc_norm_stderr": 0.1, "n": 20}) == (0.25, 0.1)
    assert task_score({"acc": 0.25}) == (0.25, None)
    assert task_score({"mrr": 0.5, "mrr_stderr": None, "n": 1}) == (0.5, None)
    with pytest.raises(ValueError, match="no metric"):
        task_score({})
