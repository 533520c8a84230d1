"""Variation for layer-drop genomes: count-preserving swaps (fixed k) and size-changing moves
(a Pareto run, whose genomes may drop any number of layers within a range).

Count-preserving mutation for fixed-k genomes (EvoPress, Sieberling et al. 2025):

``mutUniformInt`` plus repair redraws each gene independently, so one mutation can move several
dropped layers at once and needs a repair pass to undo repeats. EvoPress's mutation instead swaps a
dropped layer with a kept droppable one, a few times: the child stays valid by construction, keeps
exactly k dropped layers and is usually one small step from its parent, which is what lets a
selection on a low-noise fitness (KL) climb steadily.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gaprune_tui.core.units import mut_swap, swap_count_weights

__all__ = ["cx_sets", "mut_resize", "mut_swap", "repair_range", "swap_count_weights"]


def cx_sets(a: Sequence[int], b: Sequence[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """Crossover of two dropped-layer sets of any sizes: both children keep the layers both parents
    drop; each layer only one parent drops goes to one child or the other (a fair coin). The
    children have no repeats by construction and their sizes add up to the parents'."""
    common = sorted(set(a) & set(b))
    differ = sorted(set(a) ^ set(b))
    one, two = list(common), list(common)
    for layer in differ:
        (one if rng.random() < 0.5 else two).append(layer)
    return sorted(one), sorted(two)


def repair_range(
    genome: Sequence[int], n_layers: int, protect: int, low: int, high: int, rng: random.Random
) -> list[int]:
    """The nearest valid genome of a Pareto run: repeats and protected layers removed, then
    random droppable layers added (size below ``low``) or removed (above ``high``); sorted.
    Draws from sorted lists only, so a seeded run repeats exactly."""
    kept = sorted({g for g in genome if protect <= g < n_layers})
    if len(kept) < low:
        pool = [i for i in range(protect, n_layers) if i not in set(kept)]
        kept = sorted(kept + rng.sample(pool, low - len(kept)))
    elif len(kept) > high:
        drop = set(rng.sample(kept, len(kept) - high))
        kept = [g for g in kept if g not in drop]
    return kept


def mut_resize(
    genome: Sequence[int], n_layers: int, protect: int, low: int, high: int, rng: random.Random
) -> list[int]:
    """Mutation of a Pareto run's genome: one of the moves that keep it in the range, chosen
    evenly: drop one more layer, put one back, or swap (``mut_swap``). Changing the size by one
    layer at a time lets the front fill in every k between the ends."""
    dropped = sorted(set(genome))
    moves = ["swap"]
    if len(dropped) < high and len(dropped) < n_layers - protect:
        moves.append("grow")
    if len(dropped) > low:
        moves.append("shrink")
    move = rng.choice(moves)
    if move == "grow":
        pool = [i for i in range(protect, n_layers) if i not in set(dropped)]
        return sorted(dropped + [rng.choice(pool)])
    if move == "shrink":
        out = rng.choice(dropped)
        return [g for g in dropped if g != out]
    return mut_swap(dropped, n_layers, protect, rng)
