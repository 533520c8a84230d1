"""The quality/compression trade-off of a Pareto run: its front, hypervolume and knee.

A Pareto run (``--objective pareto --prune-range MIN:MAX``) searches genomes of every size in the
range at once (NSGA-II, ``engine/search.py``). Its two objectives are the fitness (task fitness up,
KL and perplexity down) and ``k``, the number of layers dropped (up: more compression). The front
the user reads is one member per k: the best genome evaluated with exactly k dropped layers, and
whether a member with more dropped layers is at least as good (then it is dominated: dropping more
costs nothing, and the smaller genome is no reason to stop there).

Stdlib only: the engine (checkpointed archive, per-generation events), ``result.json``, the CLI and
the screens all read the front through this module, so it is the same front everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gaprune_tui.core import fitness as fitness_kinds

__all__ = [
    "FrontPoint",
    "dominates",
    "front_from_dicts",
    "front_to_dicts",
    "hypervolume",
    "knee",
    "knee_k",
    "non_dominated",
    "per_k_best",
    "reference_quality",
]


@dataclass
class FrontPoint:
    """The best genome found with ``k`` dropped layers; ``dominated`` when a genome that drops
    more layers is at least as good."""

    k: int
    dropped: list[int]
    fitness: float
    dominated: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "dropped": list(self.dropped),
            "fitness": self.fitness,
            "dominated": self.dominated,
        }


def dominates(a: tuple[float, int], b: tuple[float, int], kind: str) -> bool:
    """Whether point ``a`` = (fitness, k) dominates ``b``: no worse on both, better on one."""
    fa, ka = a
    fb, kb = b
    hib = fitness_kinds.higher_is_better(kind)
    no_worse = (fa >= fb if hib else fa <= fb) and ka >= kb
    better = fitness_kinds.better(fa, fb, kind) or ka > kb
    return no_worse and better


def non_dominated(points: Sequence[tuple[float, int]], kind: str) -> list[int]:
    """Indices of the points no other point dominates (equal points keep each other)."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, kind) for j, q in enumerate(points) if j != i)
    ]


def per_k_best(
    genomes: Iterable[tuple[Sequence[int], float]],
    kind: str,
    ks: Iterable[int] | None = None,
) -> list[FrontPoint]:
    """One point per k: the best of the ``(dropped, fitness)`` pairs with that many dropped
    layers (ties keep the first seen, so the order of evaluation decides, deterministically),
    sorted by k and flagged ``dominated`` against the points with more dropped layers. ``ks``
    keeps only those sizes (the run's range)."""
    allowed = set(ks) if ks is not None else None
    best: dict[int, FrontPoint] = {}
    for dropped, fit in genomes:
        k = len(dropped)
        if allowed is not None and k not in allowed:
            continue
        if fit != fit:  # NaN: never a front member
            continue
        held = best.get(k)
        if held is None or fitness_kinds.better(fit, held.fitness, kind):
            best[k] = FrontPoint(k=k, dropped=sorted(dropped), fitness=float(fit))
    front = [best[k] for k in sorted(best)]
    keep = set(non_dominated([(p.fitness, p.k) for p in front], kind))
    for i, point in enumerate(front):
        point.dominated = i not in keep
    return front


def reference_quality(fitnesses: Iterable[float], kind: str) -> float:
    """The hypervolume's reference on the fitness axis: a fixed worst value.

    Task fitness lies in [0, 1], so 0 is the natural worst. KL and perplexity have no upper
    bound: the reference is the worst finite fitness seen (the engine takes the initial
    population's and keeps it in its checkpoint), so hypervolumes of one run compare.
    """
    if fitness_kinds.higher_is_better(kind):
        return 0.0
    finite = [f for f in fitnesses if f == f and f != float("inf")]
    return max(finite) if finite else 0.0


def hypervolume(front: Sequence[FrontPoint], kind: str, ref_quality: float, ref_k: int) -> float:
    """The area the front dominates up to the reference point (``ref_quality``, ``ref_k``), in
    fitness units times layers: it grows when any member improves or a new k is reached.

    With fitness oriented so that larger is better (``gain`` = distance beyond the reference),
    the area is the union of the rectangles [ref_k, k] x [0, gain] of the non-dominated points.
    """
    hib = fitness_kinds.higher_is_better(kind)
    pts = []
    for p in front:
        gain = (p.fitness - ref_quality) if hib else (ref_quality - p.fitness)
        width = p.k - ref_k
        if gain > 0 and width > 0:
            pts.append((width, gain))
    # Sweep from the largest k down: each point adds the gain above the best seen at larger k.
    area = 0.0
    best_gain = 0.0
    for width, gain in sorted(pts, reverse=True):
        if gain > best_gain:
            area += width * (gain - best_gain)
            best_gain = gain
    return area


def knee(front: Sequence[FrontPoint], kind: str) -> FrontPoint | None:
    """The front's knee: the non-dominated point farthest from the straight line between the
    smallest-k and the largest-k members (axes scaled to the front's own range). Past the knee each
    extra dropped layer costs more quality than before it. With one or two members there is no bend:
    the largest k. With no point above the chord (every layer costs less than the one before)
    there is no knee either: the smallest k, the least damage."""
    members = [p for p in front if not p.dominated]
    if not members:
        return None
    if len(members) <= 2:
        return max(members, key=lambda p: p.k)
    members = sorted(members, key=lambda p: p.k)
    hib = fitness_kinds.higher_is_better(kind)
    q = [p.fitness if hib else -p.fitness for p in members]
    ks = [p.k for p in members]
    q_span = (max(q) - min(q)) or 1.0
    k_span = (max(ks) - min(ks)) or 1
    xs = [(k - ks[0]) / k_span for k in ks]
    ys = [(v - min(q)) / q_span for v in q]
    x0, y0, x1, y1 = xs[0], ys[0], xs[-1], ys[-1]
    norm = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 or 1.0

    def distance(i: int) -> float:
        # Above the chord (better than the straight trade-off) counts; below it does not.
        return ((x1 - x0) * (ys[i] - y0) - (y1 - y0) * (xs[i] - x0)) / norm

    best = max(range(len(members)), key=lambda i: (distance(i), ks[i]))
    return members[best] if distance(best) > 0 else members[0]


def front_to_dicts(front: Sequence[FrontPoint]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in front]


def front_from_dicts(items: Iterable[dict[str, Any]]) -> list[FrontPoint]:
    """Points from an event's or result.json's ``front`` list (extra keys kept in ``extra``)."""
    out = []
    for item in items:
        dropped = list(item.get("dropped", item.get("dropped_layers", [])))
        known = {"k", "dropped", "dropped_layers", "fitness", "dominated"}
        out.append(
            FrontPoint(
                k=int(item.get("k", len(dropped))),
                dropped=dropped,
                fitness=float(item["fitness"]),
                dominated=bool(item.get("dominated", False)),
                extra={k: v for k, v in item.items() if k not in known},
            )
        )
    return out


def member_for_k(result: dict[str, Any] | None, k: int, run_id: str = "") -> list[int]:
    """The dropped layers of a finished Pareto run's front member with ``k`` dropped layers
    (``export --k``); an ``ExportError`` naming the k the front has otherwise."""
    from gaprune_tui.core.errors import ExportError

    run = f"run {run_id}" if run_id else "the run"
    if not result:
        raise ExportError(f"{run} has no result.json yet: let it finish, or export with --drop")
    rows = result.get("front")
    if not rows:
        raise ExportError(f"{run} is not a Pareto run: export it without --k (or with --drop)")
    ks = [int(row["k"]) for row in rows]
    for row in rows:
        if int(row["k"]) == k:
            return list(row.get("dropped_layers", row.get("dropped", [])))
    raise ExportError(
        f"{run}'s front has no member with k={k}: use --k {' or '.join(map(str, ks))}"
    )


def knee_k(front: Sequence[FrontPoint], kind: str, recorded: Any = None) -> int | None:
    """The k the screens mark as the knee: the one a finished run recorded (result.json's
    ``knee_k``, the member its top-level genome is), else the knee of the front so far."""
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    point = knee(front, kind)
    return None if point is None else point.k
