"""The Pareto objective: the front's math on hand-made points, variation that stays in the range,
and NSGA-II runs (determinism, resume from a checkpoint) with a pure objective standing in for a
model. A real engine run on a tiny model is in tests/test_pareto_cli.py."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from search_events import generations

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import pareto
from gaprune_tui.core.config import RunConfig, parse_prune_range
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.events import EvaluationFinished, GenerationFinished
from gaprune_tui.engine.operators import cx_sets, mut_resize, repair_range
from gaprune_tui.engine.search import Outcome, Search, SearchState

N = 16
PROTECT = 2


# ---- the front on hand-made points ---------------------------------------------------------------
def test_non_dominated_on_hand_made_points_maximising() -> None:
    # (fitness, k): (0.5, 2) and (0.4, 4) and (0.1, 6) trade off; (0.3, 3) is beaten by (0.4, 4);
    # (0.5, 2) repeated keeps both copies.
    points = [(0.5, 2), (0.3, 3), (0.4, 4), (0.1, 6), (0.5, 2)]
    assert pareto.non_dominated(points, "mean") == [0, 2, 3, 4]


def test_non_dominated_minimising_follows_the_kind() -> None:
    # KL: lower is better. (0.2, 4) beats (0.3, 3) on both; (0.05, 2) and (0.9, 6) trade off.
    points = [(0.05, 2), (0.3, 3), (0.2, 4), (0.9, 6)]
    assert pareto.non_dominated(points, "kl") == [0, 2, 3]
    assert pareto.dominates((0.2, 4), (0.3, 3), "kl")
    assert not pareto.dominates((0.2, 4), (0.2, 4), "kl")


def test_per_k_best_keeps_one_member_per_k_and_flags_the_dominated() -> None:
    genomes = [
        ([2, 3], 0.10),
        ([4, 5], 0.05),  # the best k=2 (KL, lower)
        ([2, 3, 4], 0.30),  # dominated by the k=4 member below
        ([7, 8, 9, 10], 0.20),
        ([2, 3, 4, 5, 6], float("nan")),  # never a member
        ([9], 0.01),  # outside the range
    ]
    front = pareto.per_k_best(genomes, "kl", ks=range(2, 6))
    assert [(p.k, p.dropped, p.fitness, p.dominated) for p in front] == [
        (2, [4, 5], 0.05, False),
        (3, [2, 3, 4], 0.30, True),
        (4, [7, 8, 9, 10], 0.20, False),
    ]


def test_hypervolume_of_hand_made_fronts() -> None:
    mk = pareto.FrontPoint
    # Maximising from reference (0.0, k=1): rectangles [1,2]x0.5 then [1,4]x0.4 -> 0.5*1 wins the
    # band above 0.4 (0.1 * 1) plus 0.4 * 3 = 1.3.
    front = [mk(2, [1, 2], 0.5), mk(4, [1, 2, 3, 4], 0.4)]
    assert pareto.hypervolume(front, "mean", 0.0, 1) == pytest.approx(1.3)
    # A dominated point adds nothing; a point beyond the reference adds nothing.
    worse = front + [mk(3, [1, 2, 3], 0.3), mk(5, [1, 2, 3, 4, 5], -0.1)]
    assert pareto.hypervolume(worse, "mean", 0.0, 1) == pytest.approx(1.3)
    # Minimising: gains are ref - fitness.
    kl = [mk(2, [1, 2], 0.1), mk(3, [1, 2, 3], 0.6)]
    assert pareto.hypervolume(kl, "kl", 1.0, 1) == pytest.approx(0.9 * 1 + 0.4 * 1)
    assert pareto.hypervolume([], "kl", 1.0, 1) == 0.0


def test_hypervolume_grows_when_a_member_improves() -> None:
    mk = pareto.FrontPoint
    before = [mk(2, [1, 2], 0.3), mk(4, [1, 2, 3, 4], 0.6)]
    after = [mk(2, [1, 2], 0.3), mk(4, [5, 6, 7, 8], 0.5)]
    assert pareto.hypervolume(after, "kl", 1.0, 1) > pareto.hypervolume(before, "kl", 1.0, 1)


def brute_knee(points: list[tuple[int, float]], higher_is_better: bool) -> int | None:
    """The README's knee, from (k, fitness) pairs, written out independently of ``pareto``:
    drop the members a larger k matches or beats; with one or two left, the largest k; else,
    axes scaled to [0, 1], the member farthest above the chord from the smallest to the largest
    k (twice the triangle's signed area, as the chord's length is the same for every member;
    ties: the larger k), or the smallest k when none lies above the chord."""
    sign = 1.0 if higher_is_better else -1.0
    kept = sorted(
        (k, sign * f)
        for k, f in points
        if not any(k2 > k and sign * f2 >= sign * f for k2, f2 in points)
    )
    if not kept:
        return None
    if len(kept) <= 2:
        return kept[-1][0]
    k0, k1 = kept[0][0], kept[-1][0]
    lo, hi = min(q for _, q in kept), max(q for _, q in kept)
    scaled = [((k - k0) / (k1 - k0), (q - lo) / ((hi - lo) or 1.0)) for k, q in kept]
    (x0, y0), (x1, y1) = scaled[0], scaled[-1]
    above = [
        ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0), k)
        for (x, y), (k, _) in zip(scaled, kept, strict=True)
    ]
    best = max(above)
    return best[1] if best[0] > 0 else kept[0][0]


KNEE_FRONTS = [
    # KL climbs slowly to k=4, then steeply: the knee is k=4.
    ("kl", [(2, 0.05), (3, 0.07), (4, 0.10), (5, 0.50), (6, 1.2)], 4),
    # Task fitness holds to k=4, then falls: k=4 again, on the other direction.
    ("mean", [(2, 0.50), (3, 0.49), (4, 0.47), (5, 0.30), (6, 0.10)], 4),
    # Every further layer costs less than the one before: no member above the chord, so no
    # bend worth stopping at: the smallest k, the least damage.
    ("kl", [(2, 0.10), (3, 0.50), (4, 0.70), (5, 0.80)], 2),
    ("mean", [(2, 0.60), (3, 0.30), (4, 0.20), (5, 0.15)], 2),
    # A straight line: nothing above it either.
    ("kl", [(2, 0.1), (3, 0.2), (4, 0.3)], 2),
    # k=3 is dominated (k=4 is better): it is no candidate, and the bend is at k=5.
    ("kl", [(2, 0.05), (3, 0.30), (4, 0.08), (5, 0.12), (6, 0.90)], 5),
    # One or two members: the largest k.
    ("kl", [(2, 0.05), (3, 0.07)], 3),
    ("mean", [(4, 0.4)], 4),
]


@pytest.mark.parametrize(("kind", "points", "expected"), KNEE_FRONTS)
def test_knee_is_the_bend_of_the_front(
    kind: str, points: list[tuple[int, float]], expected: int
) -> None:
    front = pareto.per_k_best([(list(range(k)), f) for k, f in points], kind)
    knee = pareto.knee(front, kind)
    assert knee is not None and knee.k == expected
    assert brute_knee(points, kind == "mean") == expected  # the test's own rule agrees


def test_knee_of_no_member_is_none() -> None:
    assert pareto.knee([], "kl") is None
    assert brute_knee([], False) is None


def test_front_round_trips_through_dicts() -> None:
    front = [pareto.FrontPoint(2, [3, 4], 0.1), pareto.FrontPoint(3, [3, 4, 5], 0.2, True)]
    back = pareto.front_from_dicts(pareto.front_to_dicts(front))
    assert back == front
    row = {"k": 2, "dropped_layers": [3, 4], "fitness": 0.1, "confirmed": 0.4}
    (point,) = pareto.front_from_dicts([row])
    assert point.dropped == [3, 4] and point.extra == {"confirmed": 0.4}


# ---- config ----------------------------------------------------------------------------------
def test_config_validates_the_objective_and_range() -> None:
    config = RunConfig(objective="pareto", prune_range="2:5", protect=2).validate()
    assert config.prune_range == [2, 5] and config.ks == [2, 3, 4, 5]
    assert RunConfig().validate().ks == [4]
    assert parse_prune_range("3:7") == [3, 7]
    bad = [
        (dict(objective="pareto"), "needs the sizes to cover"),
        (dict(prune_range=[2, 4]), "needs --objective pareto"),
        (dict(objective="pareto", prune_range="4:2"), "1 <= MIN < MAX"),
        (dict(objective="pareto", prune_range="two"), "is not MIN:MAX"),
        (dict(objective="pareto", prune_range=[0, 3]), "1 <= MIN < MAX"),
        (dict(objective="both"), "objective must be one of"),
        (
            dict(objective="pareto", prune_range=[2, 4], fitness="mean", screen=5),
            "--screen applies to single-objective runs",
        ),
        (dict(objective="pareto", prune_range=[2, 4], invalid="zero"), "--invalid zero"),
    ]
    for fields, message in bad:
        with pytest.raises(ConfigError, match=message):
            RunConfig(**fields).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must stay below the 14 droppable"):
        RunConfig(objective="pareto", prune_range=[2, 14]).validate().check_layers(16)
    RunConfig(objective="pareto", prune_range=[2, 13]).validate().check_layers(16)


def test_config_round_trips_through_toml() -> None:
    config = RunConfig(objective="pareto", prune_range=[2, 6]).validate()
    again = RunConfig.from_dict(__import__("tomllib").loads(config.to_toml())).validate()
    assert again.objective == "pareto" and again.prune_range == [2, 6]


# ---- variation --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_variation_never_leaves_the_range_or_touches_protected_layers(seed: int) -> None:
    rng = random.Random(seed)
    low, high = 2, 6
    pool = range(PROTECT, N)
    for _ in range(300):
        a = sorted(rng.sample(pool, rng.randint(low, high)))
        b = sorted(rng.sample(pool, rng.randint(low, high)))
        one, two = cx_sets(a, b, rng)
        assert len(one) + len(two) == len(a) + len(b)
        assert set(one) | set(two) == set(a) | set(b)
        for child in (one, two):
            assert len(set(child)) == len(child)
            fixed = repair_range(child, N, PROTECT, low, high, rng)
            mutated = mut_resize(fixed, N, PROTECT, low, high, rng)
            for genome in (fixed, mutated):
                assert low <= len(genome) <= high
                assert len(set(genome)) == len(genome)
                assert all(PROTECT <= g < N for g in genome)
                assert genome == sorted(genome)
    # Repair removes protected layers and repeats, then fills up to the range.
    fixed = repair_range([0, 1, 5, 5], N, PROTECT, 3, 4, rng)
    assert len(fixed) == 3 and 5 in fixed and min(fixed) >= PROTECT


def test_mutation_reaches_every_size_in_the_range() -> None:
    rng = random.Random(0)
    genome = [2, 3]
    sizes = set()
    for _ in range(400):
        genome = mut_resize(genome, N, PROTECT, 2, 6, rng)
        sizes.add(len(genome))
    assert sizes == {2, 3, 4, 5, 6}


# ---- NSGA-II runs --------------------------------------------------------------------------------
def kl_like(dropped: list[int], limit: int | None = None) -> Outcome:
    """Lower is better; each dropped layer costs more the earlier it is: a trade-off with k."""
    value = sum(1.0 / (1 + g - PROTECT) for g in dropped) + 0.001 * sum(dropped) / N
    scores = {"calibration": {"kl": value, "kl_stderr": 0.01}}
    return Outcome(scores, value, 0.0, False, "full")


def pcfg(**kw) -> RunConfig:
    base = dict(
        objective="pareto",
        prune_range=[2, 6],
        protect=PROTECT,
        population=10,
        generations=6,
        seed=3,
        fitness="kl",
    )
    base.update(kw)
    return RunConfig(**base).validate()  # type: ignore[arg-type]


def run_all(search: Search) -> list:
    return list(search.run())


def test_pareto_run_covers_the_range_with_a_non_dominated_front() -> None:
    evs = run_all(Search(pcfg(population=12, generations=25), N, kl_like))
    evaluated = [e for e in evs if isinstance(e, EvaluationFinished)]
    assert all(2 <= len(e.dropped) <= 6 for e in evaluated)
    assert all(min(e.dropped) >= PROTECT for e in evaluated)
    last = [e for e in evs if isinstance(e, GenerationFinished)][-1]
    front = pareto.front_from_dicts(last.front)
    assert [p.k for p in front] == [2, 3, 4, 5, 6]
    # The front improves on the initial population at every size, and no member is dominated
    # (this objective's cost rises with k).
    first = pareto.front_from_dicts(next(e for e in evs if isinstance(e, GenerationFinished)).front)
    assert all(p.fitness <= f.fitness for p, f in zip(front, first, strict=True))
    assert sum(p.fitness for p in front) < sum(f.fitness for f in first)
    assert not any(p.dominated for p in front)
    # Each member is the best evaluated genome of its size.
    for p in front:
        same = [e.fitness for e in evaluated if len(e.dropped) == p.k]
        assert p.fitness == min(same)
    volumes = [g.hypervolume for g in evs if isinstance(g, GenerationFinished)]
    assert all(v is not None for v in volumes)
    assert volumes == sorted(volumes)  # the archive only improves
    assert volumes[-1] > volumes[0]


def test_pareto_run_is_deterministic_and_single_runs_are_unchanged() -> None:
    first = run_all(Search(pcfg(), N, kl_like))
    again = run_all(Search(pcfg(), N, kl_like))
    strip = lambda evs: [  # noqa: E731
        (type(e).__name__, getattr(e, "dropped", None), getattr(e, "front", None)) for e in evs
    ]
    assert strip(first) == strip(again)
    # A single-objective run carries no front.
    single = RunConfig(prune=3, protect=2, population=6, generations=1, fitness="kl").validate()
    gens = [e for e in run_all(Search(single, N, kl_like)) if isinstance(e, GenerationFinished)]
    assert all(g.front == [] and g.hypervolume is None for g in gens)


def test_pareto_run_resumes_from_a_checkpoint_to_the_same_front() -> None:
    whole = run_all(Search(pcfg(), N, kl_like))
    gens = [e for e in whole if isinstance(e, GenerationFinished)]
    state = SearchState.loads(gens[2].checkpoint)
    assert state.archive and state.hv_ref is not None
    rest = run_all(Search(pcfg(), N, kl_like, state=state))
    rest_gens = [e for e in rest if isinstance(e, GenerationFinished)]
    assert [g.generation for g in rest_gens] == [3, 4, 5, 6]
    assert rest_gens[-1].front == gens[-1].front
    assert rest_gens[-1].hypervolume == gens[-1].hypervolume
    assert [g.population for g in rest_gens] == [g.population for g in gens[3:]]


def gen0_sizes(evs: list) -> Counter[int]:
    first = next(e for e in evs if isinstance(e, GenerationFinished))
    return Counter(len(g) for g in first.population)


@pytest.mark.parametrize("population", [7, 10, 12])
def test_initial_population_spreads_evenly_over_the_sizes(population: int) -> None:
    evs = run_all(Search(pcfg(population=population, generations=1), N, kl_like))
    sizes = [gen0_sizes(evs)[k] for k in range(2, 7)]
    assert sum(sizes) == population and max(sizes) - min(sizes) <= 1, sizes
    # Seeds come first, as they are; the random genomes after them still spread evenly.
    seeds = [[2, 3], [4, 5], [3, 4, 5, 6, 7, 8]]
    evs = run_all(Search(pcfg(population=population, generations=1), N, kl_like, seeds=seeds))
    counts = gen0_sizes(evs)
    counts.subtract(len(s) for s in seeds)
    rest = [counts[k] for k in range(2, 7)]
    assert sum(rest) == population - len(seeds) and max(rest) - min(rest) <= 1, rest


def task_like(dropped: list[int], limit: int | None = None) -> Outcome:
    """Higher is better (a task fitness in [0, 1]); late layers cost less."""
    value = max(0.0, 0.9 - kl_like(dropped).fitness / 4)
    return Outcome({"t": {"acc": value}}, value, 0.0, False, "full")


def swept_volume(front: list[pareto.FrontPoint], ref: float, ref_k: int, higher: bool) -> float:
    """The hypervolume, swept one unit of k at a time: each strip (k - 1, k] above ``ref_k``
    counts the best gain over the reference among the members dropping k layers or more."""
    out = 0.0
    for k in range(ref_k + 1, max((p.k for p in front), default=ref_k) + 1):
        gains = [p.fitness - ref if higher else ref - p.fitness for p in front if p.k >= k]
        out += max([0.0, *gains])
    return out


@pytest.mark.parametrize(("kind", "objective"), [("kl", kl_like), ("mean", task_like)])
def test_hypervolume_reference_is_the_initial_worst_and_min_k_minus_one(
    kind: str, objective: Any
) -> None:
    """The reference point: the initial population's worst fitness (for task fitness, 0) and
    k = MIN - 1, fixed for the run; every generation's hypervolume is its front's against it."""
    evs = run_all(Search(pcfg(fitness=kind, population=8, generations=4), N, objective))
    initial = [e.fitness for e in evs if isinstance(e, EvaluationFinished) and e.generation == 0]
    ref = 0.0 if kind == "mean" else max(initial)
    gens = [e for e in evs if isinstance(e, GenerationFinished)]
    for g in gens:
        front = pareto.front_from_dicts(g.front)
        expected = swept_volume(front, ref, 2 - 1, kind == "mean")
        assert g.hypervolume == pytest.approx(expected), g.generation
    assert gens[-1].hypervolume > 0


@pytest.mark.parametrize("kind", ["kl", "mean"])
def test_seeded_pareto_run_ends_at_least_as_good_as_each_seed(kind: str) -> None:
    """``--init heuristics``: each seed is in the archive, so the front at its k is at least as
    good. The seeds here are each size's best genome (the last layers), which a short random
    search does not find by itself."""
    objective = kl_like if kind == "kl" else task_like
    seeds = [list(range(N - k, N)) for k in (2, 4, 6)]
    config = pcfg(fitness=kind, population=6, generations=2)
    for seeded, expect_all in ((seeds, True), ([], False)):
        evs = run_all(Search(config, N, objective, seeds=seeded))
        front = {p.k: p for p in pareto.front_from_dicts(generations(evs)[-1].front)}
        reached = [
            front[len(s)].fitness == objective(s).fitness
            or fitness_kinds.better(front[len(s)].fitness, objective(s).fitness, kind)
            for s in seeds
        ]
        assert all(reached) if expect_all else not all(reached), (seeded, reached)
