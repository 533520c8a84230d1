"""A whole search, per scorer: genomes per hour and seconds per genome as a real run spends them.

Workload: the embedded SmolLM2-135M-Instruct in fp32 on CPU, hellaswag_offline + openbookqa_offline,
0-shot, limit 40 each, population 20 x 5 generations, 4 layers dropped, seed 0 (``--population``,
``--generations``, ``--limit``, ``--prune`` change it). For each scorer the engine's own pieces run
as the worker runs them: the base model is scored first, then ``Search`` drives ``Evaluator`` with
a fresh, private memo, so a genome repeated across generations is a memo hit for every scorer alike
and only distinct genomes are timed. The scores decide the GA's path, so identical scores mean the
same genomes, the same best genome and the same best fitness: the bench checks it.

Rows: the fast scorer as the engine runs it (prefix cache on, tree order per generation), the fast
scorer with its prefix cache off (cold every time), and lm-eval's HFLM. The original method (A:
rebuild on disk + reload + ``simple_evaluate``) is too slow to run whole here; its per-genome cost
is measured by ``bench/bench_scoring.py`` and docs/performance.md quotes both.

    .venv/bin/python bench/bench_search.py [--scorers fast,fast-cold,hflm] [--population 20] ...
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import benchkit

ROWS = {
    "fast": ("fast (default)", "fast", True),
    "fast-cold": ("fast, cache off", "fast", False),
    "hflm": ("lm-eval HFLM", "hflm", False),
}


def main() -> int:
    scorers = "fast,fast-cold,hflm"
    parser = benchkit.parser(
        __doc__, scorers=scorers, population=20, generations=5, limit=40, prune=4, seed=0
    )
    args = parser.parse_args()
    wanted = [s.strip() for s in args.scorers.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ROWS]
    if unknown:
        parser.error(f"unknown scorer {unknown[0]!r}: use one of {', '.join(ROWS)}")
    benchkit.offline_env()
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's per-task progress bars

    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.core.events import GenerationFinished, SearchFinished
    from gaprune_tui.core.store import Memo
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.search import Search
    from gaprune_tui.engine.setup import set_threads
    from gaprune_tui.engine.tasks import build_tasks

    console = Console(width=150)
    threads = set_threads()
    loaded = load_model("demo", dtype="float32", device="cpu")
    n = loaded.n_layers
    table = Table(
        title=(
            f"whole search: population {args.population} x {args.generations} generations, "
            f"{args.prune} layers dropped, limit {args.limit} per task"
        )
    )
    for col in (
        "scorer",
        "distinct genomes",
        "memo hits",
        "eval s",
        "s/genome",
        "genomes/h",
        "base model s",
        "best dropped",
        "best fitness",
    ):
        table.add_column(col)
    results = {}
    for key in wanted:
        label, scorer, prefix_cache = ROWS[key]
        config = RunConfig(
            tasks=[TaskSpec("hellaswag_offline"), TaskSpec("openbookqa_offline")],
            limit=args.limit,
            prune=args.prune,
            population=args.population,
            generations=args.generations,
            seed=args.seed,
            scorer=scorer,
            prefix_cache=prefix_cache,
        ).validate()
        with tempfile.TemporaryDirectory() as tmp:
            evaluator = Evaluator(loaded, build_tasks(config), config, Memo(Path(tmp) / "memo.db"))
            t0 = time.perf_counter()
            evaluator.score(list(range(n)))  # the worker scores the base model first
            base_s = time.perf_counter() - t0
            evaluator.eval_seconds = 0.0
            final = None
            for event in Search(config, n, evaluator).run():
                if isinstance(event, GenerationFinished):
                    console.print(
                        f"  {key}: generation {event.generation} done, "
                        f"{evaluator.evaluations} genomes, {evaluator.eval_seconds:.0f} s"
                    )
                final = event
            assert isinstance(final, SearchFinished)
            per = evaluator.eval_seconds / max(1, evaluator.evaluations)
            best = final.hall_of_fame[0]["dropped"]
            fitness = final.hall_of_fame[0]["fitness"]
            results[key] = (evaluator.evaluations, per, best, fitness)
            table.add_row(
                label,
                str(evaluator.evaluations),
                str(evaluator.cache_hits),
                f"{evaluator.eval_seconds:.0f}",
                f"{per:.2f}",
                f"{3600 / per:.0f}",
                f"{base_s:.1f}",
                str(best),
                f"{fitness:.6f}",
            )
    console.print(table)
    if "fast" in results and "hflm" in results:
        ratio = results["hflm"][1] / results["fast"][1]
        console.print(f"HFLM s/genome / fast s/genome = {ratio:.2f}x")
    same = len({(r[0], tuple(r[2]), r[3]) for r in results.values()}) == 1
    console.print(f"same genomes, best genome and best fitness across scorers: {same}")
    console.print(benchkit.machine(threads))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
