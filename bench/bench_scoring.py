"""Seconds per genome: the original method vs lm-eval's HFLM in memory vs FastLM (issue 5).

Workload: the embedded SmolLM2-135M-Instruct in fp32 on CPU, hellaswag_offline + openbookqa_offline,
0-shot, limit 40 each, one genome dropping layers {20, 24, 27}.

  (A) the original method per genome: write the pruned model to disk, reload it, and run
      ``lm_eval.simple_evaluate`` with tasks built by name (this uses ``save_pretrained`` of the
      layer view instead of a MergeKit passthrough rebuild: same files, and cheaper, so A is a
      lower bound of the original cost);
  (B) lm-eval's ``HFLM`` on the in-memory layer view, tasks built once;
  (C) ``FastLM`` on the in-memory layer view (prefix cache off);
  (D) ``FastLM`` on a prefix-cache hit: the base model's hidden states are cached (the engine scores
      the base model first), the genome itself has not been seen (its own entries are cleared).

Prints one table: median seconds per genome after a warm-up, token positions pushed through the
decoder layers (padding included), the task scores (must be identical), genomes per hour, plus a
short torch.profiler summary of where C's time goes.

    .venv/bin/python bench/bench_scoring.py [--repeats 3] [--limit 40] [--quick]
        [--dtype bfloat16] [--rows CD] [--no-profile]

``--dtype bfloat16`` runs every row in bfloat16 (issue 14); the scores must still be identical
across the rows run (C and D are the same computation with and without cached states).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


class Counter:
    """Counts token positions through every decoder layer of a model (padding included)."""

    def __init__(self, layers: Any) -> None:
        self.positions = 0
        self.handles = [layer.register_forward_pre_hook(self._hook) for layer in layers]

    def _hook(self, _module: Any, args: tuple) -> None:
        if args:
            self.positions += int(args[0].shape[0] * args[0].shape[1])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def timed(
    fn: Callable[[], Any], repeats: int, warmup: bool = True
) -> tuple[float, Any, list[float]]:
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-a", type=int, default=2, help="runs of the slow method A")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--drop", default="20,24,27")
    parser.add_argument("--hflm-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="limit 5, one run each, no A")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--rows", default="ABCD", help="which methods to run, e.g. CD")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of C")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.repeats, args.repeats_a = 5, 1, 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))

    import torch
    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.tasks import build_tasks, bundled_tasks_dir

    torch.set_num_threads(args.threads)
    console = Console(width=160)
    names = ["hellaswag_offline", "openbookqa_offline"]
    dropped = [int(x) for x in args.drop.split(",")]
    loaded = load_model("demo", dtype=args.dtype, device="cpu")
    dtype = str(loaded.dtype).removeprefix("torch.")
    rows_wanted = set(args.rows.upper())
    kept = [i for i in range(loaded.n_layers) if i not in set(dropped)]
    config = RunConfig(tasks=[TaskSpec(n) for n in names], limit=args.limit).validate()
    taskset = build_tasks(config)
    rows: list[tuple[str, float, int, dict, list[float]]] = []

    def score_view(lm: Any, before: Callable[[], None] | None = None) -> tuple[dict, int]:
        if before is not None:
            before()
        counter = Counter(loaded.view.base_layers)
        try:
            with loaded.view.view(kept), torch.no_grad():
                scores = taskset.evaluate(lm)
        finally:
            counter.close()
        return scores, counter.positions

    # (A) original: save the pruned model, reload it, simple_evaluate with tasks built by name.
    if args.repeats_a > 0 and "A" in rows_wanted:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from transformers import AutoModelForCausalLM, AutoTokenizer

        def original() -> tuple[dict, int]:
            with tempfile.TemporaryDirectory(prefix="gaprune-bench-a-") as tmp:
                with loaded.view.view(kept):
                    loaded.model.save_pretrained(tmp)
                loaded.tokenizer.save_pretrained(tmp)
                model = AutoModelForCausalLM.from_pretrained(tmp, dtype=loaded.dtype).eval()
                tokenizer = AutoTokenizer.from_pretrained(tmp)
                counter = Counter(model.model.layers)
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.hflm_batch)
                manager = TaskManager(include_path=str(bundled_tasks_dir()), include_defaults=False)
                out = simple_evaluate(
                    model=lm,
                    tasks=names,
                    task_manager=manager,
                    limit=args.limit,
                    num_fewshot=0,
                    bootstrap_iters=0,
                    log_samples=False,
                )
                counter.close()
            scores = {n: {"acc_norm": round(out["results"][n]["acc_norm,none"], 6)} for n in names}
            return scores, counter.positions

        med, (scores, tokens), times = timed(original, args.repeats_a, warmup=False)
        rows.append(("A original (save+reload+simple_evaluate)", med, tokens, scores, times))

    # (B) HFLM in memory.
    if "B" in rows_wanted:
        hflm = make_lm(loaded, "hflm", batch_size=args.hflm_batch)
        med, (scores, tokens), times = timed(lambda: score_view(hflm), args.repeats)
        rows.append((f"B HFLM in memory (batch {args.hflm_batch})", med, tokens, scores, times))

    # (C) FastLM, no prefix cache.
    fast = make_lm(loaded, "fast", prefix_cache=False)
    med, (scores, tokens), times = timed(lambda: score_view(fast), args.repeats)
    rows.append(("C FastLM", med, tokens, scores, times))

    # (D) FastLM with the base model's states cached, the genome itself unseen.
    cached = make_lm(loaded, "fast", prefix_cache=True)
    with torch.no_grad():
        taskset.evaluate(cached)  # the base model, as the engine's base_scores does
    med, (scores, tokens), times = timed(
        lambda: score_view(cached, cached.cache.lru.clear), args.repeats
    )
    rows.append(("D FastLM, prefix-cache hit", med, tokens, scores, times))
    cache_mb = cached.cache.used_bytes / 2**20

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}"
    table = Table(
        title=(
            f"one genome (drop {dropped}), SmolLM2-135M {dtype} CPU, {' + '.join(names)}, "
            f"0-shot, limit {args.limit} each — {machine}"
        )
    )
    for col in (
        "method",
        "s/genome (median)",
        "runs (s)",
        "layer x token positions",
        "scores",
        "genomes/hour",
        "vs C",
    ):
        table.add_column(col)
    c_time = next(r[1] for r in rows if r[0].startswith("C"))
    for name, med, tokens, scores, times in rows:
        table.add_row(
            name,
            f"{med:.2f}",
            " ".join(f"{t:.1f}" for t in times),
            f"{tokens / 1e6:.2f}M",
            ", ".join(
                f"{k.removesuffix('_offline')} {v['acc_norm']:.4f}" for k, v in scores.items()
            ),
            f"{3600 / med:.0f}",
            f"{med / c_time:.2f}x",
        )
    console.print(table)
    same = len({repr(sorted(r[3].items())) for r in rows}) == 1
    console.print(f"scores identical across methods: {same}; prefix cache holds {cache_mb:.0f} MB")
    a_time = next((r[1] for r in rows if r[0].startswith("A")), None)
    b_time = next((r[1] for r in rows if r[0].startswith("B")), None)
    d_time = next(r[1] for r in rows if r[0].startswith("D"))
    n_genomes = 20 * 5
    console.print(
        f"search of population 20 x 5 generations (<= {n_genomes} distinct genomes): "
        + (f"old path {n_genomes * a_time / 3600:.2f} h, " if a_time else "")
        + (f"HFLM {n_genomes * b_time / 3600:.2f} h, " if b_time else "")
        + f"FastLM {n_genomes * c_time / 3600:.2f} h "
        f"(cold) to {n_genomes * d_time / 3600:.2f} h (every genome a base-prefix hit)"
        + (f"; B/C {b_time / c_time:.2f}x" if b_time else "")
        + (f", A/C {a_time / c_time:.2f}x" if a_time else "")
    )

    if args.no_profile:
        return 0 if same else 1
    # Where C's time goes.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        score_view(fast)
    console.print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
