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

Prints one table per dtype: median seconds per genome after a warm-up, token positions pushed
through the decoder layers (padding included), the task scores (must be identical within a dtype),
genomes per hour; then, with both dtypes, one table of each row's fp32 and bf16 seconds and their
ratio (issue 14); plus a short torch.profiler summary of where C's time goes.

    .venv/bin/python bench/bench_scoring.py [--repeats 3] [--limit 40] [--quick]
        [--dtype float32|bfloat16|both] [--rows CD] [--no-profile]

``--dtype both`` (the default) runs every row in float32, then in bfloat16, on the same genome;
the scores must be identical across the rows of one dtype (C and D are the same computation with
and without cached states), not across dtypes (bfloat16 rounds differently).
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
from dataclasses import dataclass
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


@dataclass
class Row:
    """One method's measurement in one dtype."""

    name: str
    seconds: float
    positions: int
    scores: dict
    times: list[float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-a", type=int, default=2, help="runs of the slow method A")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--drop", default="20,24,27")
    parser.add_argument("--hflm-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="limit 5, one run each, no A")
    parser.add_argument(
        "--dtype", default="both", choices=("float32", "bfloat16", "both"), help="default: both"
    )
    parser.add_argument("--rows", default="ABCD", help="which methods to run, e.g. CD")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of C")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.repeats, args.repeats_a = 5, 1, 0
    return args


NAMES = ["hellaswag_offline", "openbookqa_offline"]


def measure(args: argparse.Namespace, dtype: str, taskset: Any) -> tuple[list[Row], Any]:
    """Rows A-D (those asked for; C and D always) on the embedded model loaded in ``dtype``."""
    import torch

    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm

    dropped = [int(x) for x in args.drop.split(",")]
    loaded = load_model("demo", dtype=dtype, device="cpu")
    rows_wanted = set(args.rows.upper())
    kept = [i for i in range(loaded.n_layers) if i not in set(dropped)]
    rows: list[Row] = []

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

    def add(name: str, fn: Callable[[], tuple[dict, int]], repeats: int, warmup: bool) -> None:
        med, (scores, tokens), times = timed(fn, repeats, warmup=warmup)
        rows.append(Row(name, med, tokens, scores, times))

    if args.repeats_a > 0 and "A" in rows_wanted:
        add(
            "A original (save+reload+simple_evaluate)",
            original_method(args, loaded, kept),
            args.repeats_a,
            False,
        )
    if "B" in rows_wanted:
        hflm = make_lm(loaded, "hflm", batch_size=args.hflm_batch)
        add(
            f"B HFLM in memory (batch {args.hflm_batch})",
            lambda: score_view(hflm),
            args.repeats,
            True,
        )
    # (C) FastLM, no prefix cache.
    fast = make_lm(loaded, "fast", prefix_cache=False)
    add("C FastLM", lambda: score_view(fast), args.repeats, True)
    # (D) FastLM with the base model's states cached, the genome itself unseen.
    cached = make_lm(loaded, "fast", prefix_cache=True)
    with torch.no_grad():
        taskset.evaluate(cached)  # the base model, as the engine's base_scores does
    add(
        "D FastLM, prefix-cache hit",
        lambda: score_view(cached, cached.cache.lru.clear),
        args.repeats,
        True,
    )
    profile_c = lambda: score_view(fast)  # noqa: E731 - the profile below reruns C
    return rows, (profile_c, cached.cache.used_bytes / 2**20)


def original_method(
    args: argparse.Namespace, loaded: Any, kept: list[int]
) -> Callable[[], tuple[dict, int]]:
    """(A) the original loop: save the pruned model, reload it, simple_evaluate by task name."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gaprune_tui.engine.tasks import bundled_tasks_dir

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
                tasks=NAMES,
                task_manager=manager,
                limit=args.limit,
                num_fewshot=0,
                bootstrap_iters=0,
                log_samples=False,
            )
            counter.close()
        scores = {n: {"acc_norm": round(out["results"][n]["acc_norm,none"], 6)} for n in NAMES}
        return scores, counter.positions

    return original


def print_rows(
    console: Any, args: argparse.Namespace, dtype: str, rows: list[Row], cache_mb: float
) -> bool:
    """One dtype's table; True when every row scored identically."""
    from rich.table import Table

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}"
    table = Table(
        title=(
            f"one genome (drop {args.drop}), SmolLM2-135M {dtype} CPU, {' + '.join(NAMES)}, "
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
    c_time = next(r.seconds for r in rows if r.name.startswith("C"))
    for r in rows:
        table.add_row(
            r.name,
            f"{r.seconds:.2f}",
            " ".join(f"{t:.1f}" for t in r.times),
            f"{r.positions / 1e6:.2f}M",
            ", ".join(
                f"{k.removesuffix('_offline')} {v['acc_norm']:.4f}" for k, v in r.scores.items()
            ),
            f"{3600 / r.seconds:.0f}",
            f"{r.seconds / c_time:.2f}x",
        )
    console.print(table)
    same = len({repr(sorted(r.scores.items())) for r in rows}) == 1
    console.print(
        f"{dtype}: scores identical across methods: {same}; prefix cache holds {cache_mb:.0f} MB"
    )
    seconds = {r.name[0]: r.seconds for r in rows}
    a_time, b_time, d_time = seconds.get("A"), seconds.get("B"), seconds["D"]
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
    return same


def print_ratio(console: Any, by_dtype: dict[str, list[Row]]) -> None:
    """Each row in float32 and bfloat16 side by side: the bfloat16 speed-up per method."""
    from rich.table import Table

    table = Table(title="float32 vs bfloat16, s/genome (median)")
    for col in ("method", "float32", "bfloat16", "fp32 / bf16", "scores equal across dtypes"):
        table.add_column(col)
    bf16 = {r.name: r for r in by_dtype["bfloat16"]}
    for r in by_dtype["float32"]:
        other = bf16.get(r.name)
        if other is None:
            continue
        table.add_row(
            r.name,
            f"{r.seconds:.2f}",
            f"{other.seconds:.2f}",
            f"{r.seconds / other.seconds:.2f}x",
            "yes" if r.scores == other.scores else "no",
        )
    console.print(table)


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))

    import torch
    from rich.console import Console

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.engine.tasks import build_tasks

    torch.set_num_threads(args.threads)
    console = Console(width=160)
    taskset = build_tasks(
        RunConfig(tasks=[TaskSpec(n) for n in NAMES], limit=args.limit).validate()
    )
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    by_dtype: dict[str, list[Row]] = {}
    same = True
    profile_c: Callable[[], Any] | None = None
    for dtype in dtypes:
        rows, (profile_fn, cache_mb) = measure(args, dtype, taskset)
        by_dtype[dtype] = rows
        same = print_rows(console, args, dtype, rows, cache_mb) and same
        profile_c = profile_c or profile_fn
    if len(by_dtype) == 2:
        print_ratio(console, by_dtype)
    if args.no_profile or profile_c is None:
        return 0 if same else 1
    # Where C's time goes (the first dtype's).
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profile_c()
    console.print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
