"""Seconds per genome for the engine's fitness evaluation on the embedded model.

Workload (the demo search of docs/performance.md): SmolLM2-135M-Instruct fp32, hellaswag_offline +
openbookqa_offline, 0-shot, limit 20 each, genomes of 4 dropped layers. As the engine does, each
scorer first scores the base model (warm-up; it also fills the fast scorer's prefix cache), then
``Evaluator.score`` (memo bypassed) times --genomes distinct random genomes drawn with a fixed seed
from layers 2-29, so no timing is a repeat of an earlier genome. Rows: the fast scorer with its
prefix cache off (cold), with it on (as in a search), and lm-eval's HFLM. Prints a table with the
machine it ran on.

    .venv/bin/python bench/bench_genome.py [--genomes 5] [--limit 20]
"""

from __future__ import annotations

import statistics

import benchkit


def main() -> int:
    args = benchkit.parser(__doc__, genomes=5, limit=20, prune=4).parse_args()
    benchkit.offline_env()

    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.core.config import RunConfig
    from gaprune_tui.core.store import Memo
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.search import fitness_of
    from gaprune_tui.engine.tasks import build_tasks

    demo = benchkit.load_demo(args.genomes, args.prune)
    loaded, genomes, n = demo.loaded, demo.genomes, demo.loaded.n_layers

    table = Table(title=f"one fitness evaluation: {args.prune} layers dropped, limit {args.limit}")
    for col in ("scorer", "s/genome (median)", "per genome", "mean fitness"):
        table.add_column(col)
    rows = [("fast, prefix cache off", "fast", False), ("fast (default)", "fast", True)]
    rows.append(("lm-eval HFLM", "hflm", False))
    fitness_by_row = []
    for label, scorer, prefix_cache in rows:
        config = RunConfig(
            limit=args.limit, prune=args.prune, scorer=scorer, prefix_cache=prefix_cache
        ).validate()
        evaluator = Evaluator(loaded, build_tasks(config), config, Memo())
        evaluator.score(list(range(n)))  # the base model, as the engine scores it first
        times, fits = [], []
        for dropped in genomes:
            scores, seconds = evaluator.score(demo.kept(dropped))
            times.append(seconds)
            fits.append(fitness_of(scores, "squared_mean"))
        fitness_by_row.append(fits)
        table.add_row(
            label,
            f"{statistics.median(times):.2f}",
            " ".join(f"{t:.2f}" for t in times),
            f"{statistics.mean(fits):.4f}",
        )
    console = Console(width=160)
    console.print(table)
    same = all(f == fitness_by_row[0] for f in fitness_by_row)
    console.print(f"genomes (dropped): {genomes}; identical fitness across scorers: {same}")
    console.print(benchkit.machine(demo.threads, demo.load_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
