"""The GA itself, with a deterministic objective standing in for model scoring.

These tests pin the search mechanics (operators, validity, determinism, checkpoints, screening);
scoring real models is covered by the engine end-to-end tests.
"""

from __future__ import annotations

import random

import pytest
from search_events import finished, generations, run_search

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.events import EvaluationStarted, RunEvent, SearchFinished
from gaprune_tui.engine.search import Outcome, Search, SearchState, fitness_of, is_valid, repair

N = 16


def objective(dropped: list[int], limit: int | None = None) -> Outcome:
    """Prefers dropping late layers; a pure function of the genome."""
    score = sum(dropped) / (len(dropped) * N) if dropped else 0.0
    if limit is not None:
        score *= 0.9
    scores = {"t": {"acc": score}}
    return Outcome(
        scores,
        fitness_of(scores, "squared_mean"),
        0.0,
        False,
        "full" if limit is None else f"screen:{limit}",
    )


def cfg(**kw) -> RunConfig:
    base = dict(prune=3, protect=2, population=8, generations=4, seed=7, fitness="squared_mean")
    base.update(kw)
    return RunConfig(**base).validate()


def genomes(evs: list[RunEvent]) -> list[list[int]]:
    return [e.dropped for e in finished(evs)]


def test_fitness_functions() -> None:
    scores = {"a": {"acc_norm": 0.5}, "b": {"acc": 0.3}}
    assert fitness_of(scores, "squared_mean") == pytest.approx((0.25 + 0.09) / 2)
    assert fitness_of(scores, "mean") == pytest.approx(0.4)
    assert fitness_of({}, "mean") == 0.0


def test_operators_follow_the_method() -> None:
    s = Search(cfg(), N, objective)
    assert s.toolbox.mate.func.__name__ == "cxOnePoint"
    assert s.toolbox.mutate.func.__name__ == "mutUniformInt"
    assert s.toolbox.mutate.keywords == {"low": 0, "up": N - 1, "indpb": 1 / 3}
    assert s.toolbox.select.func.__name__ == "selTournament"
    assert s.toolbox.select.keywords == {"tournsize": 5}


def test_same_seed_same_genomes_and_valid_in_repair_mode() -> None:
    a = run_search(Search(cfg(), N, objective))
    b = run_search(Search(cfg(), N, objective))
    c = run_search(Search(cfg(seed=8), N, objective))
    assert genomes(a) == genomes(b)
    assert genomes(a) != genomes(c)
    assert all(is_valid(g, N, 2, 3) for g in genomes(a))
    gens = generations(a)
    assert [g.generation for g in gens] == [0, 1, 2, 3, 4]
    # The hall of fame's best is the best genome ever evaluated.
    best = max(objective(g).fitness for g in genomes(a))
    assert gens[-1].best_fitness == pytest.approx(best)
    assert all(g.min <= g.mean <= g.max for g in gens)
    assert isinstance(a[-1], SearchFinished) and a[-1].hall_of_fame[0]["fitness"] == pytest.approx(
        best
    )


def test_global_random_use_during_evaluation_does_not_change_the_search() -> None:
    def noisy(dropped: list[int], limit: int | None = None) -> Outcome:
        random.random()  # as lm-eval or a memo miss might
        return objective(dropped, limit)

    assert genomes(run_search(Search(cfg(), N, noisy))) == genomes(
        run_search(Search(cfg(), N, objective))
    )


def test_duplicates_in_a_generation_are_evaluated_once() -> None:
    calls: list[tuple[int, ...]] = []

    def counting(dropped: list[int], limit: int | None = None) -> Outcome:
        calls.append(tuple(dropped))
        return objective(dropped, limit)

    evs = run_search(Search(cfg(generations=6), N, counting))
    per_gen: dict[int, list[tuple[int, ...]]] = {}
    for e in finished(evs):
        per_gen.setdefault(e.generation, []).append(tuple(e.dropped))
    for gen_genomes in per_gen.values():
        assert len(gen_genomes) == len(set(gen_genomes))
    # The objective was asked exactly once for each genome a generation reports, and never for
    # anything else (a duplicate is reported once and costs nothing).
    assert sorted(calls) == sorted(g for gen in per_gen.values() for g in gen)
    assert any(len(gen) < 8 for gen in per_gen.values()), "no duplicates: nothing was tested"


class PlannedObjective:
    """The objective plus a ``plan`` hook, recording what the search announces and then asks."""

    def __init__(self) -> None:
        self.plans: list[list[list[int]]] = []
        self.calls: list[list[int]] = []

    def plan(self, dropped_lists: list[list[int]]) -> None:
        self.plans.append([list(d) for d in dropped_lists])

    def __call__(self, dropped: list[int], limit: int | None = None) -> Outcome:
        self.calls.append(list(dropped))
        return objective(dropped, limit)


def test_each_generation_is_announced_and_evaluated_in_tree_order() -> None:
    planned = PlannedObjective()
    evs = run_search(Search(cfg(), N, planned))
    assert len(planned.plans) == 5  # the initial population and four generations
    calls = iter(planned.calls)
    for announced in planned.plans:
        assert announced == sorted(announced)  # genomes sharing first dropped layers adjacent
        distinct = list(dict.fromkeys(map(tuple, announced)))
        assert [tuple(next(calls)) for _ in distinct] == distinct
    # An evaluator with the hook and one without see the same genomes.
    assert genomes(evs) == genomes(run_search(Search(cfg(), N, objective)))


def test_zero_mode_scores_invalid_offspring_zero_without_evaluating() -> None:
    seen: list[list[int]] = []

    def recording(dropped: list[int], limit: int | None = None) -> Outcome:
        seen.append(dropped)
        return objective(dropped, limit)

    evs = run_search(Search(cfg(invalid="zero", generations=8, prune=4), N, recording))
    invalid = [e for e in finished(evs) if e.fidelity == "invalid"]
    assert invalid, "with seed 7 the original operators produce repeated indices"
    # Invalid: a repeated layer, or a protected one (mutUniformInt draws from [0, n)).
    assert all(e.fitness == 0.0 and not is_valid(e.dropped, N, 2, 4) for e in invalid)
    assert any(min(e.dropped) < 2 and len(set(e.dropped)) == 4 for e in invalid)
    assert all(is_valid(sorted(d), N, 2, 4) for d in seen)
    # Only the valid genomes reached the objective, each reported one once.
    valid = [e.dropped for e in finished(evs) if e.fidelity != "invalid"]
    assert sorted(seen) == sorted(valid)


def test_repair_is_deterministic_and_valid() -> None:
    rng1, rng2 = random.Random(3), random.Random(3)
    broken = [0, 5, 5, 9]
    fixed = repair(broken, N, 2, rng1)
    assert fixed == repair(broken, N, 2, rng2)
    assert is_valid(fixed, N, 2, 4)
    assert {5, 9} <= set(fixed)


def test_resume_from_checkpoint_continues_the_same_sequence() -> None:
    full = run_search(Search(cfg(), N, objective))
    checkpoint = next(e.checkpoint for e in generations(full) if e.generation == 2)
    assert "checkpoint" not in generations(full)[0].to_payload()  # stored apart, never an event
    resumed = run_search(Search(cfg(), N, objective, state=SearchState.loads(checkpoint)))
    after = [e for e in finished(full) if e.generation > 2]
    assert genomes(resumed) == [e.dropped for e in after]
    last_full = generations(full)[-1]
    last_resumed = generations(resumed)[-1]
    assert last_resumed.best_dropped == last_full.best_dropped
    assert last_resumed.population == last_full.population


def test_screening_spends_the_full_limit_only_on_promising_offspring() -> None:
    calls: list[int | None] = []

    def recording(dropped: list[int], limit: int | None = None) -> Outcome:
        calls.append(limit)
        return objective(dropped, limit)

    evs = run_search(Search(cfg(screen=5, generations=5), N, recording))
    fids = {e.fidelity for e in finished(evs)}
    assert "screen:5" in fids and "full" in fids
    screened = calls.count(5)
    full_after_gen0 = sum(1 for e in finished(evs) if e.generation > 0 and e.fidelity == "full")
    started = [e for e in evs if isinstance(e, EvaluationStarted)]
    assert {e.fidelity for e in started} == {None, "screen:5"}
    assert full_after_gen0 < screened
    # Every objective call is one reported evaluation at its fidelity (None: the full limit).
    reported = [
        None if e.fidelity == "full" else int(e.fidelity.split(":")[1]) for e in finished(evs)
    ]
    assert sorted(calls, key=str) == sorted(reported, key=str)


def test_layer_checks() -> None:
    with pytest.raises(ConfigError, match="prune=14 must be below"):
        Search(cfg(prune=14), N, objective)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_a_seeded_run_ends_at_least_as_good_as_its_best_seed(seed: int) -> None:
    """``--init heuristics`` puts the baselines in the initial population; the search's best
    (its hall of fame, what the result ranks) is then at least as good as the best of them.
    The best seed here is the optimum (the last layers), which a short random search misses."""
    seeds = [[2, 3, 4], [N - 3, N - 2, N - 1], [5, 9, 12]]
    best_seed = max(objective(s).fitness for s in seeds)
    config = cfg(population=4, generations=2, seed=seed)
    seeded = run_search(Search(config, N, objective, seeds=seeds))
    (summary,) = [e for e in seeded if isinstance(e, SearchFinished)]
    assert summary.hall_of_fame[0]["fitness"] >= best_seed
    assert max(g.best_fitness for g in generations(seeded)) >= best_seed
    plain = run_search(Search(config, N, objective))
    (summary,) = [e for e in plain if isinstance(e, SearchFinished)]
    assert summary.hall_of_fame[0]["fitness"] < best_seed  # the seed is what got it there
