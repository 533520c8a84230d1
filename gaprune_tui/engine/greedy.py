"""Greedy layer removal on the run's own fitness (SLEB, Song et al. 2024): a baseline that searches.

Start from the full model; at each step try removing every remaining droppable layer, score each
candidate with the run's evaluator (memo and prefix cache included) and keep the removal that hurts
least. One path gives a genome for every k up to the largest asked, so a Pareto run gets a greedy
candidate at each k of its range from one path.

Cost: step s scores ``droppable - s + 1`` candidates, so reaching k costs
``k * droppable - k * (k - 1) / 2`` evaluations (``greedy_evaluations``): 196 for k = 8 of 28
droppable layers. Candidates already in the memo cost nothing. With multi-step selection
(``screen``) each step scores its candidates on a subset first and only the best few in full:
at 512 of 2,048 calibration tokens, about a quarter of that. Ties go to the lexicographically
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
    evaluations: int = 0  # fresh evaluations (memo hits are free), at any fidelity
    cost: float = 0.0  # the same in full-fidelity evaluations (``cost_of``)
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
    screen: int | None = None,
    survivors: int = 2,
    cost_of: Callable[[Outcome], float] | None = None,
    feasible: Callable[[list[int]], bool] | None = None,
) -> GreedyPath:
    """Drop layers one at a time up to ``k_max``, each step keeping the candidate with the best
    ``kind`` fitness. ``plan`` announces each step's candidates (the prefix cache's tree order);
    ``between`` runs before each evaluation (the engine's pause/stop).

    ``screen`` (a limit: calibration tokens or task items) makes each step a multi-step
    selection like EvoPress's: every candidate is scored at that fidelity, the best
    ``survivors`` in full, and the best full score wins; None scores every candidate in full
    (SLEB's greedy exactly). ``cost_of`` prices a fresh outcome in full evaluations (1 each).
    ``feasible`` keeps only the candidates a run allows (a sub-block run's attention quota);
    ``n_layers`` and ``protect`` count units (``core/units.py``)."""
    if not 1 <= k_max < n_layers - protect:
        raise ValueError(
            f"greedy removal of {k_max} layers needs 1 <= k < {n_layers - protect} droppable"
        )
    path = GreedyPath()
    price = cost_of or (lambda outcome: 1.0)

    def scored(genomes: list[list[int]], limit: int | None) -> list[tuple[list[int], Outcome]]:
        if plan is not None:
            plan(genomes)
        out = []
        for genome in genomes:
            if between is not None:
                between()
            outcome = evaluate(genome, limit)
            if not outcome.from_memo:
                path.evaluations += 1
                path.cost += price(outcome)
                path.seconds += outcome.seconds
            out.append((genome, outcome))
        return out

    def best_of(results: list[tuple[list[int], Outcome]]) -> list[tuple[list[int], Outcome]]:
        # Best fitness first; a tie keeps the smaller genome.
        return sorted(results, key=lambda r: (fitness_kinds.rank_key(r[1].fitness, kind), r[0]))

    dropped: list[int] = []
    for k in range(1, k_max + 1):
        candidates = sorted(
            sorted([*dropped, layer]) for layer in range(protect, n_layers) if layer not in dropped
        )
        if feasible is not None:
            candidates = [c for c in candidates if feasible(c)]
        if screen is None:
            best = best_of(scored(candidates, None))[0]
        else:
            promising = [g for g, _ in best_of(scored(candidates, screen))[:survivors]]
            best = best_of(scored(sorted(promising), None))[0]
        dropped = best[0]
        path.genomes[k] = list(dropped)
        path.outcomes[k] = best[1]
    return path
