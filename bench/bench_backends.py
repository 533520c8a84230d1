"""Genomes per hour on 1 and 2 local workers and 2 Ray actors, with idle time per generation.

Issue 12's measure: the same search (the embedded SmolLM2-135M-Instruct in fp32 on CPU, seed 0)
run through the CLI as a user runs it, once per backend, each in its own GAPRUNE_HOME (its own
memo, so every backend scores the same fresh genomes). For each: the genomes scored, the time the
generations took (the search only: model loading, baselines and confirmation are left out), the
genomes per hour over that time, and the seconds workers sat idle per generation (from the
engine's "s idle" log lines: time a loaded worker had no genome while the generation ran). Every
row must find the same result; the bench checks it.

On a 2-core machine the workers split the cores (1 torch thread each against the in-process
backend's 2), so expect little gain here: this measures the overhead and the idle time honestly.

    .venv/bin/python bench/bench_backends.py [--population 8] [--generations 2] [--limit 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import benchkit

ROWS = {
    # One worker is the in-process backend: the engine scores the genomes itself, on all cores.
    "1 worker (in-process)": [],
    "2 local workers": ["--workers", "2"],
    "2 Ray actors": ["--ray", "local", "--workers", "2"],
}
_IDLE = re.compile(r"generation scored on \d+ \w+ in ([\d.]+) s; ([\d.]+) s idle")
_GEN = re.compile(r"^(\S+ \S+) INFO __main__: generation (\d+):", re.M)


@dataclass
class Row:
    """One backend's run: what it scored, how fast, how long workers idled, what it found."""

    genomes: int
    search_s: float
    idle: list[float]
    dropped: list[int]
    fitness: float
    workers: dict[str, int]

    @property
    def per_hour(self) -> float:
        return 3600 * self.genomes / self.search_s if self.search_s else 0.0


def run_row(flags: list[str], args: argparse.Namespace, model: str = "demo") -> Row:
    """One ``gaprune-tui run`` of the search in ``args`` with ``flags`` (bench_gpu.py's scaling
    rows pass their own ``model``), in a fresh GAPRUNE_HOME."""
    home = Path(tempfile.mkdtemp(prefix="gaprune-bench-backends-"))
    cmd = [sys.executable, "-m", "gaprune_tui", "run", "--model", model, "--json"]
    cmd += ["--fitness", args.fitness, "--limit", str(args.limit), "--prune", str(args.prune)]
    cmd += ["--population", str(args.population), "--generations", str(args.generations)]
    cmd += ["--finalists", "0", "--seed", "0", *flags]
    env = {**os.environ, "GAPRUNE_HOME": str(home)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(flags) or 'in-process'} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    (run_dir,) = (home / "data" / "runs").iterdir()
    log = (run_dir / "engine.log").read_text()
    from gaprune_tui.core.store import RunStore

    gens = RunStore(run_dir).generations()
    search_s = sum(g.seconds for g in gens)
    idle = [float(m.group(2)) for m in _IDLE.finditer(log)]
    return Row(
        genomes=result["evaluations"],
        search_s=search_s,
        idle=idle,
        dropped=result["dropped_layers"],
        fitness=result["fitness"],
        workers=result.get("worker_evaluations") or {},
    )


def main() -> int:
    parser = benchkit.parser(
        __doc__,
        rows=",".join(ROWS),
        fitness="squared_mean",
        population=8,
        generations=2,
        limit=20,
        prune=4,
    )
    parser.add_argument("--out", type=Path, default=Path("bench/bench_backends.md"))
    args = parser.parse_args()
    benchkit.offline_env()
    os.environ.setdefault("TQDM_DISABLE", "1")
    # One converted copy of the embedded model for every row (each row has its own GAPRUNE_HOME).
    os.environ.setdefault("GAPRUNE_CACHE_DIR", tempfile.mkdtemp(prefix="gaprune-bench-cache-"))
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    lines = [
        f"search: embedded model, fitness {args.fitness}, population {args.population} x "
        f"{args.generations} generations, limit {args.limit}, {args.prune} layers dropped, seed 0",
        "",
        "| backend | genomes | search s | genomes/hour | idle s per generation | result |",
        "|---|---|---|---|---|---|",
    ]
    first: tuple[list[int], float] | None = None
    for name in wanted:
        row = run_row(ROWS[name], args)
        same = (row.dropped, row.fitness) == first if first else True
        first = first or (row.dropped, row.fitness)
        idle = ", ".join(f"{s:.1f}" for s in row.idle) or "-"
        per_worker = ", ".join(f"{k} {v}" for k, v in row.workers.items())
        lines.append(
            f"| {name} | {row.genomes}"
            + (f" ({per_worker})" if per_worker else "")
            + f" | {row.search_s:.1f} | {row.per_hour:.0f} | {idle} | drop {row.dropped}, "
            f"fitness {row.fitness:.4f}{'' if same else ' (DIFFERS)'} |"
        )
        print(lines[-1], flush=True)
        if not same:
            print(f"error: {name} found another result than {wanted[0]}", file=sys.stderr)
            return 1
    lines += ["", benchkit.machine()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
