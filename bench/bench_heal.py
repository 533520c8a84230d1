"""Does healing help, and which method? Issue 22's measurement on the embedded model.

Workload: the embedded SmolLM2-135M-Instruct in float32 on the CPU; genomes from the search bench
(``docs/search.md``): at k = 8 the default run's pick and ShortGPT's, at k = 10 the same two. Each
heal runs in its own process (so its peak memory is its own) through the engine's pieces
(``build_student``, ``Trainer``, ``load_healed``, the KL scorer and the held-out evaluator), on the
offline healing text (``engine/heal.py``: no measured task's data, no calibration text):

* KL(base || model) on the default calibration (offline, 2,048 tokens, 16 x 128), paired per
  sequence against the genome before healing;
* held-out: the mean over ARC-Easy, PIQA and WinoGrande at 500 items each, with its standard error
  (unpaired against before: conservative);
* wall time of the training alone, tokens/s and the process's peak resident memory (model,
  teacher and student included).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_heal.py [--plan full|quick] [--report]

Results are appended to ``--dir`` (default ``bench/.heal``) one JSON line per measurement, so an
interrupted bench resumes where it stopped and ``--report`` prints the table from what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GENOMES = {
    "k8-pick": [5, 13, 14, 15, 16, 17, 18, 26],
    "k8-shortgpt": [3, 12, 13, 14, 15, 16, 17, 26],
    "k10-pick": [5, 6, 7, 13, 14, 15, 16, 17, 18, 26],
    "k10-shortgpt": [3, 12, 13, 14, 15, 16, 17, 18, 25, 26],
}
HOLDOUT = ("arc_easy_offline", "piqa_offline", "winogrande_offline")
# (genome, method, objective, tokens), most important first: the bench can stop at any line.
FULL_PLAN: list[tuple[str, str, str, int]] = [
    ("k8-pick", "partial", "kd", 32_768),
    ("k8-pick", "lora", "kd", 32_768),
    ("k8-pick", "partial", "ce", 32_768),
    ("k8-pick", "partial", "kd", 8_192),
    ("k10-shortgpt", "partial", "kd", 32_768),
    ("k8-pick", "lora", "kd", 8_192),
    ("k10-shortgpt", "lora", "kd", 32_768),
    ("k8-pick", "lora", "kd", 131_072),
    ("k8-pick", "lora", "ce", 32_768),
    ("k8-pick", "partial", "kd", 131_072),
    ("k10-pick", "lora", "kd", 32_768),
    ("k8-shortgpt", "lora", "kd", 32_768),
]
QUICK_PLAN = FULL_PLAN[:2]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def key(genome: str, method: str, objective: str, tokens: int) -> str:
    return f"{genome} {method}/{objective} {tokens}"


def read_lines(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["key"]] = row
    return out


def machine(threads: int) -> str:
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
        f"({threads} threads), float32"
    )


class Measure:
    """The model, the calibration text with the base's distributions, the held-out tasks."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from gaprune_tui.core.config import RunConfig, TaskSpec
        from gaprune_tui.core.store import Memo
        from gaprune_tui.engine.calibration import load_calibration
        from gaprune_tui.engine.kl import BaseDistributions
        from gaprune_tui.engine.model import load_model
        from gaprune_tui.engine.tasks import build_tasks

        torch.set_num_threads(args.threads)
        self.loaded = load_model("demo", dtype="float32", device="cpu")
        self.calibration = load_calibration("offline", self.loaded.tokenizer, 2048)
        self.base = BaseDistributions.compute(self.loaded, self.calibration)
        self.held = RunConfig(
            tasks=[TaskSpec(t) for t in HOLDOUT], limit=args.holdout_limit
        ).validate()
        self.taskset = build_tasks(self.held)
        self.memo = Memo(args.dir / "memo.db")

    def numbers(self, loaded: Any, dropped: list[int]) -> dict[str, Any]:
        from gaprune_tui.core.stats import fitness_stderr
        from gaprune_tui.engine.evaluator import Evaluator
        from gaprune_tui.engine.kl import KLScorer
        from gaprune_tui.engine.scoring import make_lm

        lm = make_lm(loaded, "fast", prefix_cache=False)
        kept = [i for i in range(loaded.n_layers) if i not in set(dropped)]
        kl = KLScorer(loaded, self.calibration, self.base, lm=lm).score(kept)
        held = Evaluator(loaded, self.taskset, self.held, self.memo, lm=lm, kind="mean")(dropped)
        return {
            "kl": kl["kl"],
            "kl_se": kl["kl_stderr"],
            "kl_seq": kl["kl_seq"],
            "ppl": kl["ppl"],
            "ppl_se": kl["ppl_stderr"],
            "holdout": held.fitness,
            "holdout_se": fitness_stderr(held.scores, "mean"),
            "holdout_scores": held.scores,
        }


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: a genome before healing, or one heal and after."""
    import tempfile

    from gaprune_tui.core.heal import HealConfig
    from gaprune_tui.engine.heal import (
        Trainer,
        build_student,
        healed_tensors,
        load_heal_data,
        load_healed,
        student_loaded,
        weights_digest,
    )

    load_before = os.getloadavg()[0]
    m = Measure(args)
    dropped = GENOMES[args.genome]
    if args.method == "before":
        row = m.numbers(m.loaded, dropped)
        return {"key": f"{args.genome} before", "genome": args.genome, "dropped": dropped, **row}
    config = HealConfig(method=args.method, objective=args.objective, tokens=args.tokens).validate()
    data = load_heal_data(
        "offline",
        m.loaded.tokenizer,
        config.tokens,
        config.seq_len,
        measured_tasks=list(HOLDOUT),
    )
    kept = [i for i in range(m.loaded.n_layers) if i not in set(dropped)]
    student = build_student(m.loaded.view, kept, config)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(m.loaded.model, student, data, config, Path(folder))
        losses = trainer.run()
    tensors = healed_tensors(student)
    del student
    healed = load_healed(m.loaded.view, kept, tensors)
    row = m.numbers(student_loaded(m.loaded, healed, "bench:" + weights_digest(tensors)), [])
    return {
        "key": key(args.genome, args.method, args.objective, args.tokens),
        "genome": args.genome,
        "dropped": dropped,
        "method": args.method,
        "objective": args.objective,
        "tokens": trainer.steps * config.tokens_per_step,
        "steps": trainer.steps,
        "train_s": round(trainer.seconds, 1),
        "tokens_per_s": round(trainer.steps * config.tokens_per_step / trainer.seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "trainable": int(sum(t.numel() for t in tensors.values())),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "data": data.description,
        # The 1-minute load average at the start and the end: above the threads used, the
        # machine was shared and the times are contended.
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **row,
    }


def run_plan(args: argparse.Namespace) -> None:
    path = args.dir / "results.jsonl"
    plan = FULL_PLAN if args.plan == "full" else QUICK_PLAN
    todo: list[list[str]] = []
    for g, m, o, t in plan:  # each genome measured before its first heal, not all up front
        if ["--genome", g, "--method", "before"] not in todo:
            todo.append(["--genome", g, "--method", "before"])
        todo.append(["--genome", g, "--method", m, "--objective", o, "--tokens", str(t)])
    for extra in todo:
        done = read_lines(path)
        name = (
            f"{extra[1]} before"
            if extra[3] == "before"
            else key(extra[1], extra[3], extra[5], int(extra[7]))
        )
        if name in done:
            continue
        log(f"measuring {name}")
        cmd = [sys.executable, __file__, "--one", "--dir", str(args.dir)]
        cmd += ["--threads", str(args.threads), "--holdout-limit", str(args.holdout_limit)]
        proc = subprocess.run(cmd + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"failed: {proc.stderr[-2000:]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["machine"] = machine(args.threads)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        log(f"done {name}: KL {row['kl']:.4f} held-out {row['holdout']:.4f}")


def load_of(row: dict[str, Any]) -> str:
    """The load average around a heal ("shared" for rows measured before it was recorded, when
    the machine was known to be shared with other jobs)."""
    load = row.get("load")
    return "shared" if load is None else f"{load[0]:.1f}/{load[1]:.1f}"


def report(args: argparse.Namespace) -> None:
    from gaprune_tui.core.stats import compare, paired_compare

    rows = read_lines(args.dir / "results.jsonl")
    if not rows:
        print("nothing measured yet")
        return
    print(
        "| genome | method / objective | tokens | train s | tok/s | load | peak RSS | KL ± SE "
        "| vs before (paired) | held-out ± SE | vs before |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in GENOMES:
        before = rows.get(f"{name} before")
        if before is None:
            continue
        print(
            f"| {name} {before['dropped']} | before healing | – | – | – | – | – | "
            f"{before['kl']:.4f} ± {before['kl_se']:.4f} | – | "
            f"{before['holdout']:.4f} ± {before['holdout_se']:.4f} | – |"
        )
        heals = [r for r in rows.values() if r["genome"] == name and "method" in r]
        heals.sort(key=lambda r: (r["method"], r["objective"], r["tokens"]))
        for r in heals:
            kv = paired_compare(r["kl_seq"], before["kl_seq"], higher_is_better=False)
            hv = compare(
                (r["holdout"], r["holdout_se"]),
                (before["holdout"], before["holdout_se"]),
                higher_is_better=True,
            )
            print(
                f"| {name} | {r['method']} / {r['objective']} | {r['tokens']:,} | "
                f"{r['train_s']:.0f} | {r['tokens_per_s']:.0f} | {load_of(r)} | "
                f"{r['peak_rss_mb']:.0f} MB | "
                f"{r['kl']:.4f} ± {r['kl_se']:.4f} | {kv.outcome} ({kv.diff:+.4f} ± "
                f"{kv.stderr:.4f}) | {r['holdout']:.4f} ± {r['holdout_se']:.4f} | "
                f"{hv.outcome} ({hv.diff:+.4f}) |"
            )
    machines = {r.get("machine") for r in rows.values() if r.get("machine")}
    for m in sorted(machines):
        print(f"\nmachine: {m}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench/.heal"))
    parser.add_argument("--plan", choices=("full", "quick"), default="full")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--holdout-limit", type=int, default=500)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--genome", choices=sorted(GENOMES))
    parser.add_argument("--method", choices=("before", "partial", "lora"))
    parser.add_argument("--objective", choices=("kd", "ce"), default="kd")
    parser.add_argument("--tokens", type=int, default=32_768)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args)
    elif args.one:
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(one(args)))
    else:
        run_plan(args)
        report(args)


if __name__ == "__main__":
    main()
