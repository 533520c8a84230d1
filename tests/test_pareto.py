"""The Pareto objective: the front's math on hand-made points, variation that stays in the range,
and NSGA-II runs (determinism, resume from a checkpoint) with a pure objective standing in for a
model. A real engine run on a tiny model is in tests/test_pareto_cli.py."""

from __future__ import annotations

import random

import pytest

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


def test_knee_is_the_bend_of_the_front() -> None:
    mk = pareto.FrontPoint
    # KL climbs slowly to k=4, then steeply: the knee is k=4.
    front = [mk(2, [], 0.05), mk(3, [], 0.07), mk(4, [], 0.10), mk(5, [], 0.50), mk(6, [], 1.2)]
    knee = pareto.knee(front, "kl")
    assert knee is not None and knee.k == 4
    # One or two members: the largest k; nothing non-dominated: none.
    assert pareto.knee(front[:2], "kl").k == 3  # type: ignore[union-attr]
    assert pareto.knee([], "kl") is None


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
