"""Time from process start to the TUI's first frame, and what the UI process has imported by then.

Spawns a fresh interpreter per sample (so nothing is cached in-process), starts ``GapruneApp`` on
the Setup screen in a pseudo-terminal-free headless driver, and records when Textual's ``Ready``
event arrives ("the DOM is ready and the first frame has been displayed"). Prints a table.

    .venv/bin/python bench/bench_first_frame.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchkit

CHILD = r"""
import json, sys, time
t_spawn = float(sys.argv[1])
from textual import events, on
from gaprune_tui.ui.app import GapruneApp

class Bench(GapruneApp):
    first_frame = None

    @on(events.Ready)
    def _first_frame(self) -> None:
        self.first_frame = time.time()
        self.exit()

app = Bench()
app.run(headless=True, size=(100, 30))
heavy = sorted(m for m in ("torch", "transformers", "lm_eval", "mergekit", "deap") if m in sys.modules)
print(json.dumps({"first_frame_s": app.first_frame - t_spawn, "heavy_imports": heavy}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {
        **os.environ,
        "GAPRUNE_HOME": tempfile.mkdtemp(prefix="gaprune-bench-"),
        "GAPRUNE_ASSUME_GPU": "0",
    }
    child = os.path.join(env["GAPRUNE_HOME"], "first_frame_child.py")
    with open(child, "w", encoding="utf-8") as fh:
        fh.write(CHILD)
    samples, heavy = [], set()
    for _ in range(args.runs):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, child, repr(t0)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        data = json.loads(out.strip().splitlines()[-1])
        samples.append(data["first_frame_s"])
        heavy.update(data["heavy_imports"])

    from rich.console import Console
    from rich.table import Table

    table = Table(title="gaprune-tui: process start -> first frame (Setup screen, 100x30)")
    for col in ("runs", "median s", "min s", "max s", "heavy ML imports in the UI"):
        table.add_column(col)
    table.add_row(
        str(len(samples)),
        f"{statistics.median(samples):.3f}",
        f"{min(samples):.3f}",
        f"{max(samples):.3f}",
        ", ".join(sorted(heavy)) or "none",
    )
    console = Console()
    console.print(table)
    console.print(benchkit.machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
