"""Whole layers or sub-blocks? Issue 23's measurement on the embedded model, at equal parameters.

Workload: the embedded SmolLM2-135M-Instruct (30 layers, 2 protected) in float32 on the CPU, the
engine's own pieces (``Evaluator``, ``KLScorer``, ``make_search``, the one-pass baselines,
``measure_speed``) with one private memo that persists between invocations (``--dir``), so an
interrupted bench resumes and ``--report`` prints what is there.

* levels: ``--levels`` whole layers k (default 4, 8, 11: 10.5%, 21.1%, 29.0% of the parameters).
  The sub-block search at the same level drops 2k sub-blocks of which k are attention
  (``--attention-drops k``): the same parameters exactly (an attention sub-block with its norm plus
  an MLP sub-block with its norm is one layer), placed freely;
* search: EvoPress (the engine's default) at the same budget for both granularities (``--budget``
  full-fidelity evaluations: a child on 512 of 2,048 calibration tokens costs 0.25), starting from
  that granularity's one-pass baselines (free, the run scores them first), ``--seeds`` seeds;
* fitness: KL(base || pruned) on the default calibration (offline, 2,048 tokens), with its standard
  error; "vs layer" is the paired comparison of the sub-block pick with the same seed's whole-layer
  pick over the 16 calibration sequences;
* held-out: the mean over ``HOLDOUT`` (tasks the KL search never reads) at ``--holdout-limit`` items
  each (500), with its standard error;
* cost at inference, measured here: KV cache (share of attention kept) and, with ``--speed`` (run
  it alone, after the searches), the median of 7 interleaved timings of the pick's view against the
  base model: a 128-token prompt's forward pass (a calibration sequence), and 32 generated tokens (``engine/speed.py``).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_sublayer.py --granularity layer --threads 1 &
    PYTHONPATH=$PWD .venv/bin/python bench/bench_sublayer.py --granularity sublayer --threads 1 \
        --dir bench/.sublayer_sub
    bench_sublayer.py --speed --threads 2 ...          (each dir in turn, nothing else running)
    PYTHONPATH=$PWD .venv/bin/python bench/bench_sublayer.py --report --also bench/.sublayer_sub
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import benchkit  # noqa: E402

PROTECT = 2
FIT_TASKS = ("hellaswag_offline",)  # unused by KL; a config needs tasks
HOLDOUT = ("arc_easy_offline", "piqa_offline", "winogrande_offline")


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
            tasks=[TaskSpec(t) for t in FIT_TASKS],
            fitness="kl",
            protect=PROTECT,
            granularity=args.granularity,
        ).validate()
        held = RunConfig(
            tasks=[TaskSpec(t) for t in HOLDOUT],
            limit=args.holdout_limit,
            granularity=args.granularity,
        ).validate()
        memo = Memo(args.memo or args.dir / "memo.db")
        lm = Evaluator.make_lm(self.loaded, self.config)
        self.calibration = load_calibration("offline", self.loaded.tokenizer, 2048)
        base = BaseDistributions.compute(self.loaded, self.calibration, lm=lm)
        kl = KLScorer(self.loaded, self.calibration, base, lm=lm)
        self.kl = Evaluator(
            self.loaded, build_tasks(self.config), self.config, memo, lm=lm, kl=kl, kind="kl"
        )
        self.holdout = Evaluator(self.loaded, build_tasks(held), held, memo, lm=lm, kind="mean")
        self.signals = layer_signals(
            self.loaded, self.calibration.input_ids, sublayer=args.granularity == "sublayer"
        )
        self.path = args.dir / "results.json"
        self.results: dict[str, Any] = (
            json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        )
        self.results["machine"] = benchkit.machine(args.threads)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    def row(self, k: int, name: str) -> dict[str, Any]:
        return self.results.setdefault(f"k{k}", {}).setdefault(name, {})

    def level_config(self, k: int, seed: int) -> Any:
        """The search config at level k: k layers, or 2k sub-blocks with k of them attention."""
        sub = self.args.granularity == "sublayer"
        return dataclasses.replace(
            self.config,
            prune=2 * k if sub else k,
            attention_drops=k if sub else None,
            seed=seed,
        ).validate()


def scored(bench: Bench, dropped: list[int]) -> dict[str, Any]:
    from gaprune_tui.core.units import kept_path, kv_cache, split

    out = bench.kl(sorted(dropped))
    calib = out.scores["calibration"]
    path = kept_path(dropped, bench.n, bench.args.granularity)
    params = sum(bench.per_unit[u] for u in dropped)
    whole, attention, mlp = split(dropped, bench.args.granularity)
    return {
        "dropped": sorted(dropped),
        "path": path,
        "split": [whole, attention, mlp],
        "kl": calib["kl"],
        "kl_se": calib["kl_stderr"],
        "kl_seq": calib["kl_seq"],
        "params_removed": params,
        "kv": kv_cache(path, bench.n),
    }


def one_shot(bench: Bench, k: int) -> list[list[int]]:
    """The granularity's one-pass baselines at level k, scored; their genomes (the seeds)."""
    from gaprune_tui.core.units import GenomeSpace
    from gaprune_tui.engine.baselines import baselines, sublayer_baselines

    if bench.args.granularity == "sublayer":
        space = GenomeSpace(bench.n, PROTECT, "sublayer", attention_drops=k)
        picks = sublayer_baselines(bench.signals, space, 2 * k)
    else:
        picks = baselines(bench.signals, bench.n, k, PROTECT)
    for b in picks:
        row = bench.row(k, f"{bench.args.granularity} {b.name}")
        if "kl" not in row:
            row.update(scored(bench, b.dropped))
            bench.save()
            log(f"k={k} {b.name}: {row['dropped']} KL {row['kl']:.4f}")
    return [b.dropped for b in picks]


def run_search(bench: Bench, k: int, seed: int, seeds: list[list[int]]) -> None:
    from gaprune_tui.core.events import EvaluationFinished
    from gaprune_tui.engine.evaluator import fidelity_cost
    from gaprune_tui.engine.search import is_screened, make_search

    row = bench.row(k, f"{bench.args.granularity} evopress seed {seed}")
    if "kl" in row:
        return
    budget = bench.args.budget
    # 8 random starts on 512 tokens (2 evaluations), then 8 x 0.25 + 2 = 4 per generation.
    gens = max(1, round((budget - 2) / 4))  # budget 20: 5 generations
    config = dataclasses.replace(
        bench.level_config(k, seed), algorithm="evopress", population=8, generations=gens,
        offspring=8, survivors=2, selection_tokens=512, init="heuristics",
    )  # fmt: skip
    free = {(tuple(s), "full") for s in seeds}
    paid: set[tuple[tuple[int, ...], str]] = set()
    cost, best, best_dropped = 0.0, float("inf"), list(seeds[0])
    t0 = time.perf_counter()
    for event in make_search(config, bench.n, bench.kl, seeds=seeds).run():
        if not isinstance(event, EvaluationFinished):
            continue
        key = (tuple(event.dropped), event.fidelity)
        if key not in free and key not in paid:
            paid.add(key)
            cost += fidelity_cost(event.fidelity, config)
        if not is_screened(event.fidelity) and event.fitness < best:
            best, best_dropped = event.fitness, list(event.dropped)
    row.update(
        scored(bench, best_dropped),
        cost=round(cost, 2),
        seconds=round(time.perf_counter() - t0, 1),
        generations=gens,
    )
    bench.save()
    log(f"k={k} seed {seed}: {row['split']} KL {best:.4f} cost {cost:.1f} {row['seconds']} s")


def held_out_and_speed(bench: Bench) -> None:
    from gaprune_tui.core import stats
    from gaprune_tui.engine.speed import measure_speed

    prompt = bench.calibration.input_ids[0]
    for key in sorted(k for k in bench.results if k.startswith("k")):
        for name, row in bench.results[key].items():
            if "kl" not in row:
                continue
            wanted = not bench.args.holdout_only or bench.args.holdout_only in name
            if "holdout" not in row and bench.args.holdout and wanted:
                t0 = time.perf_counter()
                out = bench.holdout(row["dropped"])
                row["holdout"] = out.fitness
                row["holdout_se"] = stats.fitness_stderr(out.scores, "mean")
                row["holdout_scores"] = {t: v for t, v in out.scores.items()}
                bench.save()
                log(f"{key} {name}: held-out {out.fitness:.4f} ({time.perf_counter() - t0:.0f} s)")
            if "speed" not in row and bench.args.speed and wanted:
                row["speed"] = measure_speed(
                    bench.loaded, row["path"], prompt, new_tokens=32, repeats=7
                )
                bench.save()
    base = bench.results.setdefault("base", {})
    if "holdout" not in base and bench.args.holdout:
        out = bench.holdout([])
        base.update(holdout=out.fitness, holdout_se=stats.fitness_stderr(out.scores, "mean"))
        bench.save()


# ---- report ---------------------------------------------------------------------------------
def report(results: dict[str, Any], total: int) -> str:
    """The README's table (markdown) from the merged results.json files."""
    from gaprune_tui.core import stats

    lines = [f"Machine: {results.get('machine', '?')}.", ""]
    lines += [
        "| level | method | drops | params removed | KL ± SE | vs layer (paired) | "
        "held-out ± SE | KV cache | prompt / generation speed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted((k for k in results if k.startswith("k")), key=lambda s: int(s[1:])):
        rows = results[key]
        for name in sorted(rows, key=lambda s: (not s.startswith("layer"), "seed" in s, s)):
            row = rows[name]
            if "kl" not in row:
                continue
            versus = "–"
            twin = rows.get(name.replace("sublayer", "layer"))
            if name.startswith("sublayer") and twin and "kl_seq" in twin:
                versus = stats.paired_compare(row["kl_seq"], twin["kl_seq"], False).outcome
            held = f"{row['holdout']:.4f} ± {row['holdout_se']:.4f}" if "holdout" in row else "–"
            whole, attention, mlp = row["split"]
            drops = f"{len(whole)} layers"
            if attention or mlp:
                drops += f" + {len(attention)} attn + {len(mlp)} mlp"
            speed = row.get("speed")
            pace = (
                f"{speed['prompt_speedup']:.2f}x / {speed['generate_speedup']:.2f}x"
                if speed
                else "–"
            )
            lines.append(
                f"| {key[1:]} layers | {name} | {drops} | "
                f"{row['params_removed'] / total:.1%} | {row['kl']:.4f} ± {row['kl_se']:.4f} | "
                f"{versus} | {held} | -{row['kv']['reduction']:.0%} | {pace} |"
            )
    base = results.get("base", {})
    if "holdout" in base:
        lines += ["", f"Unpruned model held-out: {base['holdout']:.4f} ± {base['holdout_se']:.4f}."]
    lines += ["", "Mean over seeds (EvoPress picks):", ""]
    lines += ["| level | granularity | KL | held-out | generation speed |", "|---|---|---|---|---|"]
    for key in sorted((k for k in results if k.startswith("k")), key=lambda s: int(s[1:])):
        for gran in ("layer", "sublayer"):
            runs = [r for n, r in results[key].items() if n.startswith(f"{gran} evopress")]
            runs = [r for r in runs if "kl" in r]
            if not runs:
                continue
            kl = sum(r["kl"] for r in runs) / len(runs)
            held = [r["holdout"] for r in runs if "holdout" in r]
            gen = [r["speed"]["generate_speedup"] for r in runs if r.get("speed")]
            lines.append(
                f"| {key[1:]} layers | {gran} ({len(runs)} seeds) | {kl:.4f} | "
                + (f"{sum(held) / len(held):.4f}" if held else "–")
                + " | "
                + (f"{sum(gen) / len(gen):.2f}x" if gen else "–")
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench/.sublayer_layer"))
    parser.add_argument("--granularity", default="layer", choices=("layer", "sublayer"))
    parser.add_argument("--levels", default="4,8,11")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--holdout-limit", type=int, default=500)
    parser.add_argument(
        "--memo", type=Path, default=None, help="the memo to use (default DIR/memo.db): share one"
    )
    parser.add_argument("--no-holdout", dest="holdout", action="store_false")
    parser.add_argument(
        "--holdout-only", default="", help="held-out scores only for rows whose name has this"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--speed",
        action="store_true",
        help="also time each pick (run alone: timings need a quiet machine)",
    )
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    parser.add_argument("--also", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    benchkit.offline_env()
    if args.report:
        merged: dict[str, Any] = {}
        for folder in [args.dir, *args.also]:
            data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            for key, value in data.items():
                if key.startswith("k"):
                    merged.setdefault(key, {}).update(value)
                else:
                    merged.setdefault(key, value)
        print(report(merged, int(merged.get("params_total", 1))))
        return 0
    import torch

    from gaprune_tui.engine.layers import unit_params

    torch.set_num_threads(args.threads)
    bench = Bench(args)
    layers = list(bench.loaded.view.base_layers)
    bench.per_unit = unit_params(layers, args.granularity)  # type: ignore[attr-defined]
    bench.results["params_total"] = sum(p.numel() for p in bench.loaded.model.parameters())
    for k in [int(x) for x in args.levels.split(",")]:
        seeds = one_shot(bench, k)
        for seed in range(args.seeds):
            run_search(bench, k, seed, seeds)
    held_out_and_speed(bench)
    print(report(bench.results, bench.results["params_total"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
