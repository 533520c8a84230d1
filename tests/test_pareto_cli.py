"""A Pareto run end to end on a tiny model through the CLI and the real engine process: the
front covers the range, result.json and `show` carry it, `export --k` writes and verifies the
right member, and a run killed with -9 mid-generation resumes to the same front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, run_in_home
from test_cli import assert_one_line_error_keep_runs, kill_mid_generation, start_detached_args

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
    result, home = finished
    (run_dir,) = (home / "data" / "runs").iterdir()
    store = RunStore(run_dir)
    assert result["objective"] == "pareto" and result["prune_range"] == [2, 4]
    front = result["front"]
    assert [row["k"] for row in front] == [2, 3, 4]
    # Each member is the best full evaluation of its size (KL: lowest), with its standard error,
    # verdict and confirmation; flags agree with the front's own dominance.
    evaluated = [e for e in store.evaluations() if e.fidelity == "full"]
    for row in front:
        same = [e.fitness for e in evaluated if len(e.dropped) == row["k"]]
        assert row["fitness"] == min(same)
        assert len(row["dropped_layers"]) == row["k"]
        assert min(row["dropped_layers"]) >= 1
        assert row["fitness_stderr"] is not None and row["fitness_vs_base"]
        assert row["confirmed"] is not None and row["holdout"] is not None
        # The best one-shot baseline at the same k, and the member's verdict against it.
        same = [b for b in result["baselines"] if len(b["dropped_layers"]) == row["k"]]
        best = min(same, key=lambda b: b["fitness"])
        assert row["best_baseline"] == best["name"]
        assert row["best_baseline_fitness"] == best["fitness"]
        assert row["vs_best_baseline"] in ("better", "worse", "within noise")
    expected = pareto.per_k_best([(r["dropped_layers"], r["fitness"]) for r in front], "kl")
    assert [r["dominated"] for r in front] == [p.dominated for p in expected]
    # The recommendation is the knee, marked in the front.
    (knee,) = [r for r in front if r["knee"]]
    assert result["picked_by"] == "knee" and result["knee_k"] == knee["k"]
    assert result["dropped_layers"] == knee["dropped_layers"]
    # Each generation announced its front and a hypervolume that never falls.
    gens = [e for e in store.events() if isinstance(e, events.GenerationFinished)]
    volumes = [g.hypervolume for g in gens]
    assert [g.generation for g in gens] == [0, 1, 2, 3]
    assert all(v is not None for v in volumes) and volumes == sorted(volumes)  # type: ignore[type-var]
    last = pareto.front_from_dicts(gens[-1].front)
    assert [(p.k, p.dropped) for p in last] == [(r["k"], r["dropped_layers"]) for r in front]
    # Baselines at every k of the range.
    assert sorted(b["name"] for b in result["baselines"]) == sorted(
        f"{name} k={k}"
        for k in (2, 3, 4)
        for name in {b["name"].split(" k=")[0] for b in result["baselines"]}
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


def test_kill_9_mid_generation_resumes_to_the_same_front(
    tiny12: Path, finished: tuple[dict[str, Any], Path]
) -> None:
    expected, _ = finished
    run_id, store = start_detached_args(tiny12, PARETO_RUN)
    kill_mid_generation(store)
    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, True]
    strip = lambda rows: [(r["k"], r["dropped_layers"], r["fitness"]) for r in rows]  # noqa: E731
    assert strip(result["front"]) == strip(expected["front"])
    assert result["dropped_layers"] == expected["dropped_layers"]
    again = cli("resume", run_id)
    assert_one_line_error_keep_runs(again, "already finished")
