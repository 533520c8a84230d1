"""Issue 10 end to end: a KL search through the CLI and the real engine process, on a tiny model.

The run scores genomes on calibration text, then confirms its finalists, the one-shot baselines
and the base model on more items of its task and on a held-out task; result.json, ``show`` and
``confirm`` are checked against the events the engine wrote into the run store.

The tiny model's weights are scaled up: a freshly initialised model predicts nearly uniform
next tokens, so every genome would tie on every task and a re-ranking could not be seen.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli
from tiny_models import build_sharp
from tui_wait import wait_until

from gaprune_tui.core import format
from gaprune_tui.core.events import ConfirmationStarted, GenomeConfirmed, ReferenceScored
from gaprune_tui.core.follow import Follower
from gaprune_tui.core.store import RunStore, list_runs

pytestmark = pytest.mark.slow

TASK, HELD_OUT = "hellaswag_offline", "arc_easy_offline"
KL_RUN = [
    "--tasks", TASK, "--limit", "4", "--prune", "2", "--protect", "1", "--population", "6",
    "--generations", "1", "--fitness", "kl", "--calibration-tokens", "256", "--finalists", "2",
    "--confirm-limit", "16", "--holdout-tasks", HELD_OUT, "--baselines", "last_k",
]  # fmt: skip
# Finalists are the best genomes down to the best baseline (issue 19). With only last k as the
# baseline (third best of this model's ten genomes), confirmation has several finalists to rank.


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal for rich in the CLI's child processes, so table cells ("within noise") are
    not wrapped."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def sharp_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sharp(tmp_path_factory.mktemp("sharp") / "llama")


def confirmed_events(store: RunStore) -> list[GenomeConfirmed]:
    """The GenomeConfirmed events of the store's last confirmation."""
    evs = store.events()
    start = max(i for i, e in enumerate(evs) if isinstance(e, ConfirmationStarted))
    return [e for e in evs[start:] if isinstance(e, GenomeConfirmed)]


def expected_order(confirmed: list[GenomeConfirmed]) -> list[str]:
    """Finalists by confirmed task score, higher first; ties keep the search's rank."""
    finalists = [c for c in confirmed if c.role == "finalist"]
    return [c.label for c in sorted(finalists, key=lambda c: (-(c.confirmed or 0.0), c.rank))]


def check_task_score(scores: dict[str, Any], task: str, value: float, stderr: float) -> None:
    """One task at 16 items: the mean of 0/1 items, with lm-eval's binomial standard error."""
    metrics = scores[task]
    metric = next(iter(metrics))
    assert metrics["n"] == 16
    assert value == pytest.approx(metrics[metric])
    assert round(value * 16) == pytest.approx(value * 16)  # a count of correct items
    assert stderr == pytest.approx(math.sqrt(value * (1 - value) / 15))
    assert metrics[f"{metric}_stderr"] == pytest.approx(stderr)


def check_confirmations(result: dict[str, Any], store: RunStore, finalists: int) -> None:
    confirmed = confirmed_events(store)
    by_label = {c.label: c for c in confirmed}
    refs = [e for e in store.events() if isinstance(e, ReferenceScored)]
    refs = list({r.name: r for r in refs}.values())  # confirm re-scores them: the latest each
    # Finalists are the run's best distinct genomes (lowest KL first), in that rank, down to the
    # best baseline and no further.
    floor = min(r.fitness for r in refs)
    ranked = [e for e in store.best_evaluations(finalists) if e.fitness <= floor]
    assert 1 <= len(ranked) <= finalists
    finalists = len(ranked)
    assert sorted(c.role for c in confirmed) == sorted(
        ["base"] + ["finalist"] * finalists + ["baseline"] * len(refs)
    ), [(e.dropped, e.fitness) for e in store.best_evaluations()] + [floor]
    for i, e in enumerate(ranked, 1):
        c = by_label[f"finalist {i}"]
        assert (c.dropped, c.rank, c.fitness) == (e.dropped, i, e.fitness)
    rows = result["finalists"]
    assert len(rows) == finalists
    assert [r["label"] for r in rows] == expected_order(confirmed)
    base = by_label["base model"]
    for row in rows:
        c = by_label[row["label"]]
        assert row["dropped_layers"] == c.dropped
        assert (row["confirmed"], row["holdout"]) == (c.confirmed, c.holdout)
        check_task_score(row["confirmed_scores"], TASK, row["confirmed"], row["confirmed_stderr"])
        check_task_score(row["holdout_scores"], HELD_OUT, row["holdout"], row["holdout_stderr"])
        # The verdict against the base model, by hand: two standard errors of the difference.
        for key in ("confirmed", "holdout"):
            gap = row[key] - getattr(base, key)
            noise = 2 * math.hypot(row[f"{key}_stderr"], getattr(base, f"{key}_stderr"))
            word = "within noise" if abs(gap) <= noise else ("better" if gap > 0 else "worse")
            assert row[f"{key}_vs_base"] == word
    assert result["picked_by"] == "confirmed"
    assert result["dropped_layers"] == rows[0]["dropped_layers"]
    assert result["search_best"] == ranked[0].dropped
    base_conf = result["base_confirmation"]
    assert (base_conf["confirmed"], base_conf["holdout"]) == (base.confirmed, base.holdout)
    assert base_conf["confirmed_stderr"] == pytest.approx(base.confirmed_stderr)
    assert "confirmed_vs_base" not in base_conf


def test_kl_run_confirms_finalists_and_confirm_reruns(sharp_llama: Path) -> None:
    proc = cli("run", "--model", str(sharp_llama), *KL_RUN, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    store = RunStore.open(result["run_id"])
    assert store.state == "finished"
    assert result["fitness_kind"] == "kl" and result["higher_is_better"] is False
    calib = result["scores"]["calibration"]
    assert result["fitness"] == calib["kl"] > 0 and result["fitness_stderr"] == calib["kl_stderr"]
    assert 0 < result["fitness_stderr"] < result["fitness"]
    assert result["base_fitness"] == 0.0 and result["base_fitness_stderr"] == 0.0
    assert result["calibration"]["tokens"] == 256
    assert result["confirmation"]["limit"] == 16
    assert result["confirmation"]["holdout_tasks"] == [HELD_OUT]
    # The baseline asked for, scored on the same KL as the search's genomes.
    refs = [e for e in store.events() if isinstance(e, ReferenceScored)]
    assert [b["name"] for b in result["baselines"]] == ["last_k"]
    assert [r.name for r in refs] == ["last_k"]
    assert result["baselines"][0]["dropped_layers"] == [3, 4]  # the last k before the final one
    for row, ref in zip(result["baselines"], refs, strict=True):
        assert (row["dropped_layers"], row["fitness"]) == (ref.dropped, ref.fitness)
        assert row["fitness"] > 0 and row["fitness_vs_base"] == "worse"
        # 0 at a score of 0 or 1 (lm-eval's binomial convention), never missing.
        assert row["confirmed_stderr"] >= 0 and row["holdout_stderr"] >= 0
    check_confirmations(result, store, finalists=2)
    assert store.result() == result

    show = cli("show", result["run_id"])
    assert show.returncode == 0, show.stderr
    out = show.stdout
    assert "±" in out and "within noise" in out and "KL(base || pruned)" in out
    assert f"recommended: drop {result['dropped_layers']}" in out
    for word in {r["confirmed_vs_base"] for r in result["finalists"]}:
        assert word in out
    assert "baseline: last_k" in out and "vs the best baseline:" in out

    # Bad confirm settings are refused before anything starts; the config is left as it was.
    clash = cli("confirm", result["run_id"], "--holdout-tasks", TASK)
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1
    assert f"task '{TASK}' is both a fitness task and held out" in clash.stderr
    typo = cli("confirm", result["run_id"], "--holdout-tasks", "no_such_task_xyz")
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert "held-out tasks: unknown task 'no_such_task_xyz'" in typo.stderr
    zero = cli("confirm", result["run_id"], "--confirm-limit", "0")
    assert zero.returncode == 2 and "confirm_limit must be an integer >= 1" in zero.stderr
    assert store.config().holdout_tasks == [HELD_OUT] and store.config().confirm_limit == 16

    again = cli("confirm", result["run_id"], "--finalists", "3", "--json")
    assert again.returncode == 0, again.stderr
    confirmed = json.loads(again.stdout)
    assert confirmed == store.result()
    assert store.state == "finished" and not store.alive()
    assert store.config().finalists == 3
    check_confirmations(confirmed, store, finalists=3)
    assert len(confirmed["finalists"]) == 3, "this model has 3 genomes as good as last k"
    # The rows are in confirmed order (``check_confirmations``: best confirmed score first), and
    # the pick is the first of them.
    scores = [r["confirmed"] for r in confirmed["finalists"]]
    assert scores == sorted(scores, reverse=True)
    assert confirmed["dropped_layers"] == confirmed["finalists"][0]["dropped_layers"]
    # The search itself is untouched: same evaluations, same best.
    assert confirmed["search_best"] == result["search_best"]
    assert confirmed["evaluations"] == result["evaluations"]
    # The follower (the Run and Results screens' model) folds the same story.
    follower = Follower(store)
    follower.read()
    view = follower.view
    assert view.started.fitness == "kl" and view.state == "finished"
    assert set(view.references) == {"last_k"}
    assert sorted(c.label for c in view.confirmations) == sorted(
        c.label for c in confirmed_events(store)
    )
    lowest = store.best_evaluations(1)[0]
    assert (view.best_fitness, view.best_dropped) == (lowest.fitness, lowest.dropped)
    assert view.result == confirmed


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("/no/such/calibration.txt", "calibration file /no/such/calibration.txt not found"),
        ("hf:nobody/nothing", "it needs the network"),
    ],
)
def test_bad_calibration_is_one_line_and_leaves_no_run(
    sharp_llama: Path, spec: str, fragment: str
) -> None:
    args = ["--tasks", TASK, "--limit", "2", "--prune", "2", "--protect", "1"]
    proc = cli("run", "--model", str(sharp_llama), *args, "--fitness", "kl", "--calibration", spec)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and fragment in lines[-1] and len(lines) <= 2
    assert list_runs() == []


def test_heuristics_seed_generation_zero_and_confirm_refuses_a_live_run(
    sharp_llama: Path,
) -> None:
    args = [
        "--tasks", TASK, "--limit", "4", "--prune", "2", "--protect", "1", "--population", "4",
        "--generations", "100000", "--fitness", "ppl", "--calibration-tokens", "256",
        "--finalists", "0", "--confirm-limit", "16", "--holdout-tasks", HELD_OUT,
        "--init", "heuristics", "--mutation", "swap", "--algorithm", "ga",
    ]  # fmt: skip
    start = cli("run", "--model", str(sharp_llama), *args, "--detach")
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip().splitlines()[-1]
    store = RunStore.open(run_id)
    wait_until(lambda: store.generations(), "generation 0")
    refs = [e for e in store.events() if isinstance(e, ReferenceScored)]
    assert [r.name for r in refs] == ["shortgpt", "angular", "last_k", "greedy"]
    seeds = list(dict.fromkeys(tuple(r.dropped) for r in refs))
    gen0 = store.generations()[0]
    assert [tuple(g) for g in gen0.population[: len(seeds)]] == seeds
    rows = {tuple(e.dropped): e for e in store.evaluations() if e.generation == 0}
    for ref in refs:
        assert rows[tuple(ref.dropped)].fitness == ref.fitness == ref.scores["calibration"]["ppl"]

    busy = cli("confirm", run_id)
    assert busy.returncode == 2 and "Traceback" not in busy.stderr
    assert (
        busy.stderr.strip()
        == f"error: run {run_id} is running: wait for it to end, or stop it first"
    )
    assert cli("stop", run_id).returncode == 0
    wait_until(lambda: not store.alive() and store.state == "stopped", "the stop")
    # Swap mutation: every genome the search made keeps k distinct unprotected layers.
    assert all(len(set(e.dropped)) == 2 and min(e.dropped) >= 1 for e in store.evaluations())

    unknown = cli("confirm", "no-such-run")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert unknown.stderr.startswith("error: no run 'no-such-run' in ")

    stopped = cli("confirm", run_id, "--finalists", "1", "--json")
    assert stopped.returncode == 0, stopped.stderr
    result = json.loads(stopped.stdout)
    assert store.state == "stopped"
    assert len(result["finalists"]) == 1 and result["fitness_kind"] == "ppl"
    assert result["finalists"][0]["dropped_layers"] == store.best_evaluations(1)[0].dropped
    # ``show`` of a perplexity run prints its perplexity (and the KL), each against the base.
    show = cli("show", run_id)
    assert show.returncode == 0, show.stderr
    calib, base = result["scores"]["calibration"], result["base_scores"]["calibration"]
    ppl_row = next(line for line in show.stdout.splitlines() if "│ ppl " in line)
    assert format.score(calib["ppl"], calib["ppl_stderr"]) in ppl_row
    assert format.score(base["ppl"], base["ppl_stderr"]) in ppl_row
    kl_row = next(line for line in show.stdout.splitlines() if "│ kl " in line)
    assert format.score(calib["kl"], calib["kl_stderr"]) in kl_row and "worse" in kl_row
    assert "perplexity (lower is better)" in show.stdout
