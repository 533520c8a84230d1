"""bfloat16 against float32, per item: the contract bfloat16 scoring lives under.

In float32 the fast scorer's numbers are lm-eval's HFLM's (``tests/test_scores_proven.py``). In
bfloat16 no two scorers agree exactly, so the question is how many answers move: for each item of a
multiple-choice task the answer is the choice with the highest log-likelihood (``argmax``, first
on ties, as lm-eval's ``acc`` picks it), and an item *flips* when its bfloat16 answer differs from
the float32 one. The float32 answers are the fast scorer's, which are HFLM's.

The contract (``contract_violations``): per task and layer view, the fast scorer in bfloat16 flips
at most one item more than HFLM in bfloat16 with its default ``softmax_dtype`` (log-softmax in the
model's dtype); and the KL fitness in bfloat16 ranks genomes as in float32 (``kl_rank_agreement``,
Spearman's rho over the genomes). HFLM with ``softmax_dtype=float32`` is measured too: it is what
the fast scorer does (float32 log-softmax of bfloat16 logits).

Used by ``bench/bench_bf16.py`` (the README's flip table) and the tests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gaprune_tui.core import stats
from gaprune_tui.engine.scoring import make_lm

Answers = dict[str, dict[int, int]]  # task -> doc id -> chosen choice index


def task_requests(taskset: Any, limit: int | None) -> dict[str, list[Any]]:
    """lm-eval's ``loglikelihood`` instances of each task's first ``limit`` items."""
    out = {}
    for rt in taskset.tasks:
        rt.task.build_all_requests(limit=limit, rank=0, world_size=1)
        out[rt.name] = list(rt.task.instances)
    return out


def answers(lm: Any, requests: Mapping[str, Sequence[Any]]) -> Answers:
    """Each item's answer under ``lm``: the index of its highest log-likelihood choice."""
    out: Answers = {}
    for task, reqs in requests.items():
        results = lm.loglikelihood(list(reqs), disable_tqdm=True)
        lls: dict[int, dict[int, float]] = {}
        for req, (ll, _greedy) in zip(reqs, results, strict=True):
            lls.setdefault(int(req.doc_id), {})[int(req.idx)] = float(ll)
        out[task] = {doc: _argmax(choices) for doc, choices in lls.items()}
    return out


def _argmax(choices: dict[int, float]) -> int:
    """The choice with the highest log-likelihood; the first of equal maxima, like numpy.argmax."""
    order = sorted(choices)
    return max(order, key=choices.__getitem__)


def count_flips(reference: Answers, other: Answers) -> dict[str, int]:
    """Per task, the items whose answer in ``other`` differs from ``reference``'s."""
    return {
        task: sum(other[task][doc] != ans for doc, ans in ref.items())
        for task, ref in reference.items()
    }


@dataclass(frozen=True)
class FlipRow:
    """One task on one layer view: items compared and how many flip against float32."""

    view: str
    task: str
    items: int
    fast: int  # the fast scorer in bfloat16
    hflm: int  # HFLM in bfloat16, default softmax_dtype (the model's)
    hflm_fp32_softmax: int  # HFLM in bfloat16, softmax_dtype=float32
    start: int = 0  # the first item's index (``flip_rows`` with ``chunk``)


def hflm_pair(loaded: Any, batch_size: int = 16) -> tuple[Any, Any]:
    """lm-eval's HFLM on ``loaded`` twice: default ``softmax_dtype`` (the model's), and float32.

    The two differ only in the log-softmax applied to the model's logits, so the second reuses
    the first's model call for the same input batch (the same requests give the same batches):
    call the first, then the second, on the same requests and layer view. Its own call runs when
    the first did not make it."""
    from lm_eval.models.huggingface import HFLM

    memo: dict[tuple[tuple[int, ...], bytes], torch.Tensor] = {}

    def key(inps: torch.Tensor) -> tuple[tuple[int, ...], bytes]:
        return tuple(inps.shape), inps.cpu().numpy().tobytes()

    class _Recording(HFLM):
        def _model_call(self, inps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = super()._model_call(inps, *args, **kwargs)
            memo[key(inps)] = out
            return out

    class _Replaying(HFLM):
        def _model_call(self, inps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = memo.pop(key(inps), None)
            return out if out is not None else super()._model_call(inps, *args, **kwargs)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = True) -> list[Any]:
            try:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            finally:
                memo.clear()

    kwargs = {"pretrained": loaded.model, "tokenizer": loaded.tokenizer, "batch_size": batch_size}
    return _Recording(**kwargs), _Replaying(softmax_dtype="float32", **kwargs)


def flip_rows(
    fp32: Any,
    bf16: Any,
    taskset: Any,
    views: Mapping[str, Sequence[int] | None],
    limit: int | None,
    *,
    hflm_batch: int = 16,
    chunk: int | None = None,
) -> Iterator[FlipRow]:
    """Flips against float32 for each task and named layer view (``None``: all layers), task by
    task, a row at a time (a caller can write each as it comes).

    ``fp32`` and ``bf16`` are the same model loaded in each dtype (``model``, ``tokenizer``,
    ``view``); the float32 answers are the fast scorer's. With ``chunk``, items go in rounds of
    ``chunk`` per task (rows for items 0.., then chunk.., ...), so a run cut short has covered every
    task alike; ``merge_rows`` sums the rows of a task and view."""
    requests = task_requests(taskset, limit)
    fast32, fast16 = make_lm(fp32, "fast"), make_lm(bf16, "fast")
    hflm, hflm32 = hflm_pair(bf16, hflm_batch)
    parts: list[tuple[str, int, list[Any]]] = []
    for task, reqs in requests.items():
        docs = sorted({int(r.doc_id) for r in reqs})
        step = chunk or max(1, len(docs))
        for i in range(0, len(docs), step):
            ids = set(docs[i : i + step])
            parts.append((task, i, [r for r in reqs if int(r.doc_id) in ids]))
    parts.sort(key=lambda p: p[1])  # stable: round by round, tasks in order within a round
    for task, first, reqs in parts:
        one = {task: reqs}
        for name, kept in views.items():
            layers = list(range(fp32.view.n_layers)) if kept is None else list(kept)
            with fp32.view.view(layers), bf16.view.view(layers), torch.inference_mode():
                got = {
                    key: answers(lm, one)[task]
                    for key, lm in [
                        ("fp32", fast32),
                        ("fast", fast16),
                        ("hflm", hflm),
                        ("hflm32", hflm32),
                    ]
                }
            ref = got["fp32"]
            flips = {key: count_flips({task: ref}, {task: got[key]})[task] for key in got}
            yield FlipRow(
                view=name,
                task=task,
                items=len(ref),
                fast=flips["fast"],
                hflm=flips["hflm"],
                hflm_fp32_softmax=flips["hflm32"],
                start=first,
            )


def merge_rows(rows: Sequence[FlipRow]) -> list[FlipRow]:
    """One row per view and task: the sums of its rows (chunks), in first-seen order."""
    out: dict[tuple[str, str], FlipRow] = {}
    for r in rows:
        seen = out.get((r.view, r.task))
        if seen is None:
            out[(r.view, r.task)] = dataclasses.replace(r, start=0)
            continue
        out[(r.view, r.task)] = dataclasses.replace(
            seen,
            items=seen.items + r.items,
            fast=seen.fast + r.fast,
            hflm=seen.hflm + r.hflm,
            hflm_fp32_softmax=seen.hflm_fp32_softmax + r.hflm_fp32_softmax,
        )
    return list(out.values())


def contract_violations(rows: Sequence[FlipRow], slack: int = 1) -> list[str]:
    """The rows where the fast scorer flips more than HFLM's (default softmax) flips + ``slack``."""
    return [
        f"{r.view} {r.task}: fast bf16 flips {r.fast} of {r.items}, HFLM bf16 {r.hflm} (+{slack})"
        for r in rows
        if r.fast > r.hflm + slack
    ]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank): ``stats.spearman``, with NaN
    where it is undefined (a constant side)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of the same length, at least 2")
    rho = stats.spearman(a, b)
    return float("nan") if rho is None else rho


def random_genomes(n_layers: int, n: int, drop: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` distinct kept-layer sets, each dropping ``drop`` random layers (seeded)."""
    if not 0 < drop < n_layers or n > math.comb(n_layers, drop):
        raise ValueError(f"cannot draw {n} distinct genomes dropping {drop} of {n_layers} layers")
    g = torch.Generator().manual_seed(seed)
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < n:
        dropped = set(torch.randperm(n_layers, generator=g)[:drop].tolist())
        seen.setdefault(tuple(i for i in range(n_layers) if i not in dropped), None)
    return list(seen)


def kl_fitness(loaded: Any, calibration: Any, genomes: Sequence[Sequence[int]]) -> list[float]:
    """The KL fitness (KL to the same model's base, in the model's dtype) of each genome."""
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer

    lm = make_lm(loaded, "fast")
    base = BaseDistributions.compute(loaded, calibration, lm=lm)
    scorer = KLScorer(loaded, calibration, base, lm=lm)
    return [scorer.score(kept)["kl"] for kept in genomes]


def kl_rank_agreement(
    fp32: Any, bf16: Any, calibration: Any, genomes: Sequence[Sequence[int]]
) -> tuple[list[float], list[float], float]:
    """KL fitness of ``genomes`` in float32 and in bfloat16, and Spearman's rho between them."""
    kl32 = kl_fitness(fp32, calibration, genomes)
    kl16 = kl_fitness(bf16, calibration, genomes)
    return kl32, kl16, spearman(kl32, kl16)
