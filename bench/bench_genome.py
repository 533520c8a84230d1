"""Seconds per genome for the engine's fitness evaluation on the embedded model.

Workload (the README's demo search): SmolLM2-135M-Instruct fp32, hellaswag_offline +
openbookqa_offline, 0-shot, limit 20 each, dropping 4 layers ({20, 24, 27, 29} unless --drop).
Times ``Evaluator.score`` (memo bypassed) after one warm-up, for each scorer, and prints a table
with the machine it ran on.

    .venv/bin/python bench/bench_genome.py [--repeats 3] [--limit 20] [--scorers fast,hflm]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--drop", default="20,24,27,29")
    parser.add_argument("--scorers", default="fast,hflm")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))

    import torch
    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.config import RunConfig
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.search import fitness_of
    from gaprune_tui.engine.tasks import build_tasks
    from gaprune_tui.engine.worker import set_threads
    from gaprune_tui.store import Memo

    threads = set_threads()
    dropped = [int(x) for x in args.drop.split(",")]
    t0 = time.perf_counter()
    loaded = load_model("demo", dtype="float32", device="cpu")
    load_s = time.perf_counter() - t0
    kept = [i for i in range(loaded.n_layers) if i not in set(dropped)]

    table = Table(title=f"one fitness evaluation, drop {dropped}, limit {args.limit} per task")
    for col in ("scorer", "s/genome (median)", "runs", "fitness", "scores"):
        table.add_column(col)
    for scorer in args.scorers.split(","):
        config = RunConfig(limit=args.limit, prune=len(dropped), scorer=scorer).validate()
        taskset = build_tasks(config)
        evaluator = Evaluator(loaded, taskset, config, Memo())
        scores, _ = evaluator.score(kept)  # warm-up: tokenisation, caches, first-call costs
        times = []
        for _ in range(args.repeats):
            scores, seconds = evaluator.score(kept)
            times.append(seconds)
        table.add_row(
            scorer,
            f"{statistics.median(times):.2f}",
            ", ".join(f"{t:.2f}" for t in times),
            f"{fitness_of(scores, 'squared_mean'):.4f}",
            "  ".join(f"{t} {next(iter(m.values())):.3f}" for t, m in scores.items()),
        )
    console = Console()
    console.print(table)
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({threads} threads), python {sys.version.split()[0]}; model load {load_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
