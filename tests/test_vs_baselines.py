"""Issue 19: a search that never recommends worse than what the run knows.

Greedy removal equals a hand-written greedy over every candidate (real KL on a tiny model);
EvoPress keeps k, is deterministic per seed, never reports a screened fitness as a full one and
resumes from its checkpoint; memo keys keep calibration subsets apart; and end to end, the
recommended genome (single objective and every Pareto k) is never worse on the fitness than any
baseline the run scored, and a run whose search finds nothing better says so.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli
from search_events import finished, generations, run_search
from tiny_models import build_sharp
from tui_wait import wait_until

from gaprune_tui.core import events
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.events import ReferenceScored, SearchFinished
from gaprune_tui.core.store import BASELINE_GENERATION, Evaluation, Memo, RunStore
from gaprune_tui.engine.evopress import EvoPressSearch
from gaprune_tui.engine.greedy import greedy_evaluations, greedy_path
from gaprune_tui.engine.result import budget, finalists, headline, vs_best_baseline
from gaprune_tui.engine.search import Outcome, SearchState, is_screened, make_search

N = 14
PROTECT = 2


# ---- a deterministic KL-like objective (lower is better) ----------------------------------------
def _weights(seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.1, 2.0) for _ in range(N)]


WEIGHTS = _weights()


def kl_like(dropped: list[int], limit: int | None = None) -> Outcome:
    """A pure function of the genome: a per-layer cost plus a pair interaction. A screened call
    (``limit``) is optimistic by 0.5, so a leak of a screened value into "best" would show."""
    value = sum(WEIGHTS[i] for i in dropped) + 0.3 * sum(
        1 for a in dropped for b in dropped if b == a + 1
    )
    fidelity = "full" if limit is None else f"tokens:{limit}"
    if limit is not None:
        value -= 0.5
    scores = {"calibration": {"kl": value, "kl_stderr": 0.01, "ppl": 1.0, "ppl_stderr": 0.0}}
    return Outcome(scores, value, 0.0, False, fidelity)


def evo_config(**kw: Any) -> RunConfig:
    fields: dict[str, Any] = dict(
        prune=4, protect=PROTECT, population=6, generations=6, seed=5, fitness="kl",
        algorithm="evopress", offspring=8, survivors=2, selection_tokens=512,
        calibration_tokens=2048,
    )  # fmt: skip
    fields.update(kw)
    return RunConfig(**fields).validate()


def test_make_search_picks_the_algorithm() -> None:
    assert isinstance(make_search(evo_config(), N, kl_like), EvoPressSearch)
    assert type(make_search(evo_config(algorithm="ga"), N, kl_like)).__name__ == "Search"
    pareto = evo_config(objective="pareto", prune_range=[2, 4])
    assert pareto.search_algorithm == "nsga2"
    assert not isinstance(make_search(pareto, N, kl_like), EvoPressSearch)


def test_evopress_keeps_k_and_is_deterministic_per_seed() -> None:
    seeds = [[2, 3, 4, 5], [10, 11, 12, 13]]
    a = run_search(make_search(evo_config(), N, kl_like, seeds=seeds))
    b = run_search(make_search(evo_config(), N, kl_like, seeds=seeds))
    c = run_search(make_search(evo_config(seed=6), N, kl_like, seeds=seeds))
    assert [e.dropped for e in finished(a)] == [e.dropped for e in finished(b)]
    assert [e.dropped for e in finished(a)] != [e.dropped for e in finished(c)]
    for e in finished(a):
        assert len(e.dropped) == 4 and len(set(e.dropped)) == 4
        assert all(PROTECT <= i < N for i in e.dropped)
    # 6 generations after generation 0, each: 8 distinct children screened, the best 2 in full.
    gens = generations(a)
    assert [g.generation for g in gens] == list(range(7))
    for g in gens[1:]:
        evs = [e for e in finished(a) if e.generation == g.generation]
        screened = [e for e in evs if is_screened(e.fidelity)]
        full = [e for e in evs if e.fidelity == "full"]
        assert len(screened) == 8 and len({tuple(e.dropped) for e in screened}) == 8
        # The full evaluations are the two best screened children (ties: smaller genome).
        ranked = sorted(screened, key=lambda e: (e.fitness, e.dropped))
        assert sorted(e.dropped for e in full) == sorted(e.dropped for e in ranked[:2])


def test_evopress_parent_is_elitist_and_starts_from_the_best_seed() -> None:
    best_seed = [3, 5, 7, 9]
    seeds = [best_seed, [10, 11, 12, 13]]
    evs = run_search(make_search(evo_config(generations=8), N, kl_like, seeds=seeds))
    gens = generations(evs)
    full0 = [e for e in finished(evs) if e.generation == 0 and e.fidelity == "full"]
    start = min(full0, key=lambda e: (e.fitness, e.dropped))
    assert gens[0].population[0] == start.dropped
    previous = start.fitness
    for g in gens:
        parent = g.population[0]
        assert kl_like(parent).fitness == g.best_fitness <= previous + 1e-12
        previous = g.best_fitness


def test_screened_fitness_is_never_reported_as_full() -> None:
    evs = run_search(make_search(evo_config(), N, kl_like, seeds=[[2, 3, 4, 5]]))
    for g in generations(evs):
        # The best and every member of the reported population hold their full value.
        assert g.best_fitness == kl_like(g.best_dropped).fitness
        assert g.population[0] == g.best_dropped
        for dropped in g.population:
            assert kl_like(dropped).fitness in (g.min, g.max) or g.min <= kl_like(dropped).fitness
    summary = next(e for e in evs if isinstance(e, SearchFinished))
    for member in summary.hall_of_fame:
        assert member["fitness"] == kl_like(member["dropped"]).fitness
    screened_values = {e.fitness for e in finished(evs) if is_screened(e.fidelity)}
    assert not screened_values & {m["fitness"] for m in summary.hall_of_fame}


def test_evopress_resumes_from_a_checkpoint_to_the_same_result() -> None:
    config = evo_config(generations=5)
    whole = run_search(make_search(config, N, kl_like, seeds=[[2, 3, 4, 5]]))
    # Stop after generation 2 (as a kill -9 after its checkpoint would), resume from it.
    first = make_search(config, N, kl_like, seeds=[[2, 3, 4, 5]])
    checkpoint = None
    for event in first.run():
        if isinstance(event, events.GenerationFinished) and event.generation == 2:
            checkpoint = event.checkpoint
            break
    assert checkpoint is not None
    state = SearchState.loads(checkpoint)
    resumed = run_search(make_search(config, N, kl_like, state=state, seeds=[[2, 3, 4, 5]]))
    after = [e.dropped for e in finished(whole) if e.generation > 2]
    assert [e.dropped for e in finished(resumed)] == after
    assert generations(resumed)[-1].best_dropped == generations(whole)[-1].best_dropped


def test_greedy_path_on_a_synthetic_objective_equals_brute_force_steps() -> None:
    path = greedy_path(kl_like, N, PROTECT, 5, "kl")
    dropped: list[int] = []
    for k in range(1, 6):
        candidates = [
            sorted([*dropped, layer]) for layer in range(PROTECT, N) if layer not in dropped
        ]
        dropped = min(candidates, key=lambda g: (kl_like(g).fitness, g))
        assert path.genomes[k] == dropped
    assert path.evaluations == greedy_evaluations(N - PROTECT, 5) == 12 + 11 + 10 + 9 + 8


def test_greedy_with_multi_step_selection_scores_only_the_best_candidates_in_full() -> None:
    calls: list[tuple[tuple[int, ...], int | None]] = []

    def counted(dropped: list[int], limit: int | None = None) -> Outcome:
        calls.append((tuple(dropped), limit))
        return kl_like(dropped, limit)

    path = greedy_path(
        counted, N, PROTECT, 3, "kl", screen=512, survivors=2,
        cost_of=lambda o: 0.25 if is_screened(o.fidelity) else 1.0,
    )  # fmt: skip
    dropped: list[int] = []
    for k in range(1, 4):
        candidates = [sorted([*dropped, x]) for x in range(PROTECT, N) if x not in dropped]
        screened = sorted(candidates, key=lambda g: (kl_like(g, 512).fitness, g))[:2]
        dropped = min(screened, key=lambda g: (kl_like(g).fitness, g))
        assert path.genomes[k] == dropped
        # The reported outcome is the full one, never the screened estimate.
        assert path.outcomes[k].fidelity == "full"
        assert path.outcomes[k].fitness == kl_like(dropped).fitness
    full = [c for c in calls if c[1] is None]
    assert len(full) == 3 * 2 and len(calls) - len(full) == 12 + 11 + 10
    assert path.cost == pytest.approx(0.25 * 33 + 6)


def test_paired_verdict_uses_the_per_sequence_differences() -> None:
    from gaprune_tui.core import fitness as fitness_kinds
    from gaprune_tui.core import stats

    # Two genomes on the same 8 sequences: one is 0.1 better on every sequence, but the
    # sequences themselves vary a lot. Unpaired, that is noise; paired, it is clearly better.
    base = [1.0, 3.0, 0.5, 2.5, 1.5, 4.0, 0.8, 2.2]
    better = [v - 0.1 + 0.01 * (i % 2) for i, v in enumerate(base)]

    def scores(values: list[float]) -> dict[str, Any]:
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"calibration": {"kl": mean, "kl_stderr": sd / len(values) ** 0.5, "kl_seq": values}}

    a, b = scores(better), scores(base)
    unpaired = fitness_kinds.verdict(
        a["calibration"]["kl"], a["calibration"]["kl_stderr"],
        b["calibration"]["kl"], b["calibration"]["kl_stderr"], "kl",
    )  # fmt: skip
    assert unpaired == "within noise"
    assert (
        fitness_kinds.genome_verdict(a["calibration"]["kl"], a, b["calibration"]["kl"], b, "kl")
        == "better"
    )
    verdict = stats.paired_compare(better, base, higher_is_better=False)
    assert verdict.diff == pytest.approx(-0.095) and verdict.stderr < 0.01
    # Without per-sequence values (older scores) the comparison falls back to unpaired.
    del a["calibration"]["kl_seq"]
    assert (
        fitness_kinds.genome_verdict(a["calibration"]["kl"], a, b["calibration"]["kl"], b, "kl")
        == "within noise"
    )


@pytest.fixture(scope="module")
def sharp6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer tiny Llama whose weights are scaled up, so dropping layers moves its KL."""
    return build_sharp(tmp_path_factory.mktemp("sharp6") / "llama")


@pytest.fixture(scope="module")
def kl_evaluator(sharp6: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The engine's KL evaluator on the tiny model (its own memo), and its scorer."""
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.tasks import build_tasks

    config = RunConfig(
        model=str(sharp6), tasks=[TaskSpec("hellaswag_offline")], limit=2, prune=2, protect=1,
        fitness="kl", calibration_tokens=512, device="cpu",
    ).validate()  # fmt: skip
    loaded = load_model(config.model, dtype="float32", device="cpu")
    calibration = load_calibration("offline", loaded.tokenizer, 512)
    lm = Evaluator.make_lm(loaded, config)
    kl = KLScorer(loaded, calibration, BaseDistributions.compute(loaded, calibration, lm=lm), lm=lm)
    memo = Memo(tmp_path_factory.mktemp("memo") / "memo.db")
    evaluator = Evaluator(loaded, build_tasks(config), config, memo, lm=lm, kl=kl)
    return evaluator, kl, loaded


def test_greedy_on_a_tiny_model_equals_a_hand_written_greedy(kl_evaluator: Any) -> None:
    evaluator, kl, loaded = kl_evaluator
    n = loaded.n_layers
    path = greedy_path(evaluator, n, 1, 3, "kl", plan=evaluator.plan)
    dropped: list[int] = []
    for k in range(1, 4):
        best = None
        for layer in range(1, n):  # every candidate, scored directly (no memo, no plan)
            if layer in dropped:
                continue
            genome = sorted([*dropped, layer])
            value = kl.score([i for i in range(n) if i not in genome])["kl"]
            if best is None or value < best[0]:
                best = (value, genome)
        assert best is not None
        dropped = best[1]
        assert path.genomes[k] == dropped, k
        assert path.outcomes[k].fitness == pytest.approx(best[0], abs=1e-6)


def test_memo_keys_separate_calibration_subsets(kl_evaluator: Any) -> None:
    evaluator, kl, _ = kl_evaluator
    n_seq = kl.n_sequences
    assert n_seq == 4  # 512 tokens of 128
    full, half, quarter = evaluator.context(None), evaluator.context(256), evaluator.context(128)
    assert len({full, half, quarter}) == 3
    # A subset of every sequence is the full fidelity itself: one key, one fidelity.
    assert evaluator.normal_limit(512) is None and evaluator.normal_limit(4096) is None
    genome = [2, 4]
    a = evaluator(genome, 256)
    b = evaluator(genome, None)
    assert a.fidelity == "tokens:256" and b.fidelity == "full"
    assert (
        a.scores["calibration"]["tokens"] == 2 * 127
        and b.scores["calibration"]["tokens"] == 4 * 127
    )
    assert a.fitness != b.fitness
    again = evaluator(genome, 256)
    assert again.from_memo and again.fitness == a.fitness and again.fidelity == "tokens:256"
    kept = [i for i in range(6) if i not in genome]
    assert evaluator.memo.get(half, kept) is not None and evaluator.memo.get(full, kept) is not None


# ---- the run's own choice ----------------------------------------------------------------------
def _reference(name: str, dropped: list[int], fitness: float, se: float = 0.01) -> ReferenceScored:
    scores = {"calibration": {"kl": fitness, "kl_stderr": se, "ppl": 1.0, "ppl_stderr": 0.0}}
    return ReferenceScored(name=name, dropped=dropped, fitness=fitness, scores=scores)


def _store_with(
    evaluations: list[tuple[list[int], float]], references: list[ReferenceScored]
) -> RunStore:
    config = RunConfig(prune=2, fitness="kl", finalists=5).validate()
    store = RunStore.create(config)
    for dropped, fitness in evaluations:
        scores = {"calibration": {"kl": fitness, "kl_stderr": 0.01}}
        store.add_evaluation(Evaluation(1, dropped, [], fitness, scores, 1.0, False))
    for r in references:
        store.add_evaluation(
            Evaluation(BASELINE_GENERATION, r.dropped, [], r.fitness, r.scores, 1.0, False),
            event=False,
        )
    return store


def test_finalists_stop_at_the_best_baseline() -> None:
    refs = [_reference("shortgpt", [3, 4], 0.50), _reference("last_k", [7, 8], 0.90)]
    store = _store_with([([2, 3], 0.30), ([5, 6], 0.45), ([2, 9], 0.70), ([4, 9], 0.95)], refs)
    chosen = finalists(store, store.config(), refs)
    # The two better genomes and the best baseline itself; nothing worse than it.
    assert [e.dropped for e in chosen] == [[2, 3], [5, 6], [3, 4]]
    # A search that found nothing better: the best baseline is the only finalist.
    store = _store_with([([2, 9], 0.70), ([4, 9], 0.95)], refs)
    assert [e.dropped for e in finalists(store, store.config(), refs)] == [[3, 4]]


def test_verdict_and_headline_against_the_best_baseline() -> None:
    refs = [_reference("shortgpt", [3, 4], 0.50), _reference("angular", [4, 5], 0.60)]
    scores = {"calibration": {"kl": 0.30, "kl_stderr": 0.01}}
    beat = vs_best_baseline([2, 3], 0.30, scores, refs, "kl")
    assert beat["best_baseline"] == "shortgpt" and beat["vs_best_baseline"] == "better"
    line = headline({"fitness": 0.30, "fitness_stderr": 0.01, **beat}, "kl", ["search"])
    assert line.startswith("beats the best baseline, shortgpt, beyond noise")
    close = vs_best_baseline([2, 3], 0.49, {"calibration": {"kl_stderr": 0.02}}, refs, "kl")
    assert close["vs_best_baseline"] == "within noise"
    same = vs_best_baseline([3, 4], 0.50, refs[0].scores, refs, "kl")
    assert same["vs_best_baseline"] == "same genome"
    line = headline({"fitness": 0.5, "fitness_stderr": 0.01, **same}, "kl", ["greedy", "shortgpt"])
    assert line.startswith("the search found nothing better than greedy and shortgpt's pick")
    # No baseline at k = 3: the same keys, empty (result.json keeps one shape).
    assert set(vs_best_baseline([2, 3, 4], 0.3, scores, refs, "kl").values()) == {None}


def test_budget_counts_every_method_in_full_evaluations() -> None:
    config = RunConfig(prune=2, fitness="kl", calibration_tokens=2048).validate()
    store = RunStore.create(config)
    rows = [([2, 3], "full", False), ([2, 4], "tokens:512", False), ([2, 5], "tokens:512", False)]
    rows += [([2, 6], "full", True)]  # from the memo: free
    for dropped, fidelity, memo in rows:
        store.add_evaluation(Evaluation(1, dropped, [], 0.5, {}, 2.0, memo, fidelity))
    store.add_evaluation(
        Evaluation(BASELINE_GENERATION, [3, 4], [], 0.5, {}, 1.0, False), event=False
    )
    refs = [_reference("shortgpt", [3, 4], 0.5), _reference("greedy", [5, 6], 0.4)]
    refs[0].evaluations, refs[1].evaluations, refs[1].seconds = 1, 7, 3.5
    refs[1].cost = 3.25  # greedy with multi-step selection: 5 screened and 2 full
    spent = budget(store, config, refs)
    assert spent["search_evaluations"] == {"full": 1, "tokens:512": 2}
    assert spent["search_cost"] == pytest.approx(1.5)
    assert spent["baseline_evaluations"] == pytest.approx(4.25)
    assert spent["total_cost"] == pytest.approx(5.75)
    assert spent["tokens"] == int(5.75 * 2048)


# ---- end to end, through the CLI and the engine process ----------------------------------------
TASK, HELD_OUT = "hellaswag_offline", "arc_easy_offline"
BASE_ARGS = [
    "--tasks", TASK, "--limit", "4", "--protect", "1", "--fitness", "kl",
    "--calibration-tokens", "512", "--confirm-limit", "8", "--holdout-tasks", HELD_OUT,
]  # fmt: skip


def _refs(store: RunStore) -> list[ReferenceScored]:
    return [e for e in store.events() if isinstance(e, ReferenceScored)]


@pytest.mark.slow
def test_a_weak_search_recommends_the_best_baseline_and_says_so(sharp6: Path) -> None:
    # k = 1 with greedy: greedy tries every genome, so nothing can beat it; a random-start GA with
    # one tiny generation recommends greedy's genome and the result says so.
    proc = cli(
        "run", "--model", str(sharp6), *BASE_ARGS, "--prune", "1", "--algorithm", "ga",
        "--init", "random", "--population", "2", "--generations", "0", "--finalists", "3",
        "--baselines", "shortgpt,last_k,greedy", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    store = RunStore.open(result["run_id"])
    refs = _refs(store)
    assert [r.name for r in refs] == ["shortgpt", "last_k", "greedy"]
    best = min(r.fitness for r in refs)
    assert result["fitness"] == best
    assert result["algorithm"] == "ga" and result["init"] == "random"
    assert result["vs_best_baseline"] == "same genome"
    assert "greedy" in result["pick_source"]
    assert result["headline"].startswith("the search found nothing better than")
    # Greedy's cost is in the budget: 5 candidates at k = 1 (memo hits are free).
    greedy = next(r for r in refs if r.name == "greedy")
    assert 1 <= greedy.evaluations <= 5
    assert result["budget"]["baseline_evaluations"] == sum(r.evaluations for r in refs)
    # Every finalist is at least as good as the best baseline.
    assert all(row["fitness"] <= best for row in result["finalists"])
    show = cli("show", result["run_id"])
    assert show.returncode == 0, show.stderr
    assert "vs the best baseline: the search found nothing better than" in show.stdout
    assert "budget:" in show.stdout


@pytest.mark.slow
def test_recommendation_never_worse_than_a_baseline_single_and_pareto(sharp6: Path) -> None:
    for algorithm in ("evopress", "ga"):
        proc = cli(
            "run", "--model", str(sharp6), *BASE_ARGS, "--prune", "2", "--algorithm", algorithm,
            "--init", "random", "--population", "2", "--generations", "1", "--offspring", "2",
            "--selection-tokens", "256", "--finalists", "2", "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        refs = _refs(RunStore.open(result["run_id"]))
        assert [r.name for r in refs] == ["shortgpt", "angular", "last_k", "greedy"]
        assert all(result["fitness"] <= r.fitness for r in refs), (result["fitness"], refs)
        assert result["algorithm"] == algorithm
    proc = cli(
        "run", "--model", str(sharp6), *BASE_ARGS, "--objective", "pareto", "--prune-range",
        "1:3", "--init", "random", "--population", "4", "--generations", "1", "--finalists",
        "0", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    refs = _refs(RunStore.open(result["run_id"]))
    assert result["algorithm"] == "nsga2"
    assert {len(r.dropped) for r in refs} == {1, 2, 3}
    assert [row["k"] for row in result["front"]] == [1, 2, 3]
    for row in result["front"]:
        at_k = [r.fitness for r in refs if len(r.dropped) == row["k"]]
        assert row["fitness"] <= min(at_k), row
        assert row["vs_best_baseline"] in ("better", "within noise", "same genome")


@pytest.mark.slow
def test_evopress_run_killed_resumes_to_the_same_result(tiny12: Path, tmp_path: Path) -> None:
    import os
    import signal

    # 12 layers, 3 of the last 11 dropped: 165 genomes, so the generations are fresh work and the
    # kill lands inside the search, not after it.
    sharp6 = tiny12
    args = [
        *BASE_ARGS, "--prune", "3", "--population", "3", "--generations", "30", "--offspring",
        "4", "--selection-tokens", "256", "--finalists", "0", "--baselines", "shortgpt,last_k",
    ]  # fmt: skip
    whole_home = tmp_path / "whole"
    env = {"GAPRUNE_HOME": str(whole_home)}
    proc = cli("run", "--model", str(sharp6), *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(proc.stdout)

    start = cli("run", "--model", str(sharp6), *args, "--detach")
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip().splitlines()[-1]
    store = RunStore.open(run_id)

    def mid_generation() -> bool:
        checkpoint = store.last_checkpoint()
        return checkpoint is not None and checkpoint[0] >= 1

    wait_until(mid_generation, "generation 1 to be checkpointed")
    os.kill(store.meta()["pid"], signal.SIGKILL)
    wait_until(lambda: store.display_state() == "crashed", "the run to show as crashed", 30)
    checkpoint = store.last_checkpoint()
    assert checkpoint is not None and checkpoint[0] < 30, "the kill came after the search"
    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    for key in ("dropped_layers", "fitness", "algorithm", "vs_best_baseline"):
        assert result[key] == expected[key], key
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, True]
    assert f"resuming after generation {checkpoint[0]}" in store.log_path.read_text()


def test_known_baselines_count_in_every_best_the_search_announces() -> None:
    # A baseline far better than anything a tiny random GA can find: the hall of fame, each
    # generation's best and the summary name it, whatever the initial population holds.
    import itertools

    best = min(
        (list(g) for g in itertools.combinations(range(PROTECT, N), 4)),
        key=lambda g: (kl_like(g).fitness, g),
    )
    known = [(best, kl_like(best).fitness)]
    config = evo_config(algorithm="ga", init="random", population=2, generations=1)
    evs = run_search(make_search(config, N, kl_like, known=known))
    assert all(g.best_dropped == best for g in generations(evs))
    summary = next(e for e in evs if isinstance(e, SearchFinished))
    assert summary.hall_of_fame[0]["dropped"] == best
    # A Pareto run's archive (its front) starts with the known genomes too.
    pareto = evo_config(objective="pareto", prune_range=[3, 4], population=4, generations=1)
    evs = run_search(make_search(pareto, N, kl_like, known=known))
    front = generations(evs)[-1].front
    assert any(p["dropped"] == best for p in front)
