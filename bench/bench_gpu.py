"""Seconds per genome and peak GPU memory on a randomly initialised Llama-3.1-8B-shaped model.

The GPU half of issue 5's benchmark: the same workload as ``bench/bench_scoring.py``
(hellaswag_offline + openbookqa_offline, 0-shot, limit 40 each, one genome dropping layers
{20, 24, 27}) on a model with Llama-3.1-8B's shape (32 layers, hidden 4096, MLP 14336, 32 heads,
8 KV heads, vocab 128256), built directly on the GPU in bf16 with random weights. The embedded
tokenizer supplies the token ids: timing needs real request shapes, not real predictions, so the
scores are those of a random model (near chance) and are printed only to show both scorers agree.

Rows: (B) lm-eval's HFLM on the in-memory layer view, (C) FastLM cold (prefix cache off), (D)
FastLM on a prefix-cache hit (the base model scored first, the genome itself unseen). Each is the
median of --repeats runs after a warm-up, with the peak GPU memory of that row.

    python bench/bench_gpu.py                      # on a machine with a CUDA GPU
    python bench/bench_gpu.py --shape tiny --device cpu --dtype float32 --limit 5   # smoke run

``--scaling`` (issue 12) measures a whole search on N GPUs instead: the same small search (seed 0)
run through the CLI as a user runs it, each row in its own GAPRUNE_HOME (so every row scores the
same fresh genomes): on one GPU in the engine process, on one GPU worker process (the worker's own
overhead), and with ``--devices`` on N GPUs (``all``, or cuda:0..N-1 with ``--gpus N``). Each row
gives genomes per hour over the generations' time, the seconds loaded workers sat idle per
generation (the engine log's per-generation line), the genomes each worker scored (result.json's
``worker_evaluations``, counted from the WorkerStatus events), the speed-up against one GPU and
the expected one: a generation of G genomes on N workers takes at least ceil(G/N) genome-times, so
at most G/ceil(G/N) (N when N divides G), less the driver's share. Every row must find the same
result. Without CUDA it stops with one line; ``--cpu-smoke`` runs the same rows on the CPU with
``--workers N`` in place of ``--devices`` (the code path, not a GPU figure).

    python bench/bench_gpu.py --scaling                          # every visible GPU, the demo model
    python bench/bench_gpu.py --scaling --gpus 4 --model ./Llama-3.1-8B --population 16
    python bench/bench_gpu.py --scaling --random-model --shape llama-3.1-8b   # no checkpoint here
    python bench/bench_gpu.py --scaling --cpu-smoke --gpus 2 --population 4 --generations 1
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import benchkit

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        # 8192, not 131072: HFLM sizes its batches from max_length; requests here are < 300 tokens.
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    ),
}


NO_CUDA = (
    "no CUDA device here: --scaling needs GPUs (2 or more to scale); "
    "--cpu-smoke runs its rows on the CPU with --workers"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Both modes' options (``--help`` needs neither torch nor a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--drop", default="20,24,27")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hflm-batch", default="64", help="HFLM batch size, or auto")
    scaling = parser.add_argument_group("--scaling: one search on 1 and N GPUs (issue 12)")
    scaling.add_argument("--scaling", action="store_true", help="measure a search on 1 and N GPUs")
    scaling.add_argument("--gpus", type=int, default=None, help="N (default: every visible GPU)")
    scaling.add_argument("--model", default="demo", help="what the search prunes")
    scaling.add_argument(
        "--random-model",
        action="store_true",
        help="search a randomly initialised --shape model in --dtype, written to a temp folder",
    )
    scaling.add_argument("--fitness", default="squared_mean")
    scaling.add_argument("--population", type=int, default=8)
    scaling.add_argument("--generations", type=int, default=2)
    scaling.add_argument("--prune", type=int, default=4)
    scaling.add_argument("--cpu-smoke", action="store_true", help="the rows on CPU (--workers N)")
    scaling.add_argument("--out", type=Path, default=Path("bench/bench_gpu_scaling.md"))
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    benchkit.offline_env()
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.scaling:
        return scaling(args)
    return one_genome(args)


# ---- --scaling: a search on 1 and N GPUs ----------------------------------------------------------
ScalingRow = tuple[str, int, list[str]]  # name, workers, CLI flags


def scaling_rows(gpus: int, *, every: bool, smoke: bool) -> list[ScalingRow]:
    """The rows: one device in the engine process, one worker process, N workers.
    ``every``: N is every visible GPU (``--devices all``); ``smoke``: CPU, ``--workers N``."""
    if smoke:
        return [
            ("1 process (CPU, in-process)", 1, ["--device", "cpu"]),
            (f"{gpus} CPU workers", gpus, ["--device", "cpu", "--workers", str(gpus)]),
        ]
    rows: list[ScalingRow] = [
        ("1 GPU (in-process)", 1, ["--device", "cuda:0"]),
        ("1 GPU worker (--devices cuda:0)", 1, ["--devices", "cuda:0"]),
    ]
    if gpus > 1:
        devices = "all" if every else ",".join(f"cuda:{i}" for i in range(gpus))
        rows.append((f"{gpus} GPU workers (--devices {devices})", gpus, ["--devices", devices]))
    return rows


def expected_speedup(genomes_per_generation: int, workers: int) -> float:
    """The most N workers can gain on a generation of G genomes scored one per worker at a
    time: G / ceil(G / N) (the last round leaves workers idle unless N divides G)."""
    g, n = max(1, genomes_per_generation), max(1, workers)
    return g / math.ceil(g / n)


def scaling_table(
    rows: list[tuple[str, int, Any]], population: int, *, shared_cpu: bool = False
) -> list[str]:
    """Markdown rows: (name, workers, bench_backends.Row) each, the first row the base (one GPU,
    or one CPU process where ``shared_cpu``: workers then split one CPU, so expect about 1x)."""
    lines = [
        "| backend | genomes | search s | genomes/hour | idle s per generation | "
        "speed-up vs the first row | expected | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = rows[0][2]
    for name, workers, row in rows:
        per_worker = ", ".join(f"{k} {v}" for k, v in row.workers.items())
        same = (row.dropped, row.fitness) == (base.dropped, base.fitness)
        speedup = row.per_hour / base.per_hour if base.per_hour else 0.0
        expected = 1.0 if shared_cpu else expected_speedup(population, workers)
        lines.append(
            f"| {name} | {row.genomes}"
            + (f" ({per_worker})" if per_worker else "")
            + f" | {row.search_s:.1f} | {row.per_hour:.0f} | "
            + (", ".join(f"{s:.1f}" for s in row.idle) or "-")
            + f" | {speedup:.2f}x | {expected:.2f}x | "
            + f"drop {row.dropped}, fitness {row.fitness:.4f}{'' if same else ' (DIFFERS)'} |"
        )
    return lines


def visible_gpus(args: argparse.Namespace) -> int | str:
    """N for the scaling rows, or the one-line reason there is none (no CUDA, too few GPUs)."""
    if args.cpu_smoke:
        return args.gpus or 2
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return NO_CUDA
    if args.gpus is not None and not 1 <= args.gpus <= count:
        return f"--gpus {args.gpus}: this machine has {count} visible CUDA device(s)"
    return args.gpus or count


def random_llama(shape: str, dtype: str, device: Any, tokenizer: Any) -> Any:
    """A Llama of ``SHAPES[shape]`` with random weights (seed 0), built directly in ``dtype`` on
    ``device`` (no float32 copy first), whose special tokens are ``tokenizer``'s."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **SHAPES[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype=dtype,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            return LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)


def random_model(args: argparse.Namespace) -> str:
    """A randomly initialised ``--shape`` model in ``--dtype`` with the embedded tokenizer, saved
    to a temp folder: a search needs a checkpoint, and the lent GPU machine has no network."""
    from gaprune_tui.engine.model import load_model

    tokenizer = load_model("demo", dtype="float32", device="cpu").tokenizer
    folder = Path(tempfile.mkdtemp(prefix=f"gaprune-bench-{args.shape}-"))
    device = "cpu" if args.cpu_smoke else "cuda:0"
    model = random_llama(args.shape, args.dtype, device, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def scaling(args: argparse.Namespace) -> int:
    """``--scaling``: the rows of ``scaling_rows``, each a real ``gaprune-tui run``."""
    from bench_backends import run_row

    gpus = visible_gpus(args)
    if isinstance(gpus, str):
        print(gpus, file=sys.stderr)
        return 2
    # One converted copy of the model for every row (each row has its own GAPRUNE_HOME).
    os.environ.setdefault("GAPRUNE_CACHE_DIR", tempfile.mkdtemp(prefix="gaprune-bench-cache-"))
    model = random_model(args) if args.random_model else args.model
    rows = []
    for name, workers, flags in scaling_rows(gpus, every=args.gpus is None, smoke=args.cpu_smoke):
        row = run_row(flags, args, model=model)
        rows.append((name, workers, row))
        print(
            f"{name}: {row.genomes} genomes, {row.per_hour:.0f}/hour, idle {row.idle}", flush=True
        )
    lines = [
        f"search: {'random ' + args.shape + '-shaped model' if args.random_model else args.model}"
        f", fitness {args.fitness}, population {args.population} x {args.generations} "
        f"generations, limit {args.limit}, {args.prune} layers dropped, seed 0",
        "",
        *scaling_table(rows, args.population, shared_cpu=args.cpu_smoke),
        "",
        f"{benchkit.machine()}; {gpu_names(args)}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")
    same = all((r.dropped, r.fitness) == (rows[0][2].dropped, rows[0][2].fitness) for *_, r in rows)
    if not same:
        print("error: the rows found different results", file=sys.stderr)
    return 0 if same else 1


def gpu_names(args: argparse.Namespace) -> str:
    """The GPUs a table was measured on (or that it was a CPU smoke run)."""
    if args.cpu_smoke:
        return "CPU smoke run (--workers), no GPU"
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} GPUs: {', '.join(names)}"


# ---- one genome: rows B, C and D ------------------------------------------------------------------
def one_genome(args: argparse.Namespace) -> int:
    """The original mode: seconds per genome and peak memory of HFLM and FastLM (rows B-D)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.engine.layers import LayerView
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.tasks import build_tasks

    console = Console(width=150)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        console.print("no CUDA device here: use --device cpu --shape tiny for a smoke run")
        return 2
    tokenizer = load_model("demo", dtype="float32", device="cpu").tokenizer  # the embedded one
    t0 = time.perf_counter()
    model = random_llama(args.shape, args.dtype, device, tokenizer)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer, view=LayerView(model))
    names = ["hellaswag_offline", "openbookqa_offline"]
    taskset = build_tasks(
        RunConfig(tasks=[TaskSpec(n) for n in names], limit=args.limit).validate()
    )
    n = loaded.view.n_layers
    dropped = {int(x) for x in args.drop.split(",")}
    kept = [i for i in range(n) if i not in dropped]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def score(lm: Any, layers: list[int]) -> dict:
        with loaded.view.view(layers), torch.no_grad():
            out = taskset.evaluate(lm)
        sync()
        return out

    def row(lm: Any, before: Any = None) -> tuple[float, list[float], float, dict]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        scores = score(lm, kept)  # warm-up
        times = []
        for _ in range(args.repeats):
            if before is not None:
                before()
            t = time.perf_counter()
            scores = score(lm, kept)
            times.append(time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        return statistics.median(times), times, peak, scores

    batch: int | str = args.hflm_batch if args.hflm_batch == "auto" else int(args.hflm_batch)
    rows = []
    hflm = make_lm(loaded, "hflm", batch_size=batch)
    rows.append((f"B HFLM in memory (batch {args.hflm_batch})", *row(hflm)))
    del hflm
    fast = make_lm(loaded, "fast", prefix_cache=False)
    rows.append(("C FastLM, cold", *row(fast)))
    del fast
    cached = make_lm(loaded, "fast", prefix_cache=True)
    score(cached, list(range(n)))  # the base model first, as the engine does: fills the cache
    rows.append(("D FastLM, prefix-cache hit", *row(cached, cached.cache.lru.clear)))

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    table = Table(
        title=(
            f"one genome (drop {sorted(dropped)}) on a random {args.shape}-shaped model "
            f"({params / 1e9:.2f}B params, {args.dtype}), {' + '.join(names)}, 0-shot, "
            f"limit {args.limit} each; {where}"
        )
    )
    for col in ("method", "s/genome (median)", "runs (s)", "peak GPU GiB", "scores", "vs C"):
        table.add_column(col)
    c_time = rows[1][1]
    for name, med, times, peak, scores in rows:
        table.add_row(
            name,
            f"{med:.3f}",
            " ".join(f"{t:.3f}" for t in times),
            f"{peak:.1f}" if device.type == "cuda" else "-",
            ", ".join(
                f"{k.removesuffix('_offline')} {v['acc_norm']:.4f}" for k, v in scores.items()
            ),
            f"{med / c_time:.2f}x",
        )
    console.print(table)
    console.print(
        f"B/C {rows[0][1] / c_time:.2f}x, B/D {rows[0][1] / rows[2][1]:.2f}x; model built in "
        f"{build_s:.1f} s; torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    same = len({repr(sorted(r[4].items())) for r in rows}) == 1
    console.print(f"scores identical across scorers: {same} (random weights, {args.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
