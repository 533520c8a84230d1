"""A Pareto run end to end on a tiny model through the CLI and the real engine process: the
front covers the range, result.json and `show` carry it, `export --k` writes and verifies the
right member, and a run killed with -9 mid-generation resumes to the same front."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, run_in_home
from test_cli import (
    assert_one_line_error_keep_runs,
    kill_mid_generation,
    start_detached_args,
)
from test_pareto import brute_knee, swept_volume

from gaprune_tui.core import events, pareto
from gaprune_tui.core.store import RunStore

pytestmark = pytest.mark.slow

PARETO_RUN = [
    *("--objective", "pareto", "--prune-range", "2:4", "--protect", "1"),
    *("--fitness", "kl", "--calibration-tokens", "512"),
    *("--population", "8", "--generations", "3"),
    *("--tasks", "hellaswag_offline", "--limit", "4"),
    *("--finalists", "1", "--confirm-limit", "4", "--holdout-tasks", "piqa_offline"),
]


@pytest.fixture(scope="module")
def finished(tiny12: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One uninterrupted Pareto run in its own GAPRUNE_HOME: result.json and that home."""
    home = tmp_path_factory.mktemp("pareto-home")
    result, _ = run_in_home(home, tiny12, *PARETO_RUN)
    return result, home


def test_pareto_run_finishes_with_a_front_over_the_range(
    finished: tuple[dict[str, Any], Path],
) -> None:
    """Every number of the front recomputed from the store's rows and events, not from the
    code that wrote it: each member is the best full evaluation of its k, its dominance and the
    knee by brute force, its best baseline and verdict from the baselines' own scores, the
    hypervolume against the README's reference point, and confirmation of the members only."""
    result, home = finished
    (run_dir,) = (home / "data" / "runs").iterdir()
    store = RunStore(run_dir)
    evs = store.events()
    assert result["objective"] == "pareto" and result["prune_range"] == [2, 4]
    front = result["front"]
    assert [row["k"] for row in front] == [2, 3, 4]
    evaluated = [e for e in store.evaluations() if e.fidelity == "full"]
    references = [e for e in evs if isinstance(e, events.ReferenceScored)]
    for row in front:
        # The best full evaluation of its size (KL: lowest), with its standard error.
        same = [e for e in evaluated if len(e.dropped) == row["k"]]
        best = min(same, key=lambda e: e.fitness)
        assert row["fitness"] == best.fitness and row["dropped_layers"] == best.dropped
        assert min(row["dropped_layers"]) >= 1
        se = best.scores["calibration"]["kl_stderr"]
        assert row["fitness_stderr"] == se and row["fitness_vs_base"]
        assert row["confirmed"] is not None and row["holdout"] is not None
        # The best one-shot baseline at the same k, from its own event, and the member's
        # verdict against it: beyond two standard errors of the difference, or within noise.
        at_k = [r for r in references if len(r.dropped) == row["k"]]
        baseline = min(at_k, key=lambda r: r.fitness)
        assert row["best_baseline"] == baseline.name
        assert row["best_baseline_fitness"] == baseline.fitness
        # Paired over the calibration sequences both were scored on; "same genome" when the
        # member is that baseline's pick.
        gaps = [
            b - m
            for m, b in zip(
                best.scores["calibration"]["kl_seq"],
                baseline.scores["calibration"]["kl_seq"],
                strict=True,
            )
        ]
        gap = baseline.fitness - row["fitness"]  # KL: positive when the member is better
        noise = 2 * statistics.stdev(gaps) / math.sqrt(len(gaps))
        verdict = "within noise" if abs(gap) <= noise else "better" if gap > 0 else "worse"
        if row["dropped_layers"] == baseline.dropped:
            verdict = "same genome"
        assert row["vs_best_baseline"] == verdict
    # Dominated: a member with more dropped layers is at least as good (KL no higher).
    assert [r["dominated"] for r in front] == [
        any(o["k"] > r["k"] and o["fitness"] <= r["fitness"] for o in front) for r in front
    ]
    # The recommendation is the knee, found by brute force, marked once in the front.
    knee_k = brute_knee([(r["k"], r["fitness"]) for r in front], higher_is_better=False)
    assert [r["k"] for r in front if r["knee"]] == [knee_k]
    assert result["picked_by"] == "knee" and result["knee_k"] == knee_k
    (knee,) = [r for r in front if r["knee"]]
    assert result["dropped_layers"] == knee["dropped_layers"]
    # Each generation announced its front, and its hypervolume against the reference point
    # (the initial population's worst KL, k = MIN - 1), which never falls.
    gens = [e for e in evs if isinstance(e, events.GenerationFinished)]
    assert [g.generation for g in gens] == [0, 1, 2, 3]
    ref = max(e.fitness for e in evaluated if e.generation == 0)
    for g in gens:
        assert g.hypervolume == pytest.approx(
            swept_volume(pareto.front_from_dicts(g.front), ref, 1, higher=False)
        )
    volumes = [g.hypervolume for g in gens]
    assert volumes == sorted(volumes)  # type: ignore[type-var]
    last = pareto.front_from_dicts(gens[-1].front)
    # The search's last front, with the baselines' picks ranked beside it, gives result.json's.
    assert [p.k for p in last] == [r["k"] for r in front]
    assert all(r["fitness"] <= p.fitness for p, r in zip(last, front, strict=True))
    # The baselines: every method at every k of the range, as result.json lists them.
    methods: dict[str, list[int]] = {}
    for r in references:
        name, _, k = r.name.partition(" k=")
        assert int(k) == len(r.dropped)
        methods.setdefault(name, []).append(int(k))
    assert methods and all(sorted(ks) == [2, 3, 4] for ks in methods.values()), methods
    assert sorted(b["name"] for b in result["baselines"]) == sorted(r.name for r in references)
    # Confirmation re-scores the base model and one member per k, never the baselines.
    confirmed = [e for e in evs if isinstance(e, events.GenomeConfirmed)]
    assert sorted(e.role for e in confirmed) == ["base"] + ["finalist"] * 3
    assert sorted(e.dropped for e in confirmed if e.role == "finalist") == sorted(
        r["dropped_layers"] for r in front
    )
    # `show` prints the front.
    shown = cli("show", store.id, env={"GAPRUNE_HOME": str(home), "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "Pareto front" in shown.stdout and "knee" in shown.stdout
    assert "best baseline" in shown.stdout
    assert "--k 2 or 3 or 4" in shown.stdout


def test_export_by_k_writes_and_verifies_that_member(
    finished: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    result, home = finished
    env = {"GAPRUNE_HOME": str(home)}
    run_id = result["run_id"]
    (member,) = [r for r in result["front"] if r["k"] == 3]
    out = tmp_path / "k3"
    proc = cli("export", run_id, "--k", "3", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"dropped layers {member['dropped_layers']}" in proc.stdout
    assert "verified" in proc.stdout.lower()
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 12 - 3
    missing = cli("export", run_id, "--k", "7", "--out", str(tmp_path / "k7"), env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no member with k=7: use --k 2 or 3 or 4" in missing.stderr
    assert not (tmp_path / "k7").exists()


def scored(evs: list[events.RunEvent], *, memo: bool) -> list[tuple[tuple[int, ...], str]]:
    """The genomes the search's evaluation events say were computed (``memo`` False) or read
    from the memo (True), each with its fidelity, in order."""
    return [
        (tuple(e.dropped), e.fidelity)
        for e in evs
        if isinstance(e, events.EvaluationFinished) and e.from_memo == memo
    ]


def test_kill_9_mid_generation_resumes_to_the_same_front(
    tiny12: Path, finished: tuple[dict[str, Any], Path]
) -> None:
    """kill -9 inside generation g + 1 (g >= 1 checkpointed): the resume continues after g, not
    from 0, recomputes nothing the killed session finished (at most the genome in flight), and
    reaches the uninterrupted run's front, with every generation's hypervolume recomputed here
    from its front and the run's own reference point."""
    expected, home = finished
    (run_dir,) = (home / "data" / "runs").iterdir()
    whole = RunStore(run_dir)
    run_id, store = start_detached_args(tiny12, PARETO_RUN)
    kill_mid_generation(store)
    checkpoint = store.last_checkpoint()
    assert checkpoint is not None
    g = checkpoint[0]
    # Where the kill landed, from the store: generations 0..g closed (g >= 1), g + 1 begun (some
    # of its genomes scored) and not closed, and g + 1 is a generation of the search (<= 3).
    first = store.events()
    assert g >= 1 and [x.gen for x in store.generations()] == list(range(g + 1))
    begun = [e for e in first if isinstance(e, events.EvaluationFinished) and e.generation == g + 1]
    assert begun and g + 1 <= 3, "the kill must land inside a generation of the search"
    assert not any(isinstance(e, events.GenerationFinished) and e.generation > g for e in first)
    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, True]
    assert f"resuming after generation {g}" in store.log_path.read_text()
    second = store.events()[len(first) :]
    assert min(e.generation for e in second if isinstance(e, events.EvaluationFinished)) == g + 1
    # Recomputed evaluations, counted from the store's events: what the killed session computed
    # of generation g + 1 the resume reads from the memo, so at most one genome (the one in
    # flight) is computed in both sessions; both together computed the uninterrupted run's
    # genomes, give or take that one.
    done_before = scored(begun, memo=False)
    assert set(done_before) <= set(scored(second, memo=True))
    twice = set(scored(first, memo=False)) & set(scored(second, memo=False))
    assert len(twice) <= 1, twice
    computed = scored(first, memo=False) + scored(second, memo=False)
    uninterrupted = scored(whole.events(), memo=False)
    assert len(uninterrupted) - 1 <= len(computed) <= len(uninterrupted) + 1
    assert len(set(uninterrupted) ^ set(computed)) <= 1
    strip = lambda rows: [(r["k"], r["dropped_layers"], r["fitness"]) for r in rows]  # noqa: E731
    assert strip(result["front"]) == strip(expected["front"])
    assert result["dropped_layers"] == expected["dropped_layers"]
    # Every generation's hypervolume, both sessions', swept here from the front it announced
    # against the reference point (this run's initial worst KL, k = MIN - 1); then the same
    # numbers as the uninterrupted run's.
    evs = store.events()
    ref = max(e.fitness for e in store.evaluations() if e.generation == 0 and e.fidelity == "full")
    gens = [e for e in evs if isinstance(e, events.GenerationFinished)]
    assert [e.generation for e in gens] == [0, 1, 2, 3]
    for e in gens:
        front = pareto.front_from_dicts(e.front)
        assert e.hypervolume == pytest.approx(swept_volume(front, ref, 1, higher=False))
    volumes = lambda s: [  # noqa: E731
        (e.generation, e.hypervolume)
        for e in s.events()
        if isinstance(e, events.GenerationFinished)
    ]
    assert volumes(store) == volumes(whole)
    again = cli("resume", run_id)
    assert_one_line_error_keep_runs(again, "already finished")
