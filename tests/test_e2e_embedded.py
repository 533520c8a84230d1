"""End to end on the embedded SmolLM2-135M-Instruct, through the TUI: Setup -> Run -> Results ->
Export, then the run's result and its exported winner checked as a user would.

Nothing is faked: F5 spawns the engine process, the Run screen follows its store, and `e` on the
Results screen runs the real export CLI (MergeKit, verification). One small real search serves
every test here (it used to run twice, once from the CLI and once from the TUI: the same engine
process, started by ``core.launch`` either way). Slow (the engine loads the real model and lm-eval
tasks); runs in CI all the same.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input
from tui_wait import until

from gaprune_tui.core.store import RunStore, list_runs
from gaprune_tui.ui.app import GapruneApp

pytestmark = pytest.mark.slow

# The Setup form's fields: 512 calibration tokens (default 2048): the KL path is the same, each
# genome 3x cheaper. The default search (EvoPress) with 4 children; greedy removal is tested on
# tiny models.
FORM = {
    "model": "demo",
    "prune": "4",
    "population": "4",
    "generations": "1",
    "limit": "8",
    "finalists": "2",
    "confirm-limit": "8",
    "calibration-tokens": "512",
    "offspring": "4",
    "baselines": "shortgpt,angular,last_k",
}


@dataclass
class DemoRun:
    """The run the TUI started and what it showed: its home, store and result.json, the Results
    screen's rows and table, and the export's last progress line (as the screen read it)."""

    home: Path
    store: RunStore
    result: dict[str, Any]
    rows: int
    table_rows: int
    exported: list[int]
    export: dict[str, Any]


async def drive_the_tui(home: Path) -> DemoRun:
    app = GapruneApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        screen = app.screen
        assert screen.id == "setup"
        for ident, value in FORM.items():
            screen.query_one(f"#{ident}", Input).value = value
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not screen.query_one("#start").disabled
        await pilot.press("f5")

        await until(pilot, lambda: app.screen.id == "run", "the Run screen", 300)
        store = RunStore.open(list_runs()[0].id)
        await until(pilot, lambda: store.state == "finished", "the search to finish", 600)
        if app.screen.id != "results":
            await pilot.press("o")
        await until(pilot, lambda: app.screen.id == "results", "the Results screen", 30)
        results = app.screen
        hof = results.query_one("#hall-of-fame")
        row = results.selected_row
        assert row is not None

        await pilot.press("e")
        await until(
            pilot,
            lambda: results.export_result is not None or results.export_error is not None,
            "the export",
            600,
        )
        await app.workers.wait_for_complete()  # the export process has exited
        assert results.export_error is None, results.export_error
        assert results.export_result is not None
        result = store.result()
        assert result is not None
        return DemoRun(
            home=home,
            store=store,
            result=result,
            rows=len(results.rows),
            table_rows=hof.row_count,
            exported=list(row.dropped),
            export=results.export_result,
        )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    home = tmp_path_factory.mktemp("e2e-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GAPRUNE_HOME", str(home))
        env.setenv("GAPRUNE_ASSUME_GPU", "0")
        return asyncio.run(drive_the_tui(home))


def test_setup_run_results_export_on_the_real_engine(demo_run: DemoRun) -> None:
    """The form's values reached the engine, the Results screen listed the run's genomes, and
    `e` exported the selected one (the recommendation: the first row), verified."""
    store, result = demo_run.store, demo_run.result
    assert demo_run.rows >= 1 and demo_run.table_rows >= 1
    assert store.config().calibration_tokens == 512  # the form's value reached the engine
    assert store.config().limit == 8 and store.config().finalists == 2
    assert len(result["dropped_layers"]) == 4
    assert demo_run.exported == result["dropped_layers"]
    assert demo_run.export["done"] is True and demo_run.export["verified"] is True
    exports = list((store.path / "exports").iterdir())
    assert any((e / "config.json").is_file() for e in exports)
    assert Path(demo_run.export["path"]).resolve() in {e.resolve() for e in exports}


def test_demo_search_result(demo_run: DemoRun, monkeypatch: pytest.MonkeyPatch) -> None:
    result, home = demo_run.result, demo_run.home
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


def test_export_winner_verifies_and_loads_without_gaprune(demo_run: DemoRun) -> None:
    """The export of the winner (the export CLI's last ``--progress-json`` line said done and
    verified) documents its lineage, and a fresh interpreter with no gaprune import loads it and
    generates with it."""
    result = demo_run.result
    final = demo_run.export
    assert final["done"] is True and final["verified"] is True
    out = Path(final["path"])
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
