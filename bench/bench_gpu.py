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
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
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
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=2048,
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--drop", default="20,24,27")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hflm-batch", default="64", help="HFLM batch size, or auto")
    args = parser.parse_args()
    benchkit.offline_env()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import LlamaConfig, LlamaForCausalLM

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
    dtype = getattr(torch, args.dtype)
    tokenizer = load_model("demo", dtype="float32", device="cpu").tokenizer  # the embedded one
    config = LlamaConfig(
        **SHAPES[args.shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    t0 = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
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
