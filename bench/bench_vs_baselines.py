"""Does the search beat the one-shot baselines? Issue 19's measurement on the embedded model.

Workload: the embedded SmolLM2-135M-Instruct (30 layers, 2 protected) in float32 on the CPU, the
engine's own pieces (``Evaluator``, ``KLScorer``, ``make_search``, ``baselines``, ``greedy_path``)
with one private memo that persists between invocations (``--dir``, default
``bench/.vs_baselines``), so an interrupted bench resumes and ``--report`` prints what is there.

* fitness: KL(base || pruned) on the default calibration (offline, 2,048 tokens, 16 x 128);
* held-out: the mean over ``HOLDOUT`` (tasks the KL search never reads) at ``--holdout-limit``
  items each (500; ARC-Easy's 570 validation items hold 500), with its standard error;
* methods at each k, searches at the same budget (``--budget``, in full-fidelity evaluations: a
  screened child on 512 of 2,048 tokens costs 0.25), ``--seeds`` seeds each:
  ``evopress`` (the default: 8 random starts on 512 tokens plus the baselines, 16 offspring per
  generation on 512 tokens, the best 2 on all 2,048), ``ga-heuristics`` (the original operators,
  generation 0 seeded with the baselines) and ``ga-random`` (the original method), population 8;
  the one-shot baselines (``shortgpt``, ``angular``, ``last_k``), ``greedy`` (SLEB-style on the same
  KL, its own cost) and one seeded random genome.

A run's cost counts each genome at each fidelity once, whether or not the shared memo already held
it (so seeds do not profit from each other), and the baselines a search starts from as free (the
run scored them before searching, as the engine does). The best-so-far fitness is recorded at each
quarter of the budget (the curve).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_vs_baselines.py --ks 8,10 [--report]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

PROTECT = 2
FIT_TASKS = ("hellaswag_offline",)  # unused by KL; a config needs tasks
HOLDOUT = ("arc_easy_offline", "piqa_offline", "winogrande_offline")
SEARCHES = ("evopress+greedy", "evopress", "ga-heuristics", "ga-random")
ONE_SHOT = ("shortgpt", "angular", "last_k")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """The model, its KL and held-out evaluators (one fast scorer, one memo), and the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        from gaprune_tui.core.config import RunConfig, TaskSpec
        from gaprune_tui.core.store import Memo
        from gaprune_tui.engine.baselines import layer_signals
        from gaprune_tui.engine.calibration import load_calibration
        from gaprune_tui.engine.evaluator import Evaluator
        from gaprune_tui.engine.kl import BaseDistributions, KLScorer
        from gaprune_tui.engine.model import load_model
        from gaprune_tui.engine.tasks import build_tasks

        self.args = args
        args.dir.mkdir(parents=True, exist_ok=True)
        self.loaded = load_model("demo", dtype="float32", device="cpu")
        self.n = int(self.loaded.n_layers)
        self.config = RunConfig(
            tasks=[TaskSpec(t) for t in FIT_TASKS], fitness="kl", protect=PROTECT
        ).validate()
        held = RunConfig(tasks=[TaskSpec(t) for t in HOLDOUT], limit=args.holdout_limit).validate()
        memo = Memo(args.dir / "memo.db")
        lm = Evaluator.make_lm(self.loaded, self.config)
        calibration = load_calibration("offline", self.loaded.tokenizer, 2048)
        base = BaseDistributions.compute(self.loaded, calibration, lm=lm)
        kl = KLScorer(self.loaded, calibration, base, lm=lm)
        self.kl = Evaluator(
            self.loaded, build_tasks(self.config), self.config, memo, lm=lm, kl=kl, kind="kl"
        )
        self.holdout = Evaluator(self.loaded, build_tasks(held), held, memo, lm=lm, kind="mean")
        self.signals = layer_signals(self.loaded, calibration.input_ids)
        self.path = args.dir / "results.json"
        self.results: dict[str, Any] = (
            json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        )
        self.results["machine"] = machine()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    def row(self, k: int, name: str) -> dict[str, Any]:
        return self.results.setdefault(f"k{k}", {}).setdefault(name, {})


def machine() -> str:
    import torch

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), float32"
    )


def kl_of(bench: Bench, dropped: list[int]) -> dict[str, Any]:
    out = bench.kl(sorted(dropped))
    calib = out.scores["calibration"]
    return {
        "dropped": sorted(dropped),
        "kl": calib["kl"],
        "kl_se": calib["kl_stderr"],
        "kl_seq": calib["kl_seq"],
    }


def references(bench: Bench, k: int) -> None:
    """The one-shot baselines and a seeded random genome at k."""
    from gaprune_tui.engine.baselines import baselines

    for b in baselines(bench.signals, bench.n, k, PROTECT):
        row = bench.row(k, b.name)
        if "kl" not in row:
            row.update(kl_of(bench, b.dropped), cost=1.0, seconds=0.0)
            bench.save()
    row = bench.row(k, "random")
    if "kl" not in row:
        genome = sorted(random.Random(1000 + k).sample(range(PROTECT, bench.n), k))
        row.update(kl_of(bench, genome), cost=1.0, seconds=0.0)
        bench.save()


class _Paid:
    """The bench's KL evaluator, counting each genome at each fidelity once (full evaluations)."""

    def __init__(self, bench: Bench) -> None:
        self.bench, self.seen, self.cost = bench, set(), 0.0  # type: ignore[var-annotated]

    def __call__(self, genome: list[int], limit: int | None) -> Any:
        from gaprune_tui.engine.evaluator import fidelity_cost

        out = self.bench.kl(genome, limit)
        key = (tuple(genome), out.fidelity)
        if key not in self.seen:
            self.seen.add(key)
            self.cost += fidelity_cost(out.fidelity, self.bench.config)
        return out


def greedy(bench: Bench, ks: list[int], screen: int | None = 512) -> None:
    """One greedy path to the largest k gives the greedy genome at every k. ``screen``: each
    step's candidates on 512 tokens first, the best 2 in full (the engine's default greedy);
    None: every candidate in full (SLEB exactly). Its cost to each k is counted as the search's."""
    from gaprune_tui.engine.greedy import greedy_path

    name = "greedy" if screen is not None else "greedy-full"
    if all("kl" in bench.row(k, name) for k in ks):
        return
    for k in ks:
        t0 = time.perf_counter()
        # Counted per k as if run alone (the memo would make a second path free).
        counter = _Paid(bench)
        path = greedy_path(counter, bench.n, PROTECT, k, "kl", plan=bench.kl.plan, screen=screen)
        row = bench.row(k, name)
        row.update(
            kl_of(bench, path.genomes[k]),
            cost=round(counter.cost, 2),
            seconds=round(time.perf_counter() - t0, 1),
        )
        bench.save()
        log(f"k={k} {name}: {row['dropped']} KL {row['kl']:.4f} cost {row['cost']}")


def search_config(bench: Bench, method: str, k: int, seed: int) -> Any:
    """The config of one searched method at the bench's budget."""
    import dataclasses

    budget = bench.args.budget
    base = dataclasses.replace(bench.config, prune=k, seed=seed, population=8)
    if method == "evopress+greedy":
        # Greedy first (its cost counted), then EvoPress from the seeds with what is left.
        left = budget - bench.row(k, "greedy").get("cost", 0.0)
        gens = max(1, round(left / 6))
        return dataclasses.replace(
            base, algorithm="evopress", generations=gens, offspring=16, survivors=2,
            selection_tokens=512, init="heuristics", population=0,
        )  # fmt: skip
    if method == "evopress":
        # 8 random starts on 512 tokens (2 evaluations), then 16 x 0.25 + 2 = 6 per generation.
        gens = max(1, round((budget - 2) / 6))
        return dataclasses.replace(
            base, algorithm="evopress", generations=gens, offspring=16, survivors=2,
            selection_tokens=512, init="heuristics",
        )  # fmt: skip
    init = "heuristics" if method == "ga-heuristics" else "random"
    # population 8 x (1 + generations) evaluations, repeats free.
    gens = max(1, round(budget / 8) - 1)
    return dataclasses.replace(base, algorithm="ga", generations=gens, init=init)


def run_search(bench: Bench, method: str, k: int, seed: int) -> None:
    from gaprune_tui.core.events import EvaluationFinished
    from gaprune_tui.engine.baselines import baselines
    from gaprune_tui.engine.evaluator import fidelity_cost
    from gaprune_tui.engine.search import is_screened, make_search

    row = bench.row(k, f"{method} seed {seed}")
    if "kl" in row:
        return
    if method.endswith("+greedy"):
        greedy(bench, [k])  # first: the search gets what greedy left of the budget
    config = search_config(bench, method, k, seed)
    seeds = (
        [b.dropped for b in baselines(bench.signals, bench.n, k, PROTECT)]
        if config.init == "heuristics"
        else []
    )
    cost = 0.0
    if method.endswith("+greedy"):
        # Greedy's genome joins the seeds; its cost is the search's.
        greedy(bench, [k])
        seeds.append(bench.row(k, "greedy")["dropped"])
        cost = bench.row(k, "greedy")["cost"]
    free = {(tuple(s), "full") for s in seeds}
    paid: set[tuple[tuple[int, ...], str]] = set()
    best, curve = float("inf"), {}
    marks = [bench.args.budget * q / 4 for q in (1, 2, 3, 4)]
    t0 = time.perf_counter()
    search = make_search(config.validate(), bench.n, bench.kl, seeds=seeds)
    best_dropped: list[int] = []
    for event in search.run():
        if not isinstance(event, EvaluationFinished):
            continue
        key = (tuple(event.dropped), event.fidelity)
        if key not in free and key not in paid:
            paid.add(key)
            cost += fidelity_cost(event.fidelity, config)
        if not is_screened(event.fidelity) and event.fitness < best:
            best, best_dropped = event.fitness, list(event.dropped)
        for mark in marks:
            if cost <= mark + 1e-9:
                curve[f"{mark:g}"] = best
    row.update(
        kl_of(bench, best_dropped),
        cost=round(cost, 2),
        seconds=round(time.perf_counter() - t0, 1),
        generations=config.generations,
        curve=curve,
    )
    bench.save()
    log(f"k={k} {method} seed {seed}: {best_dropped} KL {best:.4f} cost {cost:.1f}")


def held_out(bench: Bench, k: int) -> None:
    from gaprune_tui.core import stats

    for name, row in bench.results.get(f"k{k}", {}).items():
        if "kl" not in row or "holdout" in row:
            continue
        t0 = time.perf_counter()
        out = bench.holdout(row["dropped"])
        row["holdout"] = out.fitness
        row["holdout_se"] = stats.fitness_stderr(out.scores, "mean")
        bench.save()
        log(f"k={k} {name}: held-out {out.fitness:.4f} ({time.perf_counter() - t0:.0f} s)")
    base = bench.results.setdefault("base", {})
    if "holdout" not in base:
        out = bench.holdout([])
        base.update(holdout=out.fitness, holdout_se=stats.fitness_stderr(out.scores, "mean"))
        bench.save()


# ---- report ---------------------------------------------------------------------------------
def report(results: dict[str, Any], budget: float) -> str:
    """The README's tables (markdown) from results.json."""
    from gaprune_tui.core import stats

    lines = [f"Machine: {results.get('machine', '?')}.", ""]
    base = results.get("base", {})
    lines += [
        "| k | method | KL ± SE | vs best one-shot (paired) | held-out ± SE | cost | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted((k for k in results if k.startswith("k")), key=lambda s: int(s[1:])):
        rows = results[key]
        one_shot = [rows[n] for n in ONE_SHOT if "kl" in rows.get(n, {})]
        best = min(one_shot, key=lambda r: r["kl"]) if one_shot else None
        best_name = next((n for n in ONE_SHOT if rows.get(n) is best), "")
        for name in sorted(rows, key=_order):
            row = rows[name]
            if "kl" not in row:
                continue
            versus = "–"
            if best is not None and row is not best:
                versus = stats.paired_compare(row["kl_seq"], best["kl_seq"], False).outcome
            elif row is best:
                versus = f"({best_name})"
            held = f"{row['holdout']:.4f} ± {row['holdout_se']:.4f}" if "holdout" in row else "–"
            lines.append(
                f"| {key[1:]} | {name} | {row['kl']:.4f} ± {row['kl_se']:.4f} | {versus} | "
                f"{held} | {row.get('cost', 0):g} | {row.get('seconds', 0):g} |"
            )
    if "holdout" in base:
        lines += ["", f"Unpruned model held-out: {base['holdout']:.4f} ± {base['holdout_se']:.4f}."]
    lines += ["", "Best KL reached at each quarter of the budget (mean over seeds):", ""]
    marks = [f"{budget * q / 4:g}" for q in (1, 2, 3, 4)]
    lines += [f"| k | method | {' | '.join(marks)} |", "|---|---|" + "---|" * len(marks)]
    for key in sorted((k for k in results if k.startswith("k")), key=lambda s: int(s[1:])):
        for method in SEARCHES:
            runs = [r for n, r in results[key].items() if n.startswith(method + " seed")]
            runs = [r for r in runs if "curve" in r]
            if not runs:
                continue
            cells = []
            for m in marks:
                values = [r["curve"][m] for r in runs if m in r["curve"]]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "–")
            lines.append(f"| {key[1:]} | {method} ({len(runs)} seeds) | {' | '.join(cells)} |")
    return "\n".join(lines)


def _order(name: str) -> tuple[int, str]:
    for i, prefix in enumerate((*SEARCHES, "greedy", *ONE_SHOT, "random")):
        if name.startswith(prefix):
            return i, name
    return 99, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench/.vs_baselines"))
    parser.add_argument("--ks", default="8,10")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--seeds-of", default="", help="per method seed counts, e.g. evopress=1 (default --seeds)"
    )
    parser.add_argument("--budget", type=float, default=64.0)
    parser.add_argument("--methods", default=",".join(SEARCHES))
    parser.add_argument("--holdout-limit", type=int, default=500)
    parser.add_argument("--no-greedy", dest="greedy", action="store_false")
    parser.add_argument("--no-holdout", dest="holdout", action="store_false")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    args = parser.parse_args(argv)
    if args.report:
        path = args.dir / "results.json"
        print(report(json.loads(path.read_text(encoding="utf-8")), args.budget))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    bench = Bench(args)
    ks = [int(k) for k in args.ks.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    # In the order given (the most informative first), then the held-out scores of every pick.
    for k in ks:
        references(bench, k)
        counts = dict(part.split("=") for part in args.seeds_of.split(",") if part)
        for method in methods:
            for seed in range(int(counts.get(method, args.seeds))):
                run_search(bench, method, k, seed)
    if args.greedy:
        greedy(bench, ks, screen=None)  # SLEB's greedy in full, for reference (expensive)
    for k in ks:
        if args.holdout:
            held_out(bench, k)
    print(report(bench.results, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
