"""Export after confirmation, and a model card that never claims what noise cannot show.

The card's wording is checked on lineages whose differences from the base model are within or
beyond two standard errors; the export order on a real run store (real tiny-model scores) with
``GenomeConfirmed`` events and a result.json, exported through MergeKit for real; KL runs are
verified by re-scoring the export on the run's calibration text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cores import cores
from fake_engine import confirmed_genome
from scored_runs import ScoredRun, score_kl, score_tasks, tiny_run_config
from tiny_models import build_tiny

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.events import ConfirmationStarted, ReferenceScored
from gaprune_tui.core.store import RunStore
from gaprune_tui.engine.export import export_run, render_card
from gaprune_tui.engine.export.verify import scores_equal

torch.set_num_threads(cores())

IMPROVEMENT_WORDS = ("improve", "better than the base", "outperform")


# ---------------------------------------------------------------------------------------------
# the card's wording, on lineages built by hand


def _lineage(confirmed: tuple[float, float], base_confirmed: tuple[float, float]) -> dict:
    """A complete lineage whose confirmed score is ``confirmed`` = (value, stderr) against the
    base model's ``base_confirmed``; its search fitness is within noise of the base model's."""
    from gaprune_tui.engine.export.lineage import with_verdicts

    def conf(value: tuple[float, float], role: str) -> dict[str, Any]:
        scores = {"piqa": {"acc": value[0], "acc_stderr": value[1], "n": 400}}
        return {
            "label": role,
            "role": role,
            "dropped_layers": [3, 4] if role == "finalist" else [],
            "confirmed": value[0],
            "confirmed_stderr": value[1],
            "confirmed_scores": scores,
            "holdout": value[0],
            "holdout_stderr": value[1],
            "holdout_scores": {"arc_easy": scores["piqa"]},
        }

    base = conf(base_confirmed, "base")
    pruned_scores = {"hellaswag": {"acc_norm": 0.42, "acc_norm_stderr": 0.11, "n": 20}}
    base_scores = {"hellaswag": {"acc_norm": 0.45, "acc_norm_stderr": 0.11, "n": 20}}
    return {
        "gaprune_version": "test",
        "base_model": {"spec": "m", "name": "m", "model_type": "llama", "hub_id": None},
        "dropped_layers": [3, 4],
        "kept_layers": [0, 1, 2, 5],
        "dtype": "float32",
        "params_before": 100,
        "params_after": 70,
        "size_bytes": 1000,
        "scores": {"pruned": pruned_scores, "base": base_scores},
        "fitness": {
            "kind": "mean",
            "label": fitness_kinds.label("mean"),
            "pruned": 0.42,
            "pruned_stderr": 0.11,
            "base": 0.45,
            "base_stderr": 0.11,
            "vs_base": fitness_kinds.verdict(0.42, 0.11, 0.45, 0.11, "mean"),
            "diff": -0.03,
            "diff_stderr": 0.1556,
        },
        "confirmation": {
            "limit": 400,
            "tasks": ["piqa"],
            "holdout_tasks": ["arc_easy"],
            "noise_z": 2.0,
            "kind": "mean",
            "pruned": with_verdicts(conf(confirmed, "finalist"), base),
            "base": base,
        },
        "baselines": [],
        "run": {
            "id": "r",
            "rank": 1,
            "evaluated_genomes": 3,
            "order_note": "rank 1/3 in confirmed order",
        },
        "verification": None,
        "config_toml": "",
        "reproduce": ["gaprune-tui export RUN_ID"],
    }


def test_card_within_noise_claims_no_improvement() -> None:
    # 0.62 vs 0.60 with standard errors 0.024: the difference 0.02 is under 2 x 0.034.
    card = render_card(_lineage((0.62, 0.024), (0.60, 0.024)))
    assert "within noise of the base model (difference +0.0200 ± 0.0339)" in card
    lowered = card.lower()
    for word in IMPROVEMENT_WORDS:
        assert word not in lowered, word
    assert "| piqa | acc | 400 | 0.6000 ± 0.0240 | 0.6200 ± 0.0240 | within noise |" in card
    assert (
        "| Confirmed | piqa (400 items) | 0.6000 ± 0.0240 | 0.6200 ± 0.0240 | within noise |"
        in (card)
    )
    # The search's fitness (0.42 vs 0.45 at limit 20) is within noise too, and said so.
    assert (
        "| hellaswag | acc_norm | 20 | 0.4500 ± 0.1100 | 0.4200 ± 0.1100 | within noise |" in card
    )


def test_card_beyond_noise_says_so() -> None:
    better = render_card(_lineage((0.70, 0.02), (0.60, 0.02)))
    assert "better than the base model beyond noise (difference +0.1000 ± 0.0283)" in better
    assert "| Held-out | arc_easy (400 items) | 0.6000 ± 0.0200 | 0.7000 ± 0.0200 | better |" in (
        better
    )
    worse = render_card(_lineage((0.50, 0.02), (0.60, 0.02)))
    assert "worse than the base model beyond noise (difference -0.1000 ± 0.0283)" in worse
    assert "better than the base" not in worse and "within noise of the base model (diff" in worse


def test_card_without_standard_errors_gives_no_verdict() -> None:
    lineage = _lineage((0.70, 0.02), (0.60, 0.02))
    lineage["confirmation"] = None
    lineage["fitness"].update(pruned_stderr=None, vs_base="no stderr", diff_stderr=None)
    card = render_card(lineage)
    assert "not judged against the base model: no standard error (difference -0.0300)" in card
    assert "Not confirmed" in card and "## Confirmation" not in card


def test_kl_label_does_not_break_the_tables() -> None:
    lineage = _lineage((0.62, 0.024), (0.60, 0.024))
    lineage["fitness"]["label"] = fitness_kinds.label("kl")
    card = render_card(lineage)
    assert "| Fitness | KL(base \\|\\| pruned) per token (lower is better) |" in card


def test_scores_equal_compares_values_not_stderrs_or_counts() -> None:
    a = {"piqa": {"acc": 0.5, "acc_stderr": None, "n": 6}}
    assert scores_equal(a, {"piqa": {"acc": 0.5, "acc_stderr": 0.2236, "n": 6}})
    assert scores_equal(a, {"piqa": {"acc": 0.5}})  # a row from before standard errors
    assert not scores_equal(a, {"piqa": {"acc": 0.6, "acc_stderr": None, "n": 6}})
    assert not scores_equal(a, {"piqa": {"acc_norm": 0.5, "n": 6}})
    assert not scores_equal(a, {"arc": {"acc": 0.5}})
    kl = {"calibration": {"kl": 0.1, "kl_stderr": 0.01, "ppl": 9.0, "nll": 2.2, "tokens": 254.0}}
    assert scores_equal(kl, {"calibration": {**kl["calibration"], "kl_stderr": None}})
    assert not scores_equal(kl, {"calibration": {**kl["calibration"], "ppl": 9.5}})


# ---------------------------------------------------------------------------------------------
# export order on a real run store


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("tiny-src") / "llama")


GENOMES = ([2, 4], [3, 5], [1, 2], [1, 4])


@pytest.fixture(scope="module")
def task_run_data(llama: Path) -> ScoredRun:
    """Real scores (with standard errors) of a few genomes of the tiny Llama, computed once."""
    return score_tasks(tiny_run_config(llama), list(GENOMES))


def _confirmed(label: str, role: str, dropped: list[int], value: float, rank: int = 0) -> Any:
    scores = {"hellaswag_offline": {"acc_norm": value, "acc_norm_stderr": 0.05, "n": 100}}
    held = {"piqa_offline": {"acc_norm": value - 0.1, "acc_norm_stderr": 0.05, "n": 100}}
    return confirmed_genome(label, role, rank, dropped, scores, held)


def _confirmed_run(data: ScoredRun) -> tuple[RunStore, list[list[int]]]:
    """A run whose confirmation reverses the search's top three; returns the confirmed order."""
    store = data.store(base_kind="mean")
    base = data.base
    search = [e.dropped for e in store.best_evaluations()]
    # An older confirmation that a later one replaces: it must not count.
    store.add_event(ConfirmationStarted(genomes=1, confirm_limit=50, tasks=["hellaswag_offline"]))
    store.add_event(_confirmed("finalist 1", "finalist", search[0], 0.9, 1))
    store.add_event(ReferenceScored(name="last_k", dropped=search[3], fitness=0.01, scores=base))
    store.add_event(
        ConfirmationStarted(
            genomes=4,
            confirm_limit=100,
            tasks=["hellaswag_offline"],
            holdout_tasks=["piqa_offline"],
        )
    )
    for rank, value in zip((1, 2, 3), (0.30, 0.35, 0.40), strict=True):
        store.add_event(_confirmed(f"finalist {rank}", "finalist", search[rank - 1], value, rank))
    store.add_event(_confirmed("last_k", "baseline", search[3], 0.31))
    store.add_event(_confirmed("base model", "base", [], 0.33))
    order = [search[2], search[1], search[0], search[3]]
    store.write_result({"dropped_layers": order[0], "picked_by": "confirmed"})
    return store, order


def test_export_defaults_to_the_confirmed_best(task_run_data: ScoredRun, tmp_path: Path) -> None:
    store, order = _confirmed_run(task_run_data)
    lines: list[tuple[str, str]] = []
    result = export_run(store.id, progress=lambda stage, msg: lines.append((stage, msg)))
    assert (
        result.plan.dropped == order[0]
        and result.plan.rank == 1
        and result.plan.ranking.order == "confirmed"
    )
    assert result.verified is True  # the stored scores carry stderr and n: values still match
    ver = result.verification
    assert ver is not None and ver.fitness_ok and ver.scores_export is not None
    assert set(ver.scores_export["hellaswag_offline"]) == {"acc_norm", "acc_norm_stderr", "n"}
    select = next(msg for stage, msg in lines if stage == "select")
    assert "rank 1/4 in confirmed order (confirmed finalist 1 of 3)" in select
    assert "the run's pick (confirmed best)" in select

    lineage = result.lineage
    assert lineage["run"]["order"] == "confirmed" and lineage["run"]["default_pick"] is True
    conf = lineage["confirmation"]
    assert conf["limit"] == 100 and conf["holdout_tasks"] == ["piqa_offline"]
    assert conf["pruned"]["confirmed"] == 0.40 and conf["base"]["confirmed"] == 0.33
    assert conf["pruned"]["confirmed_vs_base"] == "within noise"  # 0.07 < 2 x 0.0707
    assert [b["name"] for b in lineage["baselines"]] == ["last_k"]
    assert lineage["baselines"][0]["confirmation"]["confirmed"] == 0.31
    assert lineage["reproduce"][-1] == "gaprune-tui export RUN_ID"
    card = (result.path / "README.md").read_text()
    assert "within noise of the base model (difference +0.0700 ± 0.0707)" in card
    assert "hellaswag_offline (100 items)" in card and "piqa_offline (100 items)" in card
    assert "| last_k |" in card and "## Baselines" in card
    assert "better than the base" not in card
    assert json.loads((result.path / "gaprune.json").read_text())["run"]["order"] == "confirmed"


def test_rank_counts_in_confirmed_order(task_run_data: ScoredRun, tmp_path: Path) -> None:
    store, order = _confirmed_run(task_run_data)
    lines: list[tuple[str, str]] = []
    for rank in (1, 2, 3, 4):  # three confirmed finalists, then the search's ranking
        result = export_run(
            store.id,
            rank=rank,
            out=tmp_path / f"r{rank}",
            verify=False,
            progress=lambda stage, msg: lines.append((stage, msg)),
        )
        assert result.plan.dropped == order[rank - 1] and result.plan.rank == rank
        assert f"--rank {rank}" in result.lineage["reproduce"][-1]
    selects = [msg for stage, msg in lines if stage == "select"]
    assert "confirmed finalist 2 of 3" in selects[1]
    assert "after the 3 confirmed finalists, in the search's order" in selects[3]


def test_drop_names_the_genome_whatever_the_order(
    task_run_data: ScoredRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gaprune_tui.cli.main import main

    store, order = _confirmed_run(task_run_data)
    layers = ",".join(map(str, order[1]))
    out = tmp_path / "d"
    assert main(["export", store.id, "--drop", layers, "--no-verify", "--out", str(out)]) == 0
    assert json.loads((out / "gaprune.json").read_text())["dropped_layers"] == order[1]
    assert "exported rank 2 (confirmed order)" in capsys.readouterr().out
    with pytest.raises(ExportError, match="pass only one of them"):
        export_run(store.id, rank=1, dropped=order[1], verify=False)
    with pytest.raises(ExportError, match=r"no fully evaluated genome dropping layers \[0, 5\]"):
        export_run(store.id, dropped=[5, 0], verify=False)
    with pytest.raises(SystemExit) as usage:  # argparse: a usage error, exit status 2
        main(["export", store.id, "--drop", "3,x"])
    assert usage.value.code == 2
    assert "is not a list of layer indices: write them comma-separated" in capsys.readouterr().err


def test_without_confirmation_the_search_order_holds(
    task_run_data: ScoredRun, tmp_path: Path
) -> None:
    store = task_run_data.store(base_event=False)
    ranked = store.best_evaluations()
    store.write_result({"dropped_layers": ranked[0].dropped, "picked_by": "search"})
    result = export_run(store.id, out=tmp_path / "s", verify=False)
    assert result.plan.dropped == ranked[0].dropped and result.plan.ranking.order == "search"
    second = export_run(store.id, rank=2, out=tmp_path / "s2", verify=False)
    assert second.plan.dropped == ranked[1].dropped
    card = (second.path / "README.md").read_text()
    assert "rank 2/4 in the search's order (no confirmed finalists)" in card
    assert "Not confirmed" in card


# ---------------------------------------------------------------------------------------------
# KL runs: verification re-scores the export on the calibration text


@pytest.fixture(scope="module")
def kl_run_data(llama: Path) -> ScoredRun:
    """KL and perplexity of a few genomes of the tiny Llama on the bundled calibration text."""
    return score_kl(tiny_run_config(llama, fitness="kl", calibration_tokens=512), list(GENOMES[:2]))


@pytest.mark.parametrize("base_event", [True, False])
def test_kl_export_is_verified_on_the_calibration_text(
    kl_run_data: ScoredRun, tmp_path: Path, base_event: bool
) -> None:
    store = kl_run_data.store(base_event=base_event)
    best = store.best_evaluations()[0]  # lowest KL first
    assert best.fitness == min(g[2] for g in kl_run_data.genomes.values())
    lines: list[tuple[str, str]] = []
    result = export_run(
        store.id, out=tmp_path / "kl", progress=lambda stage, msg: lines.append((stage, msg))
    )
    assert result.plan.dropped == best.dropped and result.verified is True
    ver = result.verification
    assert ver is not None and ver.fitness_ok and ver.fitness_required
    assert ver.fitness_export == pytest.approx(best.fitness, abs=1e-12)
    assert ("rescore", "re-scoring the export on the run's calibration text") in lines
    assert result.lineage["scores"]["base"][fitness_kinds.CALIBRATION]["kl"] == pytest.approx(
        0.0, abs=1e-6
    )
    fit = result.lineage["fitness"]
    assert fit["kind"] == "kl" and fit["higher_is_better"] is False and fit["vs_base"] == "worse"
    card = (result.path / "README.md").read_text()
    assert "re-scored on the run's calibration text" in card and "reproduced" in card
    assert "worse than the base model beyond noise" in card
    assert "| calibration | kl | 508 |" in card  # n: 4 sequences x 127 scored tokens
