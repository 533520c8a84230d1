"""Count-preserving mutation for fixed-k layer-drop genomes (EvoPress, Sieberling et al. 2025).

``mutUniformInt`` plus repair redraws each gene independently, so one mutation can move several
dropped layers at once and needs a repair pass to undo repeats. EvoPress's mutation instead swaps a
dropped layer with a kept droppable one, a few times: the child stays valid by construction, keeps
exactly k dropped layers and is usually one small step from its parent, which is what lets a
selection on a low-noise fitness (KL) climb steadily.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["mut_swap", "swap_count_weights"]


def swap_count_weights(max_swaps: int) -> list[float]:
    """P(s swaps) for s = 1..max_swaps, proportional to 1/2^s: fewer swaps more likely."""
    if max_swaps < 1:
        raise ValueError(f"max_swaps must be at least 1, got {max_swaps}")
    raw = [0.5**s for s in range(1, max_swaps + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def mut_swap(
    genome: Sequence[int],
    n_layers: int,
    protect: int,
    rng: random.Random,
    max_swaps: int = 3,
) -> list[int]:
    """Swap 1..``max_swaps`` dropped layers with kept droppable ones; return the sorted child.

    The number of swaps s is drawn with P(s) proportional to 1/2^s and capped by the number of
    dropped and of kept droppable layers, so a genome that drops every droppable layer but one
    still mutates by one swap. Every draw comes from ``rng`` over sorted lists, so a seeded run
    repeats exactly. ``genome`` must be valid (k distinct layers in [protect, n_layers)).
    """
    dropped = sorted(set(genome))
    if len(dropped) != len(genome) or any(not protect <= g < n_layers for g in dropped):
        raise ValueError(
            f"mut_swap needs distinct layers in [{protect}, {n_layers}), got {list(genome)}"
        )
    drop_set = set(dropped)
    kept = [i for i in range(protect, n_layers) if i not in drop_set]
    cap = min(max_swaps, len(dropped), len(kept))
    if cap == 0:  # nothing dropped, or every droppable layer dropped: no swap keeps k
        return dropped
    weights = swap_count_weights(max_swaps)[:cap]
    swaps = rng.choices(range(1, cap + 1), weights=weights)[0]
    out = rng.sample(dropped, swaps)
    into = rng.sample(kept, swaps)
    child = (drop_set - set(out)) | set(into)
    return sorted(child)
