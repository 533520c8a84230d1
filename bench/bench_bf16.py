"""bfloat16 on CPU, measured: exactness against lm-eval's HFLM and quality against float32.

Base model (all layers) of the embedded model, 0-shot, the bundled offline tasks:

1. exactness: the fast scorer and HFLM (batch ``--hflm-batch``) both in bfloat16 on the first
   ``--exact-limit`` items of every task: items whose per-item metric (correct or not) differs,
   and the largest per-request loglikelihood difference; and for each of the two, the items whose
   correctness differs from float32 (where fast and HFLM are identical). In float32 the two are identical (the
   project's tests prove it); this says how far bfloat16 moves them apart.
2. quality cost: fast-scorer task scores in bfloat16 against float32 on ``--limit`` items per task,
   with their standard errors, and items whose correctness flips.
3. KL(fp32 || bf16) of next-token distributions over the full vocabulary on the default
   calibration text (mean over positions, stderr over sequences), with both perplexities.

    PYTHONPATH=$PWD python bench/bench_bf16.py --limit 100 --exact-limit 40
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

TASKS = [
    "arc_challenge_offline",
    "arc_easy_offline",
    "boolq_offline",
    "hellaswag_offline",
    "openbookqa_offline",
    "piqa_offline",
    "sciq_offline",
    "winogrande_offline",
]


def per_item(lm: Any, taskset: Any, limit: int) -> dict[str, dict[int, tuple[float, list[float]]]]:
    """``{task: {doc_id: (metric value, [loglikelihood per request])}}`` via lm-eval's samples."""
    from lm_eval import evaluator

    tasks = {t.name: t.task for t in taskset.tasks}
    out = evaluator.evaluate(
        lm=lm,
        task_dict={"tasks": tasks, "groups": {}, "group_map": {}},
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )
    metrics = taskset.metrics
    items: dict[str, dict[int, tuple[float, list[float]]]] = {}
    for task in taskset.tasks:
        metric = metrics[task.name]
        items[task.name] = {
            int(s["doc_id"]): (float(s[metric]), [float(r[0]) for r in s["filtered_resps"]])
            for s in out["samples"][task.name]
        }
    return items


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its binomial-style standard error (sample sd / sqrt(n))."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def kl_fp32_bf16(fp32: Any, bf16: Any) -> tuple[float, float, float, float]:
    """Full-vocabulary KL(fp32 || bf16) on the default calibration text, and both perplexities."""
    import torch

    from gaprune_tui.engine.calibration import DEFAULT_CALIBRATION, load_calibration

    cal = load_calibration(DEFAULT_CALIBRATION, fp32.tokenizer)
    ids = cal.input_ids
    per_seq_kl, nll_p, nll_q = [], [], []
    with torch.no_grad():
        for row in ids.split(1):
            logp = torch.log_softmax(fp32.model(row).logits.float()[0, :-1], dim=-1)
            logq = torch.log_softmax(bf16.model(row).logits.float()[0, :-1], dim=-1)
            kl = (logp.exp() * (logp - logq)).sum(-1)
            per_seq_kl.append(float(kl.mean()))
            target = row[0, 1:].unsqueeze(1)
            nll_p.append(float(-logp.gather(1, target).mean()))
            nll_q.append(float(-logq.gather(1, target).mean()))
    kl_mean, kl_se = mean_se(per_seq_kl)
    print(f"calibration: {cal.description}")
    return kl_mean, kl_se, math.exp(sum(nll_p) / len(nll_p)), math.exp(sum(nll_q) / len(nll_q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="items per task, quality")
    parser.add_argument("--exact-limit", type=int, default=40, help="items per task, vs HFLM")
    parser.add_argument("--hflm-batch", type=int, default=16)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--skip-hflm", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))
    os.environ["TQDM_DISABLE"] = "1"

    import torch

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.setup import set_threads
    from gaprune_tui.engine.tasks import build_tasks

    set_threads()
    names = args.tasks.split(",")
    config = RunConfig(tasks=[TaskSpec(n) for n in names], limit=args.limit).validate()
    taskset = build_tasks(config)
    runs: dict[str, Any] = {}
    models = {}
    for dtype in ("bfloat16", "float32"):
        models[dtype] = load_model("demo", dtype=dtype, device="cpu")
        t0 = time.perf_counter()
        with torch.no_grad():
            runs[f"fast {dtype}"] = per_item(make_lm(models[dtype], "fast"), taskset, args.limit)
        print(f"fast {dtype} limit {args.limit}: {time.perf_counter() - t0:.0f}s", flush=True)
    if not args.skip_hflm:
        t0 = time.perf_counter()
        hflm = make_lm(models["bfloat16"], "hflm", batch_size=args.hflm_batch)
        with torch.no_grad():
            runs["hflm bfloat16"] = per_item(hflm, taskset, args.exact_limit)
        print(
            f"hflm bfloat16 limit {args.exact_limit}: {time.perf_counter() - t0:.0f}s", flush=True
        )

        print(
            f"\nexactness, bf16, first {args.exact_limit} items: fast vs HFLM batch {args.hflm_batch}"
        )
        print(
            f"{'task':22} {'fast':>7} {'hflm':>7} {'items differ':>13} {'max |dll|':>10} "
            f"{'fast vs fp32':>13} {'hflm vs fp32':>13}"
        )
        for name in names:
            hf = runs["hflm bfloat16"][name]
            fa = {d: v for d, v in runs["fast bfloat16"][name].items() if d in hf}
            f32 = runs["fast float32"][name]  # = HFLM's in float32 (tests/test_scoring.py)
            differ = sum(fa[d][0] != hf[d][0] for d in hf)
            fa_32 = sum(fa[d][0] != f32[d][0] for d in hf)
            hf_32 = sum(hf[d][0] != f32[d][0] for d in hf)
            dll = max(abs(a - b) for d in hf for a, b in zip(fa[d][1], hf[d][1], strict=True))
            f_mean = sum(v[0] for v in fa.values()) / len(fa)
            h_mean = sum(v[0] for v in hf.values()) / len(hf)
            print(
                f"{name:22} {f_mean:7.3f} {h_mean:7.3f} {differ:>8}/{len(hf):<4} {dll:10.4f} "
                f"{fa_32:>8}/{len(hf):<4} {hf_32:>8}/{len(hf):<4}"
            )

    print(f"\nquality, fast scorer, limit {args.limit}: bf16 vs fp32 (mean +- stderr)")
    print(f"{'task':22} {'fp32':>15} {'bf16':>15} {'diff':>7} {'flips':>7} {'max |dll|':>10}")
    for name in names:
        f32, b16 = runs["fast float32"][name], runs["fast bfloat16"][name]
        m32, s32 = mean_se([v[0] for v in f32.values()])
        m16, s16 = mean_se([v[0] for v in b16.values()])
        flips = sum(f32[d][0] != b16[d][0] for d in f32)
        dll = max(abs(a - b) for d in f32 for a, b in zip(f32[d][1], b16[d][1], strict=True))
        print(
            f"{name:22} {m32:7.3f}+-{s32:.3f} {m16:7.3f}+-{s16:.3f} {m16 - m32:+7.3f} "
            f"{flips:>3}/{len(f32):<3} {dll:10.4f}"
        )
    kl, kl_se, ppl32, ppl16 = kl_fp32_bf16(models["float32"], models["bfloat16"])
    print(
        f"KL(fp32 || bf16) full vocab: {kl:.5f} +- {kl_se:.5f} nats/token; "
        f"perplexity fp32 {ppl32:.3f}, bf16 {ppl16:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
