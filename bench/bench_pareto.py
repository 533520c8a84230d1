"""One Pareto run against four single-k runs with the same budget: issue 11's measurement.

Workload: the embedded SmolLM2-135M-Instruct (30 layers, 2 protected) in fp32 on the CPU, through
the engine's ``Search`` and the evaluators of ``bench_quality.py`` (same tasks, calibration and
persistent memo, ``--dir``, default ``bench/.quality``), for each fitness kind in ``--kinds``:

* single-k: one GA per k in {2, 4, 6, 8} at population ``--population`` (8) and ``--generations``
  (3), seed 0: its best genome per k;
* Pareto: one NSGA-II run over ``--prune-range 2:8`` with the population and generations chosen so
  that its evaluation budget (population x (generations + 1)) equals the four single runs' sum;
  its front member at each of those k.

Reported per k: the single run's best against the front member (fitness ± standard error, and
whether the difference is within noise), the distinct genomes each side evaluated, and the
hypervolume of each side's four points (k = 2, 4, 6, 8; common reference: the worst fitness either
side saw, k = 1) per distinct evaluation. A memo hit counts as an evaluation of the run that asked
for it (the runs share the memo only to save time).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_pareto.py [--kinds kl,squared_mean]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import benchkit  # noqa: E402

KS = (2, 4, 6, 8)


def run_search(bench: Any, kind: str, **shape: Any) -> tuple[list[tuple[list[int], float]], int]:
    """One search with the given shape: every (dropped, fitness) it evaluated, in order, and the
    number of distinct genomes."""
    from bench_quality import Counting, search_config

    from gaprune_tui.core.events import EvaluationFinished
    from gaprune_tui.engine.search import Search

    config = search_config(kind, **shape)
    counting = Counting(bench.kl if kind in ("kl", "ppl") else bench.task20)
    seen: list[tuple[list[int], float]] = []
    for event in Search(config, bench.n, counting).run():
        if isinstance(event, EvaluationFinished) and event.fidelity == "full":
            seen.append((list(event.dropped), event.fitness))
    return seen, len(counting.seen)


def stderr_of(bench: Any, kind: str, dropped: list[int]) -> float | None:
    from gaprune_tui.core.fitness import fitness_stderr

    evaluator = bench.kl if kind in ("kl", "ppl") else bench.task20
    return fitness_stderr(evaluator(dropped, None).scores, kind)


def measure(bench: Any, kind: str, population: int, generations: int) -> dict[str, Any]:
    key = f"pareto:{kind}:{population}x{generations}"
    if key in bench.results:
        return bench.results[key]
    out: dict[str, Any] = {"single": {}, "single_distinct": 0}
    start = time.perf_counter()
    for k in KS:
        seen, distinct = run_search(
            bench, kind, prune=k, population=population, generations=generations
        )
        best = (
            min(seen, key=lambda s: s[1])
            if kind in ("kl", "ppl")
            else max(seen, key=lambda s: s[1])
        )
        out["single"][str(k)] = {"dropped": best[0], "fitness": best[1], "seen": seen}
        out["single_distinct"] += distinct
        benchkit_log(f"{kind} single k={k}: {best} ({distinct} distinct)")
    out["single_seconds"] = time.perf_counter() - start
    budget = len(KS) * population * (generations + 1)
    p_pop = 4 * population
    p_gens = max(1, round(budget / p_pop) - 1)
    start = time.perf_counter()
    seen, distinct = run_search(
        bench,
        kind,
        objective="pareto",
        prune_range=[KS[0], KS[-1]],
        population=p_pop,
        generations=p_gens,
    )
    out["pareto"] = {"seen": seen, "distinct": distinct, "shape": [p_pop, p_gens]}
    out["pareto_seconds"] = time.perf_counter() - start
    benchkit_log(f"{kind} pareto {p_pop}x{p_gens}: {distinct} distinct")
    bench.results[key] = out
    bench.save()
    return out


def benchkit_log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(bench: Any, kind: str, out: dict[str, Any]) -> Any:
    from rich.table import Table

    from gaprune_tui.core import format, pareto, stats

    front = {p.k: p for p in pareto.per_k_best(out["pareto"]["seen"], kind, KS)}
    single = {int(k): v for k, v in out["single"].items()}
    everything = [f for s in single.values() for _, f in s["seen"]] + [
        f for _, f in out["pareto"]["seen"]
    ]
    ref = pareto.reference_quality(everything, kind)
    p_pop, p_gens = out["pareto"]["shape"]
    t = Table(
        title=f"{kind}: best of a single-k run (pop 8) vs the Pareto front member "
        f"(one run 2:8, pop {p_pop} x {p_gens} generations)"
    )
    for col in ("k", "single-k best", "Pareto front member", "difference"):
        t.add_column(col, justify="left" if col == "k" else "right")
    for k in KS:
        s = single[k]
        s_se = stderr_of(bench, kind, s["dropped"])
        p = front.get(k)
        if p is None:
            t.add_row(str(k), format.score(s["fitness"], s_se), "not evaluated", "")
            continue
        p_se = stderr_of(bench, kind, p.dropped)
        if None not in (s_se, p_se) and stats.within_noise(s["fitness"], s_se, p.fitness, p_se):
            verdict = "within noise"
        else:
            better = (p.fitness > s["fitness"]) == (kind in ("squared_mean", "mean"))
            verdict = "front better" if better else "front worse"
        t.add_row(
            str(k),
            f"{format.score(s['fitness'], s_se)} {s['dropped']}",
            f"{format.score(p.fitness, p_se)} {p.dropped}",
            verdict,
        )
    single_pts = [pareto.FrontPoint(k, single[k]["dropped"], single[k]["fitness"]) for k in KS]
    single_pts = pareto.per_k_best([(p.dropped, p.fitness) for p in single_pts], kind)
    front_pts = [front[k] for k in KS if k in front]
    hv_s = pareto.hypervolume(single_pts, kind, ref, 1)
    hv_p = pareto.hypervolume(front_pts, kind, ref, 1)
    n_s, n_p = out["single_distinct"], out["pareto"]["distinct"]
    t.caption = (
        f"distinct genomes: single-k runs {n_s} ({out['single_seconds']:.0f} s), Pareto {n_p} "
        f"({out['pareto_seconds']:.0f} s); hypervolume of the k=2,4,6,8 points (reference "
        f"{ref:.4g}, k=1): single {hv_s:.4g} ({hv_s / max(1, n_s):.3g}/evaluation), Pareto "
        f"{hv_p:.4g} ({hv_p / max(1, n_p):.3g}/evaluation). {benchkit.machine()}"
    )
    return t


def main() -> int:
    benchkit.offline_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="kl,squared_mean")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent / ".quality")
    parser.add_argument("--cache-mb", type=int, default=2048)
    parser.add_argument("--calibration-tokens", type=int, default=2048)
    args = parser.parse_args()
    args.holdout_limit = 100
    args.dir.mkdir(parents=True, exist_ok=True)
    from bench_quality import build
    from rich.console import Console

    from gaprune_tui.engine.setup import set_threads

    set_threads()
    bench = build(args)
    console = Console(width=140)
    for kind in args.kinds.split(","):
        out = measure(bench, kind, args.population, args.generations)
        console.print(table(bench, kind, out))
    print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
