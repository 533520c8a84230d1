"""Export follows the search's dtype (issue 14): verification re-scores what was searched.

Without ``--dtype`` the export is written in the dtype the engine recorded for the run (its store
meta, else result.json), so a bfloat16 search exports bfloat16 and its fitness must reproduce, and
a float32 search of a bfloat16 checkpoint (the embedded model on CPU) exports float32; ``--dtype``
still overrides; a run that never loaded its model falls back to the checkpoint's dtype. The model
card says which dtype the search ran in and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cores import cores
from scored_runs import ScoredRun, score_tasks, tiny_run_config
from tiny_models import build_tiny

from gaprune_tui.core.store import RunStore
from gaprune_tui.engine.export import export_run

BF16_REASON = "bfloat16: asked for (--dtype bfloat16)"


def _score_run(model: Path, dtype: str) -> ScoredRun:
    """A real run's worth of scores: two genomes of the tiny Llama scored in ``dtype``."""
    torch.set_num_threads(cores())
    return score_tasks(tiny_run_config(model, limit=4, dtype=dtype), [[2, 4], [1, 3]])


def _make_run(run: ScoredRun, meta: dict[str, Any] | None) -> RunStore:
    """Its run store, with the dtype the engine would have recorded in ``meta`` (or none)."""
    store = run.store()
    if meta:
        store.set_meta(**meta)
    return store


@pytest.fixture(scope="module")
def bf16_search(tmp_path_factory: pytest.TempPathFactory) -> ScoredRun:
    """A float32 checkpoint searched in bfloat16 (``--dtype bfloat16``)."""
    path = build_tiny("llama", tmp_path_factory.mktemp("fp32-ckpt") / "llama")
    data = _score_run(path, "bfloat16")
    assert data.dtype == "bfloat16" and data.dtype_reason.startswith("bfloat16: asked for")
    return data


def test_bf16_search_exports_bf16_and_its_fitness_must_reproduce(
    bf16_search: ScoredRun, tmp_path: Path
) -> None:
    store = _make_run(bf16_search, {"dtype": "bfloat16", "dtype_reason": BF16_REASON})
    result = export_run(store.id, out=tmp_path / "auto")
    assert result.plan.dtype == "bfloat16" and result.verified is True
    ver = result.verification
    assert ver is not None and ver.dtype == ver.search_dtype == "bfloat16"
    assert ver.fitness_required is True and ver.logits_max_abs_diff == 0.0
    best = store.best_evaluations()[0]
    assert ver.fitness_export == pytest.approx(best.fitness, abs=1e-12)
    lineage = json.loads((result.path / "gaprune.json").read_text())
    assert lineage["dtype"] == lineage["search_dtype"] == "bfloat16"
    assert lineage["search_dtype_reason"] == BF16_REASON
    card = (result.path / "README.md").read_text()
    assert "| Searched in | bfloat16 (asked for (--dtype bfloat16)) |" in card
    assert "(bfloat16, " in card and "informational" not in card  # verified in the search dtype
    # --dtype still overrides (its informational re-score: test_export.py's bfloat16 export).
    wide = export_run(store.id, out=tmp_path / "fp32", dtype="float32", verify=False)
    assert wide.plan.dtype == "float32"
    assert json.loads((wide.path / "gaprune.json").read_text())["search_dtype"] == "bfloat16"


def test_the_run_s_dtype_wins_over_the_checkpoint_s(tmp_path: Path) -> None:
    """A bfloat16 checkpoint searched in float32 (the embedded model on CPU) exports float32;
    before the run loaded its model (no recorded dtype) the checkpoint's bfloat16 is kept."""
    from transformers import AutoModelForCausalLM

    src = build_tiny("llama", tmp_path / "src")
    ckpt = tmp_path / "bf16-ckpt"
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            (ckpt / name).write_bytes((src / name).read_bytes())
    assert json.loads((ckpt / "config.json").read_text())["dtype"] == "bfloat16"
    data = _score_run(ckpt, "float32")
    reason = data.dtype_reason
    assert data.dtype == "float32" and reason.startswith("float32: ")

    searched = _make_run(data, {"dtype": "float32", "dtype_reason": reason})
    fp32 = export_run(searched.id, out=tmp_path / "fp32", verify=False)
    assert fp32.plan.dtype == "float32"
    lineage = json.loads((fp32.path / "gaprune.json").read_text())
    assert lineage["search_dtype"] == "float32" and lineage["search_dtype_reason"] == reason
    assert (
        f"| Searched in | float32 ({reason.partition(': ')[2]}) |"
        in (fp32.path / "README.md").read_text()
    )
    assert export_run(searched.id, out=tmp_path / "bf", verify=False, dtype="bf16").plan.dtype == (
        "bfloat16"
    )

    # result.json alone (a store from before the meta field) names the dtype too.
    from_result = _make_run(data, None)
    from_result.write_result({"dtype": "float32", "dtype_reason": reason})
    assert export_run(from_result.id, out=tmp_path / "r", verify=False).plan.dtype == "float32"

    never_loaded = _make_run(data, None)
    kept = export_run(never_loaded.id, out=tmp_path / "ckpt", verify=False)
    assert kept.plan.dtype == "bfloat16"
    lineage = json.loads((kept.path / "gaprune.json").read_text())
    assert lineage["search_dtype"] is None
    assert "Searched in" not in (kept.path / "README.md").read_text()


def test_cli_export_without_dtype_uses_the_run_s(
    bf16_search: ScoredRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gaprune_tui.cli.main import main

    store = _make_run(bf16_search, {"dtype": "bfloat16", "dtype_reason": BF16_REASON})
    args = ["export", store.id, "--no-verify", "--progress-json"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[-1]["done"] is True and rows[-1]["dtype"] == "bfloat16"
    assert main([*args, "--out", str(tmp_path / "b"), "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[-1]["dtype"] == "float32"
