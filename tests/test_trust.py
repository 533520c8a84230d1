"""Issue 10's engine and core wiring ("trustworthy picks"), with real values.

* config: the new fields validate with one-line errors naming the field, survive a TOML round
  trip, and held-out tasks never overlap the fitness tasks;
* search direction: KL and perplexity are minimised, task fitness maximised, everywhere (DEAP
  weights, the hall of fame, "zero" for invalid genomes); the swap mutation keeps k; seeds start
  generation 0;
* store and follower: "best" follows the run's fitness kind;
* memo keys: a KL evaluator and a task one never share a memo entry, nor two calibration sets;
  KL and perplexity do (one pass computes both).

The search runs against deterministic objectives; the memo-key tests use a real tiny model, a real
lm-eval task and a real SQLite memo.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from search_events import finished, generations, run_search
from tiny_models import build_tiny, build_tokenizer

from gaprune_tui.core.config import DEFAULT_HOLDOUT, RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.events import (
    BaseScores,
    EvaluationFinished,
    GenerationFinished,
    RunEvent,
    RunStarted,
    SearchFinished,
)
from gaprune_tui.core.fitness import CALIBRATION, fitness_of
from gaprune_tui.core.follow import Follower
from gaprune_tui.core.store import Evaluation, Memo, RunStore
from gaprune_tui.engine.search import Outcome, Search, is_valid

N = 16


# ---- 1. config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("calibration", "", "calibration is empty"),
        ("calibration", "   ", "calibration is empty"),
        ("calibration_tokens", 1, "calibration_tokens must be an integer >= 256"),
        # Fewer than two sequences of 128: the engine would refuse it after loading the model.
        ("calibration_tokens", 255, "calibration_tokens must be an integer >= 256 (two sequences"),
        ("calibration_tokens", "2048", "calibration_tokens must be an integer"),
        ("finalists", -1, "finalists must be an integer >= 0"),
        ("finalists", True, "finalists must be an integer"),
        ("confirm_limit", 0, "confirm_limit must be an integer >= 1"),
        ("confirm_limit", 2.5, "confirm_limit must be an integer"),
        ("holdout_tasks", ["arc_easy_offline", ""], "holdout_tasks must be task names"),
        ("holdout_tasks", [3], "holdout_tasks must be task names"),
        ("init", "smart", "init must be one of random, heuristics"),
        ("mutation", "gauss", "mutation must be one of uniform, swap"),
        ("fitness", "kld", "fitness must be one of squared_mean, mean, kl, ppl"),
    ],
)
def test_each_new_field_is_validated(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig(**{field: value}).validate()
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_the_smallest_calibration_the_config_accepts_is_one_the_engine_can_cut(
    tmp_path: Path,
) -> None:
    from gaprune_tui.engine.calibration import DEFAULT_SEQ_LEN, load_calibration

    assert RunConfig(calibration_tokens=256).validate().calibration_tokens == 256
    tok = build_tokenizer(tmp_path)
    assert DEFAULT_SEQ_LEN == 128
    cal = load_calibration("offline", tok, n_tokens=256)
    assert tuple(cal.input_ids.shape) == (2, DEFAULT_SEQ_LEN)


@pytest.mark.parametrize("kind", ["squared_mean", "mean", "kl", "ppl"])
def test_every_fitness_kind_and_operator_is_accepted(kind: str) -> None:
    config = RunConfig(fitness=kind, init="heuristics", mutation="swap", finalists=0).validate()
    assert config.higher_is_better is (kind in ("squared_mean", "mean"))


def test_toml_round_trip_keeps_the_trust_fields(tmp_path: Path) -> None:
    config = RunConfig(
        fitness="kl",
        calibration="notes.txt",
        calibration_tokens=512,
        finalists=3,
        confirm_limit=None,
        holdout_tasks=["arc_easy_offline", "piqa_offline"],
        init="heuristics",
        mutation="swap",
    ).validate()
    path = tmp_path / "run.toml"
    config.save(path)
    text = path.read_text()
    assert 'confirm_limit = "all"' in text
    assert 'holdout_tasks = [\n    "arc_easy_offline",\n    "piqa_offline",\n]' in text or (
        'holdout_tasks = ["arc_easy_offline", "piqa_offline"]' in text
    )
    again = RunConfig.load(path).validate()
    assert again == config
    assert again.confirm_limit is None and again.holdout == ["arc_easy_offline", "piqa_offline"]
    # A config that never set holdout_tasks keeps the default (no key written, None read back).
    plain = RunConfig().validate()
    plain.save(path)
    assert "holdout_tasks" not in path.read_text()
    assert RunConfig.load(path).holdout_tasks is None


def test_holdout_default_leaves_out_the_fitness_tasks() -> None:
    assert RunConfig().holdout == list(DEFAULT_HOLDOUT)
    config = RunConfig(tasks=[TaskSpec("arc_easy_offline"), TaskSpec("hellaswag_offline")])
    assert config.validate().holdout == ["piqa_offline", "winogrande_offline"]
    every = RunConfig(tasks=[TaskSpec(name) for name in DEFAULT_HOLDOUT]).validate()
    assert every.holdout == []
    # The comma form (a TOML string) becomes a list.
    assert RunConfig(holdout_tasks="piqa_offline, arc_easy_offline").validate().holdout == [
        "piqa_offline",
        "arc_easy_offline",
    ]


def test_a_task_both_in_the_fitness_and_held_out_is_refused() -> None:
    config = RunConfig(
        tasks=[TaskSpec("hellaswag_offline")], holdout_tasks=["piqa_offline", "hellaswag_offline"]
    )
    with pytest.raises(ConfigError, match="'hellaswag_offline' is both a fitness task and held"):
        config.validate()


@pytest.mark.parametrize("kind", ["kl", "ppl"])
def test_screening_a_calibration_fitness_is_refused(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"--screen applies to task fitness, not {kind}"):
        RunConfig(fitness=kind, screen=5).validate()
    assert RunConfig(fitness="mean", screen=5).validate().screen == 5


# ---- 2. search direction ------------------------------------------------------------------------
TARGET = [9, 11, 14]


def distance(dropped: list[int]) -> float:
    """A pure function of the genome, 0 exactly at TARGET."""
    return float(sum(abs(a - b) for a, b in zip(sorted(dropped), TARGET, strict=True)))


def kl_objective(dropped: list[int], limit: int | None = None) -> Outcome:
    """Stands in for KL(base || pruned): lower is better, minimum 0 at TARGET."""
    value = distance(dropped) / 10
    scores = {CALIBRATION: {"kl": value, "kl_stderr": 0.01, "ppl": 10 + value, "ppl_stderr": 0.1}}
    return Outcome(scores, fitness_of(scores, "kl"), 0.0, False, "full")


def task_objective(dropped: list[int], limit: int | None = None) -> Outcome:
    """Stands in for a task score: higher is better, maximum 1 at TARGET."""
    scores = {"t": {"acc": 1 / (1 + distance(dropped)), "n": 100}}
    return Outcome(scores, fitness_of(scores, "squared_mean"), 0.0, False, "full")


def cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(prune=3, protect=2, population=16, generations=15, seed=3)
    base.update(kw)
    return RunConfig(**base).validate()


def hall_of_fame(evs: list[RunEvent]) -> tuple[SearchFinished, list[float]]:
    """The search's closing summary, and its hall of fame's fitness values in its order."""
    summary = evs[-1]
    assert isinstance(summary, SearchFinished)
    return summary, [h["fitness"] for h in summary.hall_of_fame]


def every_genome() -> list[list[int]]:
    return [list(c) for c in itertools.combinations(range(2, N), 3)]


def test_kl_search_minimises_and_its_hall_of_fame_is_ascending() -> None:
    evs = run_search(Search(cfg(fitness="kl"), N, kl_objective))
    summary, hof = hall_of_fame(evs)
    assert hof == sorted(hof) and len(
        set(map(tuple, (h["dropped"] for h in summary.hall_of_fame)))
    ) == len(hof)
    lowest = min(e.fitness for e in finished(evs))
    assert hof[0] == pytest.approx(lowest)
    # It found the true minimum over all 364 genomes, and "best" never got worse.
    assert min(kl_objective(g).fitness for g in every_genome()) == 0.0
    assert summary.hall_of_fame[0]["dropped"] == TARGET and hof[0] == 0.0
    best = [g.best_fitness for g in generations(evs)]
    assert best == sorted(best, reverse=True) and best[-1] == 0.0
    assert generations(evs)[-1].best_dropped == TARGET
    # Selection pulled the population down, not up.
    assert generations(evs)[-1].mean < generations(evs)[0].mean


def test_task_search_maximises_the_same_landscape() -> None:
    evs = run_search(Search(cfg(fitness="squared_mean"), N, task_objective))
    summary, hof = hall_of_fame(evs)
    assert hof == sorted(hof, reverse=True)
    assert summary.hall_of_fame[0]["dropped"] == TARGET and hof[0] == pytest.approx(1.0)
    best = [g.best_fitness for g in generations(evs)]
    assert best == sorted(best)
    assert generations(evs)[-1].mean > generations(evs)[0].mean


def test_zero_mode_gives_invalid_genomes_the_worst_value_of_the_kind() -> None:
    base = dict(invalid="zero", generations=8, prune=4, population=8, seed=7)
    kl_evs = run_search(Search(cfg(fitness="kl", **base), N, kl4))
    invalid = [e for e in finished(kl_evs) if e.fidelity == "invalid"]
    assert invalid, "seed 7 makes repeated indices with the original operators"
    # Invalid: a repeated layer, or a protected one the mutation put back.
    assert all(e.fitness == math.inf and not is_valid(e.dropped, N, 2, 4) for e in invalid)
    summary = kl_evs[-1]
    assert isinstance(summary, SearchFinished)
    assert all(math.isfinite(h["fitness"]) for h in summary.hall_of_fame)
    assert all(math.isfinite(g.best_fitness) for g in generations(kl_evs))
    task_evs = run_search(Search(cfg(fitness="mean", **base), N, task4))
    assert all(e.fitness == 0.0 for e in finished(task_evs) if e.fidelity == "invalid")


def kl4(dropped: list[int], limit: int | None = None) -> Outcome:
    value = sum(abs(g - t) for g, t in zip(sorted(dropped), [8, 9, 11, 14], strict=True)) / 10
    scores = {CALIBRATION: {"kl": value, "kl_stderr": 0.01, "ppl": 10 + value}}
    return Outcome(scores, fitness_of(scores, "kl"), 0.0, False, "full")


def task4(dropped: list[int], limit: int | None = None) -> Outcome:
    scores = {"t": {"acc": sum(dropped) / 60}}
    return Outcome(scores, fitness_of(scores, "mean"), 0.0, False, "full")


def test_swap_mutation_keeps_k_distinct_unprotected_layers() -> None:
    # No crossover and mutation always, "zero" for anything invalid: only the mutation varies
    # genomes, and nothing repairs what it makes.
    shape = dict(fitness="kl", cxpb=0.0, mutpb=1.0, invalid="zero", prune=4, generations=10)
    swap = Search(cfg(mutation="swap", **shape), N, kl4)
    assert swap.toolbox.mutate.func.__name__ == "_mutate_swap"
    evs = run_search(swap)
    offspring = [e for e in finished(evs) if e.generation > 0]
    assert len(offspring) >= 50
    assert all(e.fidelity == "full" and is_valid(e.dropped, N, 2, 4) for e in offspring)
    # Each child differs from every genome of the generation before it in at most 3 swaps.
    populations = {g.generation: g.population for g in generations(evs)}
    for e in offspring:
        parents = populations[e.generation - 1]
        assert min(len(set(e.dropped) - set(p)) for p in parents) <= 3
    # The original operators under the same settings do make invalid genomes.
    uniform = run_search(Search(cfg(mutation="uniform", **shape), N, kl4))
    assert any(e.fidelity == "invalid" for e in finished(uniform))
    # And with crossover on (repair mode), still k distinct unprotected layers each.
    mixed = run_search(Search(cfg(mutation="swap", fitness="kl", prune=4), N, kl4))
    assert all(is_valid(e.dropped, N, 2, 4) for e in finished(mixed))


def test_seeds_start_generation_zero_distinct_and_valid_only() -> None:
    seeds = [
        [14, 12, 13],  # valid, unsorted
        [12, 13, 14],  # the same genome again: dropped
        [0, 5, 6],  # drops protected layer 0: dropped
        [5, 5, 6],  # a repeat: dropped
        [5, 6],  # wrong k: dropped
        [3, 4, 15],  # valid
    ]
    config = cfg(fitness="kl", population=6, generations=2)
    evs = run_search(Search(config, N, kl_objective, seeds=seeds))
    gen0 = generations(evs)[0].population
    assert gen0[:2] == [[12, 13, 14], [3, 4, 15]]
    assert len(gen0) == 6 and all(is_valid(g, N, 2, 3) for g in gen0)
    assert [12, 13, 14] in [e.dropped for e in finished(evs) if e.generation == 0]
    again = run_search(Search(config, N, kl_objective, seeds=seeds))
    assert [e.dropped for e in finished(again)] == [e.dropped for e in finished(evs)]
    assert [g.population for g in generations(again)] == [g.population for g in generations(evs)]
    # More seeds than the population: only the first ``population`` valid ones.
    many = [[2 + i, 8, 15] for i in range(5)] + [[3, 9, 10], [4, 9, 10]]
    crowd = run_search(Search(cfg(population=4, generations=0), N, task_objective, seeds=many))
    assert generations(crowd)[0].population == [[2, 8, 15], [3, 8, 15], [4, 8, 15], [5, 8, 15]]


# ---- 3. store and follower ----------------------------------------------------------------------
def _evaluation(gen: int, dropped: list[int], fitness: float, fidelity: str = "full") -> Evaluation:
    kept = [i for i in range(6) if i not in dropped]
    return Evaluation(gen, dropped, kept, fitness, {}, 0.1, False, fidelity)


def _store(kind: str) -> RunStore:
    store = RunStore.create(RunConfig(fitness=kind, prune=2, protect=1).validate())
    rows = [
        (0, [1, 2], 0.40),
        (0, [2, 3], 0.10),
        (0, [3, 4], 0.25),
        (1, [1, 2], 0.30),  # the same genome again (another fidelity or a rescore)
        (1, [4, 5], 0.90),
        (1, [1, 5], 0.05, "screen:2"),  # screened only: never ranked with full evaluations
    ]
    for row in rows:
        store.add_evaluation(_evaluation(*row))  # type: ignore[arg-type]
    return store


def test_best_evaluations_follow_the_runs_direction() -> None:
    kl = _store("kl")
    ranked = kl.best_evaluations()
    assert [(e.dropped, e.fitness) for e in ranked] == [
        ([2, 3], 0.10),
        ([3, 4], 0.25),
        ([1, 2], 0.30),  # its better (lower) evaluation counts
        ([4, 5], 0.90),
    ]
    assert [e.dropped for e in kl.best_evaluations(2)] == [[2, 3], [3, 4]]
    task = _store("squared_mean")
    assert [(e.dropped, e.fitness) for e in task.best_evaluations()] == [
        ([4, 5], 0.90),
        ([1, 2], 0.40),  # its better (higher) evaluation counts
        ([3, 4], 0.25),
        ([2, 3], 0.10),
    ]
    # An explicit kind wins over the run's.
    assert kl.best_evaluations(1, kind="mean")[0].dropped == [4, 5]
    assert kl.best_evaluations(fidelity="screen:2")[0].dropped == [1, 5]


def _follow(kind: str) -> Follower:
    store = RunStore.create(RunConfig(fitness=kind, prune=2, protect=1).validate())
    store.add_event(
        RunStarted(
            model="tiny", n_layers=6, tasks=["t"], protect=1, prune=2, population=4,
            generations=1, max_evaluations=8, fitness=kind,
        )
    )  # fmt: skip
    store.add_event(BaseScores(scores={}, fitness=0.0 if kind == "kl" else 0.5))
    for gen, dropped, fitness in [(0, [1, 2], 0.4), (0, [2, 3], 0.1), (0, [4, 5], 0.9)]:
        store.add_evaluation(_evaluation(gen, dropped, fitness))
    follower = Follower(store)
    follower.read()
    return follower


def test_follower_best_follows_the_kind() -> None:
    kl = _follow("kl").view
    assert kl.started.fitness == "kl" and not kl.higher_is_better
    assert (kl.best_fitness, kl.best_dropped) == (0.1, [2, 3])
    task = _follow("mean").view
    assert task.higher_is_better
    assert (task.best_fitness, task.best_dropped) == (0.9, [4, 5])


def test_a_kl_generation_with_an_invalid_genome_round_trips_the_store() -> None:
    store = RunStore.create(RunConfig(fitness="kl").validate())
    event = GenerationFinished(
        generation=0, evaluated=2, min=0.1, mean=math.inf, max=math.inf, best_dropped=[2, 3],
        best_fitness=0.1, population=[[2, 3], [3, 3]],
    )  # fmt: skip
    store.add_event(event)
    store.add_evaluation(_evaluation(0, [3, 3], math.inf, "invalid"))
    back, row = store.events()
    assert isinstance(back, GenerationFinished) and back.mean == math.inf
    assert isinstance(row, EvaluationFinished) and row.fitness == math.inf
    assert store.evaluations()[0].fitness == math.inf


# ---- 4. memo keys --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny llama, one real lm-eval task and two calibration sets, built once."""
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.tasks import build_tasks

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("trust")
    path = build_tiny("llama", folder / "llama", seed=5)
    loaded = load_model(str(path), device="cpu", dtype="float32")
    text = folder / "calibration.txt"
    text.write_text(
        "\n\n".join(
            f"Paragraph {i}: the river carried boats past the old mill while the town slept."
            for i in range(60)
        )
    )
    config = RunConfig(
        model=str(path), tasks=[TaskSpec("hellaswag_offline")], limit=2, prune=2, protect=1
    ).validate()
    tok = loaded.tokenizer
    return {
        "loaded": loaded,
        "config": config,
        "taskset": build_tasks(config),
        "offline": load_calibration("offline", tok, n_tokens=128, seq_len=32),
        "offline_more": load_calibration("offline", tok, n_tokens=192, seq_len=32),
        "file": load_calibration(str(text), tok, n_tokens=128, seq_len=32),
    }


def _evaluator(setup: dict[str, Any], memo: Memo, calibration: Any = None, kind: str = "kl"):
    import dataclasses

    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.scoring import make_lm

    loaded = setup["loaded"]
    config = dataclasses.replace(setup["config"], fitness=kind)
    lm = make_lm(loaded, "fast")
    kl = None
    if calibration is not None:
        base = BaseDistributions.compute(loaded, calibration, top_k=16, lm=lm)
        kl = KLScorer(loaded, calibration, base, lm=lm)
    return Evaluator(loaded, setup["taskset"], config, memo, lm=lm, kl=kl)


def test_memo_contexts_separate_fitness_sources_and_calibration_sets(
    tiny_setup: dict[str, Any],
) -> None:
    memo = Memo()
    task = _evaluator(tiny_setup, memo, kind="squared_mean")
    kl = _evaluator(tiny_setup, memo, tiny_setup["offline"])
    more = _evaluator(tiny_setup, memo, tiny_setup["offline_more"])
    other = _evaluator(tiny_setup, memo, tiny_setup["file"])
    contexts = [task.context(), kl.context(), more.context(), other.context()]
    assert len(set(contexts)) == 4
    keys = [json.loads(c) for c in contexts]
    assert "tasks" in keys[0] and "calibration" not in keys[0]
    assert "calibration" in keys[1] and "tasks" not in keys[1]
    # Each key names the model and the device; only the calibration part differs between sets.
    assert {k["model"] for k in keys} == {tiny_setup["loaded"].fingerprint}
    assert keys[1]["calibration"]["top_k"] == 16
    assert keys[1]["calibration"]["calibration"] != keys[2]["calibration"]["calibration"]
    assert keys[1]["calibration"]["calibration"] != keys[3]["calibration"]["calibration"]
    # The same calibration set loaded again is the same key: the memo survives runs.
    assert _evaluator(tiny_setup, memo, tiny_setup["offline"]).context() == kl.context()
    # A task evaluator's screening pass is another key too.
    assert task.context(limit=1) != task.context()


def test_kl_and_ppl_share_one_computation(tiny_setup: dict[str, Any]) -> None:
    """KL and perplexity come out of the same pass (``KLScorer.score`` returns both, stored
    under ``CALIBRATION``), and the fitness is read from the stored scores: so they share a memo
    key, and a ppl run reuses every genome a kl run scored, with no wrong value."""
    memo = Memo()
    kl = _evaluator(tiny_setup, memo, tiny_setup["offline"], kind="kl")
    ppl = _evaluator(tiny_setup, memo, tiny_setup["offline"], kind="ppl")
    assert kl.context() == ppl.context()
    first = kl([2, 4])
    assert not first.from_memo and first.fitness > 0
    reused = ppl([2, 4])
    assert reused.from_memo and ppl.evaluations == 0
    assert reused.scores == first.scores
    assert reused.fitness == first.scores[CALIBRATION]["ppl"] > 1
    assert first.fitness == first.scores[CALIBRATION]["kl"]


def test_a_kl_evaluator_hits_the_memo_the_second_time(tiny_setup: dict[str, Any]) -> None:
    memo = Memo()
    kl = _evaluator(tiny_setup, memo, tiny_setup["offline"])
    base = kl([])
    assert abs(base.fitness) <= 1e-6 and not base.from_memo
    first = kl([1, 3])
    second = kl([1, 3])
    assert not first.from_memo and second.from_memo
    assert second.scores == first.scores and second.fitness == first.fitness > 0
    assert (kl.evaluations, kl.cache_hits) == (2, 1)
    # Another evaluator over the same memo file (a later run) scores nothing again.
    later = _evaluator(tiny_setup, Memo(), tiny_setup["offline"])
    assert later([1, 3]).from_memo and later.evaluations == 0
    # The task evaluator on the same memo does not take the KL entry for its own.
    task = _evaluator(tiny_setup, memo, kind="mean")
    assert not task([1, 3]).from_memo


# ---- show: the report of a task-fitness result ---------------------------------------------------
def test_show_reports_task_scores_with_stderr_and_verdicts() -> None:
    from rich.console import Console

    from gaprune_tui.cli.report import print_report

    def task(acc: float, n: int = 100) -> dict[str, float]:
        return {"acc": acc, "acc_stderr": math.sqrt(acc * (1 - acc) / (n - 1)), "n": n}

    scores = {"a_offline": task(0.30), "b_offline": task(0.52)}
    base = {"a_offline": task(0.50), "b_offline": task(0.50)}
    result = {
        "run_id": "r1", "model": "tiny", "scores": scores, "base_scores": base,
        "dropped_layers": [3, 4], "kept_layers": [0, 1, 2, 5], "n_layers": 6,
        "params_removed": 25, "params_total": 100, "fitness": 0.41, "fitness_stderr": 0.03,
        "base_fitness": 0.5, "base_fitness_stderr": 0.035, "fitness_vs_base": "worse",
        "fitness_kind": "mean", "picked_by": "search", "evaluations": 3, "cache_hits": 1,
        "eval_seconds": 1.0, "wall_seconds": 2.0,
    }  # fmt: skip
    console = Console(record=True, width=200)
    print_report(result, "r1", console)
    text = console.export_text()
    row_a = next(line for line in text.splitlines() if "a_offline" in line)
    row_b = next(line for line in text.splitlines() if "b_offline" in line)
    # 0.30 vs 0.50 at 100 items: 0.20 apart, two standard errors of the difference are 0.136.
    assert "0.3000 ± 0.0461" in row_a and "0.5000 ± 0.0503" in row_a and "worse" in row_a
    # 0.52 vs 0.50: inside the noise, so no gain is claimed.
    assert "within noise" in row_b and "better" not in row_b
    assert "mean task score (higher is better)" in text and "— worse" in text
    assert "the search's best (not confirmed)" in text


# ---- the Results screen's chart with an invalid genome in a KL generation ------------------------
@pytest.mark.anyio
async def test_results_chart_draws_a_kl_run_whose_generation_mean_is_infinite() -> None:
    """With ``--invalid zero`` a KL run scores an invalid genome +inf, so its generation's mean
    and max are +inf: the chart must still draw (finite points on a finite scale)."""
    import dataclasses

    from fake_engine import fake_store, populate

    from gaprune_tui.ui.app import GapruneApp
    from gaprune_tui.ui.widgets.fitness_chart import FitnessChart

    store = fake_store()
    populate(store)
    rows = store.generations()
    g = dataclasses.replace(rows[1], mean=math.inf, max=math.inf)
    store.add_generation(g)
    store.add_event(
        GenerationFinished(
            generation=g.gen, evaluated=g.evaluated, min=g.min, mean=g.mean, max=g.max,
            best_dropped=g.best_dropped, best_fitness=g.best_fitness, population=g.population,
        )
    )  # fmt: skip
    app = GapruneApp(initial="results", run=str(store.path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        chart = app.screen.query_one("#fitness-chart", FitnessChart)
        assert chart.mean[1] == math.inf
        plain = chart.render_text(80).plain
        finite = [v for v in chart.best + chart.mean if math.isfinite(v)]
        assert f"{max(finite):.4f}" in plain and f"{min(finite):.4f}" in plain
        assert "inf" not in plain and "nan" not in plain
