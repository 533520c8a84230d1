"""``gaprune-tui heal RUN``: train a run's pick (or its N-th genome) to recover, measured.

The genome is chosen as ``export`` chooses it (``--rank``, ``--drop``, ``--k``; none: the run's
pick). Bad input is refused before any process starts (exit 2, one line); the heal then runs in
the engine process (``engine/heal_job.py``), followed here (a progress bar with the loss) or left
in the background (``--detach``). ``gaprune-tui resume RUN`` continues a stopped or killed heal
from its last checkpoint; ``pause``/``unpause``/``stop`` steer it like a search.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gaprune_tui.core import events, format
from gaprune_tui.core.errors import ConfigError, StoreError
from gaprune_tui.core.heal import (
    DEFAULT_METHOD,
    METHOD_CHOICES,
    OBJECTIVE_CHOICES,
    HealConfig,
    default_tokens,
    write_request,
)
from gaprune_tui.core.heal_view import measure_line
from gaprune_tui.core.store import ControlAction, RunStore

# (flag, HealConfig field, type, help)
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("method", "method", str, f"{' or '.join(METHOD_CHOICES)} (default {DEFAULT_METHOD})"),
    (
        "objective",
        "objective",
        str,
        f"{' or '.join(OBJECTIVE_CHOICES)}: distil the base (kd, "
        "default) or next-token cross-entropy",
    ),
    (
        "heal-data",
        "data",
        str,
        "offline (default), a .txt or .jsonl file, or hf:NAME[:CONFIG][:SPLIT]",
    ),
    ("heal-tokens", "tokens", int, "tokens of healing text (default 32768 on a CPU, 1M on a GPU)"),
    ("heal-seq-len", "seq_len", int, "tokens per training sequence (default 128)"),
    ("heal-batch", "batch_size", int, "sequences per optimizer step (default 8)"),
    ("train-layers", "train_layers", int, "partial: the last N kept layers trained (default 3)"),
    ("lora-rank", "lora_rank", int, "lora: the adapters' rank (default 8)"),
    ("lr", "lr", float, "peak learning rate (default 1e-4 partial, 2e-4 lora)"),
    ("seed", "seed", int, "the data order's and LoRA's seed (default 0)"),
    ("checkpoint-every", "checkpoint_every", int, "optimizer steps between checkpoints (20)"),
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from gaprune_tui.cli.export import _layers

    parser = subparsers.add_parser(
        "heal",
        help="train a pruned genome to recover what its dropped layers took (measured before "
        "and after)",
    )
    parser.add_argument("run", help="run id, unique id prefix or run folder")
    parser.add_argument("--rank", type=int, default=None, help="N-th genome, as export counts")
    parser.add_argument("--drop", type=_layers, default=None, metavar="LAYERS")
    parser.add_argument("--k", type=int, default=None, help="a Pareto run's member with K dropped")
    for flag, field, typ, text in _FLAGS:
        parser.add_argument(f"--{flag}", dest=f"heal_{field}", type=typ, default=None, help=text)
    parser.add_argument("--detach", action="store_true", help="run in the background, print the id")
    parser.add_argument("--json", action="store_true", help="print the heal's record at the end")
    return parser


def heal_config(args: argparse.Namespace, device: str) -> HealConfig:
    config = HealConfig(tokens=default_tokens(device))
    for _flag, name, _typ, _text in _FLAGS:
        value = getattr(args, f"heal_{name}")
        if value is not None:
            setattr(config, name, value)
    return config.validate()


def pick_genome(store: RunStore, args: argparse.Namespace) -> tuple[list[int], int]:
    """The genome ``--rank``/``--drop``/``--k`` names (none: the run's pick), as export picks it."""
    from gaprune_tui.core.errors import GapruneError
    from gaprune_tui.engine.export.evidence import read_evidence
    from gaprune_tui.engine.export.lineage import _ranked_genome

    dropped = args.drop
    if args.k is not None:
        from gaprune_tui.core.pareto import member_for_k

        if args.drop is not None or args.rank is not None:
            raise GapruneError("--k names the genome already: drop --rank/--drop, or drop --k")
        dropped = member_for_k(store.result(), args.k, store.id)
    genome, rank, _order = _ranked_genome(store, args.rank, read_evidence(store), dropped)
    if not genome.dropped:
        raise ConfigError("that genome drops no layer: there is nothing to heal")
    return list(genome.dropped), rank


def run(args: argparse.Namespace) -> int:
    from gaprune_tui.core.launch import heal_run

    store = RunStore.open(args.run)
    state = store.display_state()
    if store.alive():
        raise StoreError(f"run {store.id} is {state}: wait for it to end, or stop it first")
    if not state.has_result:
        raise StoreError(
            f"run {store.id} is {state}: only a finished or stopped search can be healed"
        )
    device = str(store.meta().get("device") or "cpu")
    config = heal_config(args, device)
    dropped, rank = pick_genome(store, args)
    hid = write_request(store, config, dropped, rank, str(store.state))
    proc = heal_run(store, hid)
    print(f"healing drop {dropped} of run {store.id} ({hid})…", file=sys.stderr, flush=True)
    if args.detach:
        print(hid)
        return 0
    return follow_heal(store, proc, hid, as_json=args.json)


def follow_heal(store: RunStore, proc: Any, hid: str, *, as_json: bool = False) -> int:
    """Print a heal's progress until its engine exits; Ctrl-C asks it to stop."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn("[bold]heal"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    seq = 0
    task = None
    outcome: events.HealFinished | None = None
    stop_sent = False
    with progress:
        while True:
            try:
                for event in store.events(after=seq):
                    seq = event.seq
                    if getattr(event, "heal", None) != hid:
                        continue
                    if isinstance(event, events.HealStarted):
                        task = progress.add_task(
                            "heal", total=event.steps, completed=event.from_step, status=""
                        )
                        console.print(
                            f"{event.method} / {event.objective}: {event.steps} steps, "
                            f"{event.tokens:,} tokens of {event.data}; "
                            f"{event.trainable:,} parameters trained"
                            + (f"; resumed at step {event.from_step}" if event.from_step else "")
                        )
                    elif isinstance(event, events.HealStep) and task is not None:
                        progress.update(
                            task,
                            completed=event.step,
                            status=f"loss {event.loss:.4f}  {event.tokens_per_s:.0f} tok/s  "
                            f"ETA {event.eta_s:.0f} s",
                        )
                    elif isinstance(event, events.HealMeasured):
                        console.print(f"{event.phase}: {measure_line(event.numbers)}")
                    elif isinstance(event, events.HealFinished):
                        outcome = event
                if proc.poll() is not None and not store.events(after=seq):
                    break
                time.sleep(0.2)
            except KeyboardInterrupt:
                if stop_sent:
                    return 130
                console.print("[yellow]stopping after this step… (Ctrl-C again to detach)[/]")
                store.request(ControlAction.STOP)
                stop_sent = True
    code = proc.wait()
    if outcome is None or outcome.state != "finished":
        why = outcome.error if outcome is not None and outcome.error else "see engine.log"
        state = outcome.state if outcome is not None else "ended"
        if code == 2:  # bad input the engine found (too little text, ...): one line, exit 2
            print(f"error: {why.removeprefix('heal failed: ConfigError: ')}", file=sys.stderr)
            return 2
        print(f"heal {hid} {state}: {why}")
        print(f"continue it with: gaprune-tui resume {store.id}")
        return 0 if state == "stopped" else 1
    if as_json:
        print(json.dumps(outcome.record, indent=2))
    else:
        print_heal(outcome.record)
    return 0


def heal_lines(record: dict[str, Any]) -> list[str]:
    """What ``heal`` and ``show`` print of one heal: what was trained on what, then before and
    after with the verdicts (a difference within noise is said to be one)."""
    v = record.get("verdicts", {})
    lines = [
        f"heal {record['id']}: drop {record['dropped']}, {record['method']} / "
        f"{record['objective']}, {record['tokens']:,} tokens ({record['steps']} steps) of "
        f"{record['data']}, {record['seconds']:.0f} s"
        + (", LM head untied" if record.get("untied_head") else ""),
    ]
    b, a = record.get("before", {}), record.get("after", {})
    rows = [
        ("KL to base", "kl", "kl"),
        ("perplexity", "ppl", "nll"),
        ("tasks", "confirmed", "confirmed"),
        ("held-out", "holdout", "holdout"),
    ]
    for label, key, vkey in rows:
        if b.get(key) is None or a.get(key) is None:
            continue
        verdict = v.get(vkey, {}).get("outcome", "")
        lines.append(
            f"  {label:<11} {format.score(b[key], b.get(f'{key}_stderr')):>18} -> "
            f"{format.score(a[key], a.get(f'{key}_stderr')):>18}  {verdict}"
        )
    return lines


def print_heal(record: dict[str, Any]) -> None:
    for line in heal_lines(record):
        print(line)
