"""Greedy layer removal on the run's own fitness (SLEB, Song et al. 2024): a baseline that searches.

Start from the full model; at each step try removing every remaining droppable layer, score each
candidate with the run's evaluator (memo and prefix cache included) and keep the removal that hurts
least. One path gives a genome for every k up to the largest asked, so a Pareto run gets a greedy
candidate at each k of its range from one path.

Cost: step s scores ``droppable - s + 1`` candidates, so reaching k costs
``k * droppable - k * (k - 1) / 2`` evaluations (``greedy_evaluations``): 196 for k = 8 of 28
droppable layers. Candidates already in the memo cost nothing. Ties go to the lexicographically
smaller genome, so the path is a pure function of the fitness values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.engine.search import Outcome

__all__ = ["GreedyPath", "greedy_evaluations", "greedy_path"]


def greedy_evaluations(droppable: int, k: int) -> int:
    """Evaluations a greedy path to ``k`` costs over ``droppable`` layers (none from the memo)."""
    return sum(droppable - step for step in range(k))


@dataclass
class GreedyPath:
    """The greedy genome at each k (``genomes[k]``), its outcome, and what the path cost."""

    genomes: dict[int, list[int]] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    evaluations: int = 0  # fresh evaluations (memo hits are free)
    seconds: float = 0.0  # their scoring time


def greedy_path(
    evaluate: Callable[[list[int], int | None], Outcome],
    n_layers: int,
    protect: int,
    k_max: int,
    kind: str,
    *,
    plan: Callable[[list[list[int]]], None] | None = None,
    between: Callable[[], None] | None = None,
) -> GreedyPath:
    """Drop layers one at a time up to ``k_max``, each step keeping the candidate with the best
    ``kind`` fitness. ``plan`` announces each step's candidates (the prefix cache's tree order);
    ``between`` runs before each evaluation (the engine's pause/stop)."""
    if not 1 <= k_max < n_layers - protect:
        raise ValueError(
            f"greedy removal of {k_max} layers needs 1 <= k < {n_layers - protect} droppable"
        )
    path = GreedyPath()
    dropped: list[int] = []
    for k in range(1, k_max + 1):
        candidates = [
            sorted([*dropped, layer]) for layer in range(protect, n_layers) if layer not in dropped
        ]
        candidates.sort()
        if plan is not None:
            plan(candidates)
        best: tuple[list[int], Outcome] | None = None
        for genome in candidates:
            if between is not None:
                between()
            outcome = evaluate(genome, None)
            if not outcome.from_memo:
                path.evaluations += 1
                path.seconds += outcome.seconds
            # Candidates come in ascending genome order: a tie keeps the earlier (smaller) one.
            if best is None or fitness_kinds.better(outcome.fitness, best[1].fitness, kind):
                best = (genome, outcome)
        assert best is not None
        dropped = best[0]
        path.genomes[k] = list(dropped)
        path.outcomes[k] = best[1]
    return path
