"""What the benchmarks share: the offline environment they run in, the embedded model with the same
random genomes in every benchmark, and the line that names the machine a table was measured on.

Each benchmark runs as ``python bench/NAME.py``, so this folder is on ``sys.path`` and this module
imports as ``benchkit``. Nothing heavy is imported at module level: the environment must be set
before torch, transformers or lm-eval are first imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any


def parser(doc: str, **defaults: int | str) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line as the description, and an option
    per keyword (``top_k=256`` is ``--top-k``, an int because its default is one)."""
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        out.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return out


def offline_env() -> None:
    """No network, and a throwaway GAPRUNE_HOME so that a benchmark never touches the user's runs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))


@dataclass
class Demo:
    """The embedded model as a benchmark measures it, and the genomes it times."""

    loaded: Any  # engine.model.LoadedModel
    threads: int  # torch threads (engine.setup.set_threads)
    load_s: float
    genomes: list[list[int]]  # dropped layers, each sorted

    def kept(self, dropped: list[int]) -> list[int]:
        """The layers a genome keeps."""
        return [i for i in range(self.loaded.n_layers) if i not in set(dropped)]


def load_demo(count: int, prune: int) -> Demo:
    """The embedded model (fp32, CPU, the engine's thread count) and ``count`` genomes of ``prune``
    dropped layers drawn with seed 0 from layers 2 on: the same genomes in every benchmark."""
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.setup import set_threads

    threads = set_threads()
    t0 = time.perf_counter()
    loaded = load_model("demo", dtype="float32", device="cpu")
    load_s = time.perf_counter() - t0
    rng = random.Random(0)
    genomes = [sorted(rng.sample(range(2, loaded.n_layers), prune)) for _ in range(count)]
    return Demo(loaded, threads, load_s, genomes)


def machine(threads: int | None = None, load_s: float | None = None) -> str:
    """The line under a table: architecture, cores, torch and its threads (when it was used),
    python, and how long the model took to load (when measured)."""
    line = f"machine: {platform.machine()}, {os.cpu_count()} cores"
    if threads is not None:
        import torch

        line += f", torch {torch.__version__} ({threads} threads)"
    line += f", python {sys.version.split()[0]}"
    if load_s is not None:
        line += f"; model load {load_s:.1f} s"
    return line
