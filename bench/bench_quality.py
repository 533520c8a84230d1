"""Which fitness picks genomes that hold out: issue 10's measurement on the embedded model.

Workload: the embedded SmolLM2-135M-Instruct (30 layers, 2 protected) in fp32 on the CPU, the
engine's own pieces (``Evaluator``, ``KLScorer``, ``Search``, ``baselines``) with one private memo
that persists between invocations (``--dir``, default ``bench/.quality``: ``memo.db``, and
``results.json`` with what is not in the memo: GA runs, timings). Every number is resumable: an
interrupted run continues from the memo, and ``--report`` prints the tables from what is there.

* task fitness: hellaswag_offline + openbookqa_offline, 0-shot, limit 20 (and 100 in part c);
  ``squared_mean`` and ``mean`` come from the same scores;
* KL and perplexity: the default calibration (offline, ``--calibration-tokens`` 2048, 16 x 128);
* held-out score: mean over arc_easy_offline, piqa_offline, winogrande_offline at ``--holdout-limit``
  (500) items each, 0-shot, with ``stats.mean_fitness_stderr`` over the three tasks' stderrs.

Parts (``--parts``, run in the order given; the default puts the most informative first):

* ``c``: ``--random-genomes`` (40) seeded random genomes at k = 4: Spearman between the held-out
  score and task fitness at limit 20 and 100, KL and perplexity (sign as measured);
* ``b4``, ``b6``, ``b8``: at k: held-out score of the picks of the GA with task fitness at the
  Setup screen's CPU defaults (population 8, generations 3, limit 20, squared_mean), the GA with KL
  (same shape), each baseline (shortgpt, angular, last_k), a seeded random genome and the base
  model, with the time to each pick (the GA's evaluation seconds, or the one baseline pass);
* ``a``: k = 2 ground truth: all C(28, 2) = 378 genomes scored by task fitness and KL/ppl, then GA
  runs on that table (no model) for each kind x mutation x ``--seeds`` seeds, population 20, up to
  ``--max-generations``: distinct evaluations until the GA first meets the kind's optimum; and the
  held-out score of each kind's optimum and of the base model.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_quality.py [--parts c,b4,a,b6,b8] [--report]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaprune_tui.core.config import RunConfig

FIT_TASKS = ("hellaswag_offline", "openbookqa_offline")
HOLDOUT_TASKS = ("arc_easy_offline", "piqa_offline", "winogrande_offline")
KINDS = ("squared_mean", "mean", "kl", "ppl")
MUTATIONS = ("uniform", "swap")
PROTECT = 2
DEFAULT_PARTS = "c,b4,a,b6,b8"


@dataclass
class Bench:
    """The model, the evaluators sharing one scorer and memo, and the results file."""

    args: argparse.Namespace
    loaded: Any
    calibration: Any
    task20: Any
    task100: Any
    kl: Any
    holdout: Any
    results: dict[str, Any]
    path: Path

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    @property
    def n(self) -> int:
        return int(self.loaded.n_layers)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(args: argparse.Namespace) -> Bench:
    """Load the model once; four evaluators share its fast scorer (and prefix cache) and memo."""
    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.core.store import Memo
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.tasks import build_tasks

    loaded = load_model("demo", dtype="float32", device="cpu")
    fit = [TaskSpec(t) for t in FIT_TASKS]
    c20 = RunConfig(tasks=fit, limit=20, prefix_cache_mb=args.cache_mb).validate()
    c100 = RunConfig(tasks=fit, limit=100, prefix_cache_mb=args.cache_mb).validate()
    held = RunConfig(
        tasks=[TaskSpec(t) for t in HOLDOUT_TASKS],
        limit=args.holdout_limit,
        prefix_cache_mb=args.cache_mb,
    ).validate()
    memo = Memo(args.dir / "memo.db")
    lm = Evaluator.make_lm(loaded, c20)
    calibration = load_calibration("offline", loaded.tokenizer, args.calibration_tokens)
    t0 = time.perf_counter()
    base = BaseDistributions.compute(loaded, calibration, lm=lm)
    log(f"base distributions: {time.perf_counter() - t0:.1f} s, {calibration.description}")
    kl = KLScorer(loaded, calibration, base, lm=lm)
    ckl = RunConfig(tasks=fit, fitness="kl", prefix_cache_mb=args.cache_mb).validate()
    path = args.dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if results.get("holdout_limit", args.holdout_limit) != args.holdout_limit:
        raise SystemExit(
            f"{path} holds held-out scores at {results['holdout_limit']} items per task: "
            "pass that --holdout-limit or another --dir"
        )
    results["holdout_limit"] = args.holdout_limit
    return Bench(
        args=args,
        loaded=loaded,
        calibration=calibration,
        task20=Evaluator(loaded, build_tasks(c20), c20, memo, lm=lm, kind="squared_mean"),
        task100=Evaluator(loaded, build_tasks(c100), c100, memo, lm=lm, kind="squared_mean"),
        kl=Evaluator(loaded, build_tasks(ckl), ckl, memo, lm=lm, kl=kl, kind="kl"),
        holdout=Evaluator(loaded, build_tasks(held), held, memo, lm=lm, kind="mean"),
        results=results,
        path=path,
    )


# ---- scoring helpers --------------------------------------------------------------------------
def held_out(bench: Bench, dropped: list[int]) -> tuple[float, float | None, float]:
    """(held-out mean score, its stderr, seconds it took when first computed)."""
    from gaprune_tui.core import stats

    out = bench.holdout(sorted(dropped))
    return out.fitness, stats.fitness_stderr(out.scores, "mean"), out.seconds


def score_all(evaluator: Any, genomes: list[list[int]], label: str) -> list[Any]:
    """Score genomes in tree order (the prefix cache's best order); outcomes in the given order."""
    order = sorted(range(len(genomes)), key=lambda i: genomes[i])
    evaluator.plan([genomes[i] for i in order])
    out: list[Any] = [None] * len(genomes)
    t0 = time.perf_counter()
    for done, i in enumerate(order, 1):
        out[i] = evaluator(sorted(genomes[i]))
        if done % 10 == 0 or done == len(order):
            log(f"{label}: {done}/{len(order)} ({time.perf_counter() - t0:.0f} s)")
    return out


def random_genomes(n_layers: int, k: int, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    seen: list[list[int]] = []
    while len(seen) < count:
        g = sorted(rng.sample(range(PROTECT, n_layers), k))
        if g not in seen:
            seen.append(g)
    return seen


# ---- timing -----------------------------------------------------------------------------------
def measure(bench: Bench) -> None:
    """Seconds of one evaluation of each kind (base model first, then one random 4-layer genome,
    which is what a search pays); kept in results.json from the first measurement."""
    if "timing" in bench.results:
        return
    genome = random_genomes(bench.n, 4, 1, seed=12345)[0]
    timing: dict[str, Any] = {"genome": genome}
    for name, ev in (("kl", bench.kl), ("task20", bench.task20)):
        base = ev([])
        one = ev(genome)
        timing[name] = {"base_s": base.seconds, "genome_s": one.seconds, "memo": one.from_memo}
        log(f"timing {name}: base {base.seconds:.1f} s, genome {one.seconds:.1f} s")
    bench.results["timing"] = timing
    bench.save()


# ---- part c -----------------------------------------------------------------------------------
def part_c(bench: Bench) -> None:
    """Genome by genome (KL, task fitness at limit 20, held-out), so an interrupted bench leaves
    whole rows; task fitness at limit 100 last, over the genomes done, when ``--limit100``."""
    from gaprune_tui.core.fitness import fitness_of

    genomes = random_genomes(bench.n, 4, bench.args.random_genomes, seed=bench.args.seed)
    part = bench.results.setdefault("c", {"rows": []})
    rows = part["rows"]
    done = {tuple(r["dropped"]) for r in rows if "holdout" in r}
    for i, g in enumerate(genomes, 1):
        if tuple(g) in done:
            continue
        c, a = bench.kl(g), bench.task20(g)
        value, se, seconds = held_out(bench, g)
        rows.append(
            {
                "dropped": g,
                "sq20": fitness_of(a.scores, "squared_mean"),
                "mean20": fitness_of(a.scores, "mean"),
                "kl": fitness_of(c.scores, "kl"),
                "ppl": fitness_of(c.scores, "ppl"),
                "holdout": value,
                "holdout_se": se,
                "seconds": {"kl": c.seconds, "task20": a.seconds, "holdout": seconds},
            }
        )
        bench.save()
        log(
            f"c: {i}/{len(genomes)} drop {g}: kl {rows[-1]['kl']:.4f} sq20 {rows[-1]['sq20']:.4f}"
            f" held-out {value:.4f} ({c.seconds:.0f}+{a.seconds:.0f}+{seconds:.0f} s)"
        )
    if not bench.args.limit100:
        return
    for i, row in enumerate(rows, 1):
        if "sq100" not in row:
            b = bench.task100(row["dropped"])
            row["sq100"] = fitness_of(b.scores, "squared_mean")
            row["mean100"] = fitness_of(b.scores, "mean")
            bench.save()
            log(f"c: limit 100 {i}/{len(rows)} ({b.seconds:.0f} s)")


def spearman_ci(rho: float | None, n: int) -> str:
    """95% interval of a Spearman correlation (Fisher z, standard error 1.06 / sqrt(n - 3))."""
    import math

    if rho is None or n < 4 or abs(rho) >= 1:
        return "-"
    z, half = math.atanh(rho), 1.96 * 1.06 / math.sqrt(n - 3)
    return f"{math.tanh(z - half):+.2f} .. {math.tanh(z + half):+.2f}"


def spearman_table(bench: Bench) -> Any:
    from rich.table import Table

    from gaprune_tui.core import stats

    rows = [r for r in bench.results.get("c", {}).get("rows", []) if "holdout" in r]
    table = Table(
        title=(
            f"(c) Spearman with the held-out score, {len(rows)} random genomes at k = 4 "
            f"(held-out: {', '.join(HOLDOUT_TASKS)} at {bench.args.holdout_limit} items each)"
        )
    )
    for col in ("measure", "genomes", "Spearman", "95% CI", "expected sign", "range over genomes"):
        table.add_column(col)
    held = [r["holdout"] for r in rows]
    measures = (
        ("task squared_mean, limit 20", "sq20", "+"),
        ("task mean, limit 20", "mean20", "+"),
        ("task squared_mean, limit 100", "sq100", "+"),
        ("task mean, limit 100", "mean100", "+"),
        ("KL (2048 tokens)", "kl", "-"),
        ("perplexity (2048 tokens)", "ppl", "-"),
    )
    for label, key, sign in measures:
        pairs = [(r[key], r["holdout"]) for r in rows if key in r]
        xs = [x for x, _ in pairs]
        rho = stats.spearman(xs, [y for _, y in pairs]) if len(pairs) >= 2 else None
        span = f"{min(xs):.4g} .. {max(xs):.4g}" if xs else "-"
        rho_cell = "-" if rho is None else f"{rho:+.3f}"
        table.add_row(label, str(len(pairs)), rho_cell, spearman_ci(rho, len(pairs)), sign, span)
    if held:
        ses = [r["holdout_se"] for r in rows if r.get("holdout_se") is not None]
        table.add_row(
            "held-out score itself",
            str(len(held)),
            "",
            "",
            "",
            f"{min(held):.4f} .. {max(held):.4f} (stderr ~{sum(ses) / max(1, len(ses)):.4f})",
        )
    return table


# ---- part b -----------------------------------------------------------------------------------
class Counting:
    """An evaluate function for ``Search`` that adds up the seconds of each distinct genome (from
    the memo's record when it is a hit, so a resumed bench reports the same time)."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator
        self.seen: dict[tuple[int, ...], float] = {}

    def plan(self, dropped_lists: list[list[int]]) -> None:
        self.evaluator.plan(dropped_lists)

    def __call__(self, dropped: list[int], limit: int | None = None) -> Any:
        out = self.evaluator(dropped, limit)
        self.seen.setdefault(tuple(sorted(dropped)), out.seconds)
        return out


def search_config(kind: str, **shape: Any) -> RunConfig:
    """A search's config over the fitness tasks at 20 items (``shape``: its size and budget),
    seed 0: the one the GA benches here and in bench_pareto run."""
    from gaprune_tui.core.config import RunConfig, TaskSpec

    tasks = [TaskSpec(t) for t in FIT_TASKS]
    return RunConfig(
        tasks=tasks, limit=20, protect=PROTECT, fitness=kind, seed=0, **shape
    ).validate()


def run_ga(bench: Bench, k: int, kind: str) -> dict[str, Any]:
    """The GA at the Setup screen's CPU defaults (population 8, 3 generations, seed 0)."""
    from gaprune_tui.core.events import SearchFinished
    from gaprune_tui.engine.search import Search

    config = search_config(kind, prune=k, population=8, generations=3)
    counting = Counting(bench.task20 if kind in ("squared_mean", "mean") else bench.kl)
    final = None
    for event in Search(config, bench.n, counting).run():
        final = event
    assert isinstance(final, SearchFinished)
    best = final.hall_of_fame[0]
    return {
        "dropped": best["dropped"],
        "fitness": best["fitness"],
        "seconds": sum(counting.seen.values()),
        "distinct": len(counting.seen),
    }


def signals_pass(bench: Bench) -> tuple[Any, float]:
    from gaprune_tui.engine.baselines import layer_signals

    t0 = time.perf_counter()
    signals = layer_signals(bench.loaded, bench.calibration.input_ids)
    return signals, time.perf_counter() - t0


def part_b(bench: Bench, k: int) -> None:
    """Cheapest picks first (baselines, random, base), then the GA with KL, then with task
    fitness, each held out as soon as it is picked: an interrupted part leaves whole rows."""
    from gaprune_tui.engine.baselines import baselines

    key = f"b{k}"
    picks = bench.results.setdefault(key, {"picks": {}})["picks"]
    signals, seconds = signals_pass(bench)
    log(f"{key}: baseline pass {seconds:.1f} s")
    for pick in baselines(signals, bench.n, k, PROTECT):
        picks.setdefault(f"baseline {pick.name}", {"dropped": pick.dropped, "seconds": seconds})
    picks.setdefault(
        "random genome (seeded)",
        {"dropped": random_genomes(bench.n, k, 1, seed=1000 + k)[0], "seconds": 0.0},
    )
    picks.setdefault("base model", {"dropped": [], "seconds": 0.0})
    bench.save()
    hold_out(bench, key, picks)
    for label, kind in (("GA kl", "kl"), ("GA squared_mean (limit 20)", "squared_mean")):
        if label not in picks:
            log(f"{key}: {label}")
            picks[label] = run_ga(bench, k, kind)
            bench.save()
        hold_out(bench, key, picks)


def hold_out(bench: Bench, key: str, picks: dict[str, Any]) -> None:
    """Held-out score of every pick that has none yet (tree order)."""
    order = sorted(
        (n for n in picks if "holdout" not in picks[n]), key=lambda n: picks[n]["dropped"]
    )
    bench.holdout.plan([picks[name]["dropped"] for name in order])
    for name in order:
        value, se, _ = held_out(bench, picks[name]["dropped"])
        picks[name]["holdout"], picks[name]["holdout_se"] = value, se
        bench.save()
        log(f"{key}: {name} drop {picks[name]['dropped']}: held-out {value:.4f}")


def picks_table(bench: Bench, k: int) -> Any:
    from rich.table import Table

    from gaprune_tui.core import format, stats

    picks = bench.results.get(f"b{k}", {}).get("picks", {})
    table = Table(
        title=f"(b) k = {k}: held-out score of each method's pick "
        f"(mean of {len(HOLDOUT_TASKS)} tasks at {bench.args.holdout_limit} items, 0-shot)"
    )
    for col in ("method", "dropped", "held-out", "vs base", "time to pick", "distinct genomes"):
        table.add_column(col)
    base = picks.get("base model", {})
    for name, p in picks.items():
        held = p.get("holdout")
        verdict = "-"
        if held is not None and base.get("holdout") is not None and name != "base model":
            v = stats.compare((held, p["holdout_se"]), (base["holdout"], base["holdout_se"]), True)
            verdict = f"{v.diff:+.4f} ({v.outcome})"
        table.add_row(
            name,
            str(p["dropped"]),
            "pending" if held is None else format.score(held, p.get("holdout_se")),
            verdict,
            format.duration(p["seconds"]) if p.get("seconds") else "-",
            str(p.get("distinct", "-")),
        )
    return table


# ---- part a -----------------------------------------------------------------------------------
class Lookup:
    """``Search``'s evaluate function over a precomputed table: counts distinct genomes until
    one of the optima is first met."""

    def __init__(self, table: dict[tuple[int, ...], float], optima: set[tuple[int, ...]]) -> None:
        self.table = table
        self.optima = optima
        self.seen: set[tuple[int, ...]] = set()
        self.met_at: int | None = None

    def __call__(self, dropped: list[int], limit: int | None = None) -> Any:
        from gaprune_tui.engine.search import Outcome

        key = tuple(sorted(dropped))
        hit = key in self.seen
        self.seen.add(key)
        if self.met_at is None and key in self.optima:
            self.met_at = len(self.seen)
        return Outcome({}, self.table[key], 0.0, hit)


def ga_on_table(
    n_layers: int,
    table: dict[tuple[int, ...], float],
    kind: str,
    mutation: str,
    seed: int,
    gens: int,
) -> dict[str, Any]:
    from gaprune_tui.core.config import RunConfig
    from gaprune_tui.core.fitness import higher_is_better
    from gaprune_tui.engine.search import Search

    best = (max if higher_is_better(kind) else min)(table.values())
    optima = {g for g, v in table.items() if v == best}
    config = RunConfig(
        prune=2,
        protect=PROTECT,
        population=20,
        generations=gens,
        fitness=kind,
        mutation=mutation,
        seed=seed,
    ).validate()
    lookup = Lookup(table, optima)
    for _ in Search(config, n_layers, lookup).run():
        if lookup.met_at is not None:
            break
    return {"met_at": lookup.met_at, "distinct": len(lookup.seen)}


def part_a(bench: Bench) -> None:
    from gaprune_tui.core.fitness import fitness_of

    genomes = [list(g) for g in itertools.combinations(range(PROTECT, bench.n), 2)]
    kl = score_all(bench.kl, genomes, "a: kl")
    t20 = score_all(bench.task20, genomes, "a: task limit 20")
    tables: dict[str, dict[tuple[int, ...], float]] = {}
    for kind in KINDS:
        source = kl if kind in ("kl", "ppl") else t20
        tables[kind] = {
            tuple(g): fitness_of(o.scores, kind) for g, o in zip(genomes, source, strict=True)
        }
    part = bench.results.setdefault("a", {"runs": {}, "optima": {}})
    for kind in KINDS:
        values = tables[kind]
        from gaprune_tui.core.fitness import higher_is_better

        best = (max if higher_is_better(kind) else min)(values.values())
        optima = sorted(g for g, v in values.items() if v == best)
        part["optima"][kind] = {"value": best, "genomes": [list(g) for g in optima]}
        for mutation in MUTATIONS:
            for seed in range(bench.args.seeds):
                key = f"{kind}/{mutation}/{seed}"
                if key not in part["runs"]:
                    part["runs"][key] = ga_on_table(
                        bench.n, values, kind, mutation, seed, bench.args.max_generations
                    )
    part["genomes"] = len(genomes)
    bench.save()
    log("a: GA runs on the table done")
    picks = [("base model", [])] + [(kind, part["optima"][kind]["genomes"][0]) for kind in KINDS]
    bench.holdout.plan(sorted(g for _, g in picks))
    held = part.setdefault("holdout", {})
    for name, genome in picks:
        value, se, _ = held_out(bench, genome)
        held[name] = {"dropped": genome, "holdout": value, "holdout_se": se}
        bench.save()
        log(f"a: held-out of {name} optimum {genome}: {value:.4f}")


def ga_table(bench: Bench) -> Any:
    from rich.table import Table

    from gaprune_tui.core import format

    part = bench.results.get("a")
    table = Table(
        title=(
            "(a) k = 2: distinct evaluations until the GA first meets the kind's optimum over all "
            f"C(28,2) = 378 genomes (population 20, cap {bench.args.max_generations} generations)"
        )
    )
    for col in (
        "fitness",
        "optimum (ties)",
        "mutation",
        "met / runs",
        "evaluations to optimum (per seed)",
        "random search expects",
        "optimum's held-out",
    ):
        table.add_column(col)
    if not part:
        return table
    held = part.get("holdout", {})
    for kind in KINDS:
        opt = part["optima"].get(kind)
        if opt is None:
            continue
        m = len(opt["genomes"])
        h = held.get(kind)
        for mutation in MUTATIONS:
            runs = [
                v
                for key, v in sorted(part["runs"].items())
                if key.startswith(f"{kind}/{mutation}/")
            ]
            met = [r["met_at"] for r in runs if r["met_at"] is not None]
            cells = ", ".join("not met" if r["met_at"] is None else str(r["met_at"]) for r in runs)
            table.add_row(
                kind,
                f"{opt['value']:.4g} {opt['genomes'][0]} ({m})",
                mutation,
                f"{len(met)}/{len(runs)}",
                cells,
                f"{(part['genomes'] + 1) / (m + 1):.0f}",
                "-" if h is None else format.score(h["holdout"], h["holdout_se"]),
            )
    base = held.get("base model")
    if base:
        table.add_row(
            "base model", "", "", "", "", "", format.score(base["holdout"], base["holdout_se"])
        )
    return table


# ---- report -----------------------------------------------------------------------------------
@dataclass
class Saved:
    """What the tables read: the arguments and results.json (no model needed for ``--report``)."""

    args: argparse.Namespace
    results: dict[str, Any]


def timing_table(saved: Any) -> Any:
    from rich.table import Table

    timing = saved.results.get("timing")
    table = Table(title="cost of one evaluation on this machine (random 4-layer genome)")
    for col in ("evaluation", "base model s (cold)", "genome s"):
        table.add_column(col)
    if timing:
        names = {
            "kl": "KL + perplexity (2048 tokens)",
            "task20": "task fitness, limit 20 (2 tasks, 40 items)",
        }
        for key, label in names.items():
            t = timing[key]
            table.add_row(label, f"{t['base_s']:.1f}", f"{t['genome_s']:.1f}")
    rows = saved.results.get("c", {}).get("rows", [])
    if rows:
        label = f"held-out ({3 * saved.args.holdout_limit} items; first genome of (c))"
        table.add_row(label, "-", f"{rows[0]['seconds']['holdout']:.1f}")
    return table


def report(saved: Any, console: Any) -> None:
    console.print(timing_table(saved))
    if "c" in saved.results:
        console.print(spearman_table(saved))
    for k in (4, 6, 8):
        if f"b{k}" in saved.results:
            console.print(picks_table(saved, k))
    if "a" in saved.results:
        console.print(ga_table(saved))


def machine_line() -> str:
    import torch

    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores "
        f"(load {os.getloadavg()[0]:.1f}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {sys.version.split()[0]}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=DEFAULT_PARTS, help="c, b4, b6, b8, a, in order")
    parser.add_argument("--dir", type=Path, default=Path("bench/.quality"))
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    parser.add_argument("--random-genomes", type=int, default=40)
    parser.add_argument("--holdout-limit", type=int, default=500)
    parser.add_argument("--calibration-tokens", type=int, default=2048)
    parser.add_argument(
        "--limit100", action="store_true", help="(c) also task fitness at limit 100, last"
    )
    parser.add_argument("--seeds", type=int, default=5, help="GA seeds per kind x mutation in (a)")
    parser.add_argument("--max-generations", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="of the random genomes in (c)")
    parser.add_argument("--cache-mb", type=int, default=3072, help="prefix-cache budget")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("a", "c", "b4", "b6", "b8")]
    if bad:
        raise SystemExit(f"unknown part {bad[0]!r}: use a, c, b4, b6 or b8")
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from rich.console import Console

    console = Console(width=160)
    command = "PYTHONPATH=$PWD .venv/bin/python " + " ".join(
        ["bench/bench_quality.py", *sys.argv[1:]]
    )
    if args.report:
        path = args.dir / "results.json"
        results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        args.holdout_limit = results.get("holdout_limit", args.holdout_limit)
        report(Saved(args, results), console)
        console.print(machine_line())
        console.print(f"command: {command}")
        return 0
    import logging

    from gaprune_tui.engine.setup import set_threads

    logging.basicConfig(level=logging.WARNING)
    threads = set_threads()
    log(f"threads {threads}; parts {parts}")
    bench = build(args)
    measure(bench)
    console.print(timing_table(bench))
    for part in parts:
        log(f"part {part}")
        if part == "c":
            part_c(bench)
        elif part == "a":
            part_a(bench)
        else:
            part_b(bench, int(part[1:]))
        report(bench, console)
    console.print(machine_line())
    console.print(f"command: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
