"""bfloat16 against float32, per item: the contract of ``engine/flips.py``, measured.

The embedded model, 0-shot, the bundled offline tasks, on the base model and two pruned views:
for each task and view, the items whose answer (argmax of the choices' log-likelihoods, lm-eval's
``acc``) in bfloat16 differs from the float32 answer, for the fast scorer, for lm-eval's HFLM with
its default ``softmax_dtype`` (log-softmax in bfloat16) and for HFLM with ``softmax_dtype=float32``.
Then Spearman's rho between the KL fitness of random genomes in float32 and in bfloat16 (each
against its own dtype's base model, on the default calibration text at ``--kl-tokens``).

Rows are printed and appended to ``--out`` (JSON lines) as they come, so a run cut short keeps
what it measured; ``--table`` prints the table of such a file.

    PYTHONPATH=$PWD python bench/bench_bf16.py --limit 100 --out bf16_flips.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from gaprune_tui.core.tasknames import bundled_task_names

# The eight bundled offline tasks.
TASKS = bundled_task_names()
VIEWS = {
    "base": (),
    "drop [13,14,15,17]": (13, 14, 15, 17),
    "drop [4,6,7,9,16,17,19,26]": (4, 6, 7, 9, 16, 17, 19, 26),
}


def table(records: list[dict]) -> str:
    """The README's flip table: one line per task and view, then the totals per view."""
    from gaprune_tui.engine.flips import FlipRow, merge_rows

    fields = {f.name for f in dataclasses.fields(FlipRow)}
    merged = merge_rows([FlipRow(**{k: v for k, v in d.items() if k in fields}) for d in records])
    rows = [dataclasses.asdict(r) for r in merged]
    lines = [
        "| view | task | items | fast bf16 | HFLM bf16 | HFLM bf16, fp32 softmax |",
        "|---|---|---|---|---|---|",
    ]
    totals: dict[str, list[int]] = {}
    for r in rows:
        task = r["task"].removesuffix("_offline")
        lines.append(
            f"| {r['view']} | {task} | {r['items']} | {r['fast']} | {r['hflm']} "
            f"| {r['hflm_fp32_softmax']} |"
        )
        t = totals.setdefault(r["view"], [0, 0, 0, 0])
        for i, k in enumerate(("items", "fast", "hflm", "hflm_fp32_softmax")):
            t[i] += r[k]
    for view, (items, fast, hflm, hflm32) in totals.items():
        lines.append(f"| {view} | **all** | {items} | {fast} | {hflm} | {hflm32} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="items per task")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--hflm-batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=5, help="items per task per round")
    parser.add_argument("--genomes", type=int, default=20, help="KL rank agreement; 0: skip")
    parser.add_argument("--drop", type=int, default=4, help="layers each random genome drops")
    parser.add_argument("--kl-tokens", type=int, default=512, help="calibration tokens for KL")
    parser.add_argument("--no-flips", action="store_true", help="only the KL rank agreement")
    parser.add_argument("--out", type=Path, default=None, help="append rows here (JSON lines)")
    parser.add_argument("--table", type=Path, default=None, help="print the table of this file")
    args = parser.parse_args()
    if args.table is not None:
        rows = [json.loads(x) for x in args.table.read_text().splitlines() if x.strip()]
        print(table([r for r in rows if "task" in r]))
        for r in rows:
            if "spearman" in r:
                print(json.dumps(r))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GAPRUNE_HOME", tempfile.mkdtemp(prefix="gaprune-bench-"))
    os.environ["TQDM_DISABLE"] = "1"

    from gaprune_tui.core.config import RunConfig, TaskSpec
    from gaprune_tui.engine import flips
    from gaprune_tui.engine.calibration import DEFAULT_CALIBRATION, load_calibration
    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.setup import set_threads
    from gaprune_tui.engine.tasks import build_tasks

    set_threads()

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")

    fp32 = load_model("demo", dtype="float32", device="cpu")
    bf16 = load_model("demo", dtype="bfloat16", device="cpu")
    n = fp32.view.n_layers
    if args.genomes:
        t0 = time.perf_counter()
        cal = load_calibration(DEFAULT_CALIBRATION, fp32.tokenizer, n_tokens=args.kl_tokens)
        genomes = flips.random_genomes(n, args.genomes, args.drop)
        kl32, kl16, rho = flips.kl_rank_agreement(fp32, bf16, cal, genomes)
        emit(
            {
                "spearman": rho,
                "genomes": len(genomes),
                "drop": args.drop,
                "calibration": cal.description,
                "kl_fp32": kl32,
                "kl_bf16": kl16,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    if not args.no_flips:
        names = args.tasks.split(",")
        config = RunConfig(tasks=[TaskSpec(t) for t in names], limit=args.limit).validate()
        taskset = build_tasks(config)
        views = {name: [i for i in range(n) if i not in dropped] for name, dropped in VIEWS.items()}
        rows = []
        t0 = time.perf_counter()
        for row in flips.flip_rows(
            fp32, bf16, taskset, views, args.limit, hflm_batch=args.hflm_batch, chunk=args.chunk
        ):
            record = dataclasses.asdict(row) | {"seconds": round(time.perf_counter() - t0, 1)}
            rows.append(record)
            emit(record)
        print(table(rows))
        merged = flips.merge_rows(
            [flips.FlipRow(**{k: v for k, v in r.items() if k != "seconds"}) for r in rows]
        )
        bad = flips.contract_violations(merged)
        print("contract holds" if not bad else "contract broken:\n" + "\n".join(bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
