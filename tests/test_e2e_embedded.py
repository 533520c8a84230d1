"""End to end on the embedded SmolLM2-135M-Instruct: a small real search, then export of its winner.

Slow (the engine process loads the real model and lm-eval tasks); runs in CI all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import cli

from gaprune_tui.core.store import RunStore, list_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    home = tmp_path_factory.mktemp("e2e-home")
    os.environ["GAPRUNE_HOME"] = str(home)
    try:
        # 512 calibration tokens (default 2048): the KL path is the same, each genome 3x cheaper.
        # The default search (EvoPress) with 4 children; greedy removal is tested on tiny models.
        args = (
            "--prune 4 --population 4 --generations 1 --limit 8 --finalists 2 --confirm-limit 8"
            " --calibration-tokens 512 --offspring 4 --baselines shortgpt,angular,last_k"
        )
        proc = cli("run", *args.split(), "--json", timeout=900, threads=None)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout), home
    finally:
        del os.environ["GAPRUNE_HOME"]


def test_demo_search_result(demo_run: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    result, home = demo_run
    monkeypatch.setenv("GAPRUNE_HOME", str(home))
    assert result["model"] == "SmolLM2-135M-Instruct"
    assert result["n_layers"] == 30
    assert len(result["dropped_layers"]) == 4 and min(result["dropped_layers"]) >= 2
    assert len(result["kept_layers"]) == 26
    # The default fitness is KL to the base model on the bundled calibration text.
    assert result["fitness_kind"] == "kl" and set(result["scores"]) == {"calibration"}
    calibration = result["scores"]["calibration"]
    assert result["fitness"] == pytest.approx(calibration["kl"]) and calibration["kl"] > 0
    assert result["fitness_stderr"] == pytest.approx(calibration["kl_stderr"])
    assert result["base_fitness"] == pytest.approx(0.0, abs=1e-6)
    assert result["scorer"] == "fast" and result["eval_seconds"] > 0
    # Finalists and baselines confirmed on the run's tasks (fresh items) and held-out tasks.
    # Finalists: the best genomes down to the best baseline (at most --finalists 2), so the pick
    # is never worse on KL than a baseline; the result says how it compares with the best one.
    best_baseline = min(b["fitness"] for b in result["baselines"])
    assert result["picked_by"] == "confirmed" and 1 <= len(result["finalists"]) <= 2
    assert all(row["fitness"] <= best_baseline for row in result["finalists"])
    assert result["fitness"] <= best_baseline and result["headline"]
    assert result["vs_best_baseline"] in ("better", "within noise", "same genome")
    assert {b["name"] for b in result["baselines"]} == {"shortgpt", "angular", "last_k"}
    for row in result["finalists"] + result["baselines"]:
        assert row["confirmed_stderr"] > 0 and row["holdout_stderr"] > 0
        assert row["holdout_vs_base"] in ("better", "worse", "within noise")
    assert set(result["finalists"][0]["holdout_scores"]) == {
        "arc_easy_offline",
        "piqa_offline",
        "winogrande_offline",
    }
    assert result["confirmation"]["first_item"] == {"hellaswag_offline": 8, "openbookqa_offline": 8}
    store = RunStore.open(list_runs()[0].id)
    kinds = {e.kind for e in store.events()}
    assert {"run_started", "base_scores", "evaluation_finished", "generation_finished"} <= kinds
    assert {"reference_scored", "confirmation_started", "genome_confirmed"} <= kinds
    assert {"run_finished"} <= kinds and store.state == "finished"


def test_export_winner_verifies_and_loads_without_gaprune(
    demo_run: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    result, home = demo_run
    monkeypatch.setenv("GAPRUNE_HOME", str(home))
    run_id = list_runs()[0].id
    out = home / "export"
    proc = cli("export", run_id, "--out", str(out), "--progress-json", timeout=900, threads=None)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["done"] is True and final["verified"] is True
    lineage = json.loads((out / "gaprune.json").read_text())
    assert lineage["dropped_layers"] == result["dropped_layers"]
    card = (out / "README.md").read_text()
    assert "Dropped layers" in card or "dropped" in card.lower()
    # A fresh interpreter with no gaprune import loads and runs the export.
    code = (
        "import sys, torch, json;"
        "from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r});"
        f"t = AutoTokenizer.from_pretrained({str(out)!r});"
        "ids = t('The capital of France is', return_tensors='pt').input_ids;"
        "g = m.generate(ids, max_new_tokens=5, do_sample=False);"
        "print(json.dumps({'layers': m.config.num_hidden_layers, 'new': g.shape[1] - ids.shape[1],"
        " 'gaprune': any(k.startswith('gaprune') for k in sys.modules)}))"
    )
    check = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stderr[-3000:]
    info = json.loads(check.stdout.strip().splitlines()[-1])
    assert info == {"layers": 26, "new": 5, "gaprune": False}
