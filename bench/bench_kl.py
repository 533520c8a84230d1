"""Seconds for the KL fitness on the embedded model, and how tight the top-K bound is.

Workload: SmolLM2-135M-Instruct fp32 on the CPU, the offline calibration set (--tokens cut into
sequences of --seq-len), genomes of --prune dropped layers drawn with a fixed seed from layers 2-29
(as bench/bench_genome.py). For each calibration size: the base pass (``BaseDistributions.compute``,
which also fills the prefix cache) and per-genome ``KLScorer.score`` with the prefix cache on (as
in a search) and off. Then, on the first calibration size, the top-K KL for several K against the
full-vocabulary KL computed directly from the model's logits (mean over the genomes of KL_K / KL).

    .venv/bin/python bench/bench_kl.py [--genomes 3] [--sizes 2048x128,1024x128,2048x256] [--top-k 256]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import benchkit


def _full_kl(loaded: Any, ids: Any, kept: list[int], base_logp: Any) -> float:
    """Mean full-vocabulary KL(base || kept) over the scored positions, straight from logits."""
    import torch

    total, count = 0.0, 0
    with loaded.view.view(kept), torch.inference_mode():
        for s in range(ids.shape[0]):
            logits = loaded.model(input_ids=ids[s : s + 1]).logits[0, :-1]
            q = torch.log_softmax(logits.float(), -1)
            p = base_logp[s]
            total += float((p.exp() * (p - q)).sum())
            count += q.shape[0]
    return total / count


def _base_logp(loaded: Any, ids: Any) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [
            torch.log_softmax(loaded.model(input_ids=ids[s : s + 1]).logits[0, :-1].float(), -1)
            for s in range(ids.shape[0])
        ]


def main() -> int:
    args = benchkit.parser(
        __doc__,
        genomes=3,
        prune=4,
        sizes="2048x128,1024x128,2048x256",
        top_k=256,
        bound_k="64,256,1024",
    ).parse_args()
    benchkit.offline_env()

    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.scoring import make_lm

    demo = benchkit.load_demo(args.genomes, args.prune)
    loaded, genomes = demo.loaded, demo.genomes
    kept_sets = [demo.kept(d) for d in genomes]
    console = Console(width=160)

    table = Table(title=f"KL fitness: {args.prune} layers dropped, top-{args.top_k}, CPU fp32")
    for col in ("calibration", "base pass s", "s/genome cache on", "s/genome cache off"):
        table.add_column(col)
    table.add_column("KL ± stderr, ppl ± stderr (per genome)")
    first_cal = None
    for size in args.sizes.split(","):
        tokens, seq_len = (int(x) for x in size.split("x"))
        cal = load_calibration("offline", loaded.tokenizer, tokens, seq_len)
        first_cal = first_cal or cal
        row = [f"{cal.n_sequences} x {cal.seq_len}"]
        results = []
        for prefix_cache in (True, False):
            lm = make_lm(loaded, "fast", prefix_cache=prefix_cache)
            t = time.perf_counter()
            base = BaseDistributions.compute(loaded, cal, args.top_k, lm=lm)
            base_s = time.perf_counter() - t
            scorer = KLScorer(loaded, cal, base, lm=lm)
            times = []
            results = []
            for kept in kept_sets:
                t = time.perf_counter()
                results.append(scorer.score(kept))
                times.append(time.perf_counter() - t)
            if prefix_cache:
                row.append(f"{base_s:.2f}")
            row.append(f"{statistics.median(times):.2f}")
        row.append(
            "; ".join(
                f"{r['kl']:.3f}±{r['kl_stderr']:.3f}, {r['ppl']:.1f}±{r['ppl_stderr']:.1f}"
                for r in results
            )
        )
        table.add_row(*row)
        console.print("done:", " | ".join(row), style="dim")
    console.print(table)

    assert first_cal is not None
    ids = first_cal.input_ids
    base_logp = _base_logp(loaded, ids)
    full = [_full_kl(loaded, ids, kept, base_logp) for kept in kept_sets]
    del base_logp
    bound = Table(title=f"top-K bound on {first_cal.n_sequences} x {first_cal.seq_len} tokens")
    for col in ("K", "base MB", "KL_K / full KL (mean)", "min"):
        bound.add_column(col)
    lm = make_lm(loaded, "fast")
    for k in (int(x) for x in args.bound_k.split(",")):
        base = BaseDistributions.compute(loaded, first_cal, k, lm=lm)
        scorer = KLScorer(loaded, first_cal, base, lm=lm)
        ratios = [scorer.score(kept)["kl"] / f for kept, f in zip(kept_sets, full, strict=True)]
        console.print(f"done: K={k} ratios {[round(r, 4) for r in ratios]}", style="dim")
        bound.add_row(
            str(k),
            f"{base.nbytes / 2**20:.1f}",
            f"{statistics.mean(ratios):.4f}",
            f"{min(ratios):.4f}",
        )
    console.print(bound)
    console.print(
        f"genomes (dropped): {genomes}; full-vocabulary KL: {[round(f, 4) for f in full]}"
    )
    console.print(benchkit.machine(demo.threads, demo.load_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
