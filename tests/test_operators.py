"""mut_swap: validity, k kept, determinism and the distribution of swap counts over many seeds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gaprune_tui.engine.operators import mut_swap, swap_count_weights
from gaprune_tui.engine.search import is_valid


def test_weights_halve_per_swap() -> None:
    assert swap_count_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert swap_count_weights(1) == [1.0]
    with pytest.raises(ValueError, match="max_swaps"):
        swap_count_weights(0)


@pytest.mark.parametrize(
    ("n_layers", "protect", "k"), [(30, 2, 8), (16, 0, 5), (6, 2, 3), (6, 2, 1)]
)
def test_children_are_valid_and_keep_k(n_layers: int, protect: int, k: int) -> None:
    for seed in range(500):
        rng = random.Random(seed)
        parent = sorted(rng.sample(range(protect, n_layers), k))
        child = mut_swap(parent, n_layers, protect, rng)
        assert is_valid(child, n_layers, protect, k), (seed, parent, child)
        assert child == sorted(child)
        moved = len(set(child) - set(parent))
        assert 1 <= moved <= min(3, k, n_layers - protect - k)


def test_swap_count_distribution() -> None:
    """Over many seeds the number of moved layers follows 4/7, 2/7, 1/7."""
    counts: Counter[int] = Counter()
    trials = 7000
    parent = [3, 7, 11, 19, 25]
    for seed in range(trials):
        child = mut_swap(parent, 30, 2, random.Random(seed))
        counts[len(set(child) - set(parent))] += 1
    assert set(counts) == {1, 2, 3}
    for swaps, expected in zip((1, 2, 3), swap_count_weights(3), strict=True):
        # binomial stderr at 7000 trials is at most 0.006: 4 stderr tolerance
        assert counts[swaps] / trials == pytest.approx(expected, abs=0.025)


def test_caps_when_few_layers_to_swap() -> None:
    # one kept droppable layer: every child is one swap away
    for seed in range(50):
        child = mut_swap([2, 3, 4, 5], 7, 2, random.Random(seed))
        assert len(child) == 4 and len(set(child) - {2, 3, 4, 5}) == 1 and 6 in child
    # max_swaps=1 always moves exactly one layer
    for seed in range(50):
        child = mut_swap([2, 9], 12, 2, random.Random(seed), max_swaps=1)
        assert len(set(child) - {2, 9}) == 1
    # nothing to swap with: the genome comes back unchanged
    assert mut_swap([2, 3, 4], 5, 2, random.Random(0)) == [2, 3, 4]
    assert mut_swap([], 5, 2, random.Random(0)) == []


def test_deterministic_under_rng() -> None:
    runs = []
    for _ in range(2):
        rng = random.Random(42)
        genome = [4, 8, 15, 16, 23]
        trail = []
        for _ in range(100):
            genome = mut_swap(genome, 30, 2, rng)
            trail.append(genome)
        runs.append(trail)
    assert runs[0] == runs[1]
    assert len({tuple(g) for g in runs[0]}) > 50


def test_rejects_invalid_genomes() -> None:
    with pytest.raises(ValueError, match=r"distinct layers in \[2, 10\)"):
        mut_swap([1, 5], 10, 2, random.Random(0))
    with pytest.raises(ValueError, match="distinct"):
        mut_swap([5, 5], 10, 2, random.Random(0))
    with pytest.raises(ValueError, match="distinct"):
        mut_swap([10], 10, 2, random.Random(0))
