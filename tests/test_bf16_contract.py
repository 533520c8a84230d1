"""The bfloat16 contract (``engine/flips.py``): per task, the fast scorer's bfloat16 answers flip
against the float32 answers no more than lm-eval's HFLM's bfloat16 answers do (one item of slack),
and the KL fitness ranks genomes in bfloat16 as in float32.

Runs on any CPU: without native bfloat16 the same numbers come out, only slower. A tiny Llama
(random weights, so near-ties are rare and few items flip) in both dtypes; the embedded model on all
eight bundled tasks at a small limit in the slow suite (the README's flip table is the same
measurement at a larger limit, ``bench/bench_bf16.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cores import cores
from tiny_models import build_tiny

from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.tasknames import bundled_task_names
from gaprune_tui.engine import flips
from gaprune_tui.engine.calibration import DEFAULT_CALIBRATION, load_calibration
from gaprune_tui.engine.model import load_model
from gaprune_tui.engine.tasks import build_tasks

# The eight bundled offline tasks.
ALL_TASKS = bundled_task_names()


def _tasks(names: list[str], limit: int) -> Any:
    return build_tasks(RunConfig(tasks=[TaskSpec(n) for n in names], limit=limit).validate())


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    torch.set_num_threads(cores())
    path = build_tiny("llama", tmp_path_factory.mktemp("llama"), n_layers=8)
    return (
        load_model(str(path), dtype="float32", device="cpu"),
        load_model(str(path), dtype="bfloat16", device="cpu"),
    )


def test_tiny_flips_within_the_contract_in_both_dtypes(tiny_pair: tuple[Any, Any]) -> None:
    fp32, bf16 = tiny_pair
    assert bf16.dtype == torch.bfloat16
    names = ["hellaswag_offline", "winogrande_offline"]
    views = {"base": None, "drop [2,5]": [0, 1, 3, 4, 6, 7]}
    limit = 4
    taskset = _tasks(names, limit)
    rows = list(flips.flip_rows(fp32, bf16, taskset, views, limit, chunk=2))
    merged = flips.merge_rows(rows)
    assert [(r.view, r.task) for r in merged] == [(v, t) for t in names for v in views]
    assert all(r.items == limit for r in merged)
    assert flips.contract_violations(merged) == []
    # float32 against itself through the same path: the fast scorer and HFLM (either softmax
    # dtype) give the float32 answers exactly, so nothing flips.
    same = flips.merge_rows(list(flips.flip_rows(fp32, fp32, taskset, views, 2)))
    assert all(r.items == 2 for r in same)
    assert [(r.fast, r.hflm, r.hflm_fp32_softmax) for r in same] == [(0, 0, 0)] * len(same)


def test_tiny_kl_fitness_ranks_genomes_alike(tiny_pair: tuple[Any, Any]) -> None:
    fp32, bf16 = tiny_pair
    genomes = flips.random_genomes(fp32.view.n_layers, 20, drop=2)
    assert len(set(genomes)) == 20
    cal = load_calibration(DEFAULT_CALIBRATION, fp32.tokenizer, n_tokens=256)
    kl32, kl16, rho = flips.kl_rank_agreement(fp32, bf16, cal, genomes)
    assert kl32 != kl16  # bfloat16 really moved the values
    assert rho >= 0.9, (rho, kl32, kl16)


def test_contract_and_merge_arithmetic() -> None:
    row = flips.FlipRow("base", "piqa", 5, fast=2, hflm=1, hflm_fp32_softmax=0)
    more = flips.FlipRow("base", "piqa", 5, fast=1, hflm=0, hflm_fp32_softmax=1, start=5)
    (merged,) = flips.merge_rows([row, more])
    assert (merged.items, merged.fast, merged.hflm, merged.hflm_fp32_softmax) == (10, 3, 1, 1)
    assert flips.contract_violations([row]) == []  # one item of slack
    assert flips.contract_violations([merged]) == [
        "base piqa: fast bf16 flips 3 of 10, HFLM bf16 1 (+1)"
    ]
    assert flips.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert flips.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert flips.spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share a rank
    with pytest.raises(ValueError, match="cannot draw 7 distinct genomes"):
        flips.random_genomes(4, 7, drop=2)


@pytest.mark.slow
def test_embedded_flips_within_the_contract_on_all_tasks(embedded: Any) -> None:
    """SmolLM2-135M, all eight bundled tasks, 2 items each, on a 4-layer-pruned view (what a
    search scores, through the layer view; the unpruned view in both dtypes is the tiny model's
    test above: the embedded base view was dropped here for the suite's time, ~80 s of 2 cores,
    bfloat16 being emulated on a CPU without native support)."""
    bf16 = load_model("demo", dtype="bfloat16", device="cpu")
    n = embedded.n_layers
    views = {"drop [13,14,15,17]": [i for i in range(n) if i not in (13, 14, 15, 17)]}
    limit = 2
    merged = flips.merge_rows(
        list(flips.flip_rows(embedded, bf16, _tasks(ALL_TASKS, limit), views, limit))
    )
    assert len(merged) == len(ALL_TASKS) * len(views)
    assert all(r.items == limit for r in merged)
    assert flips.contract_violations(merged) == []
