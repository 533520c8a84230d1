"""``gaprune-tui export RUN``: write a run's pick (or its N-th genome) as a standalone model.

Without ``--rank`` the run's recommended genome is exported (result.json's ``dropped_layers``: the
confirmed best when confirmation ran, a Pareto run's knee); ``--k K`` exports a Pareto run's front
member with K dropped layers; ``--rank N`` counts in the confirmed order when the run has
confirmed finalists (then the rest of the search's ranking), else in the search's ranking.

Human mode prints progress lines and the outcome with rich; ``--progress-json`` prints one JSON
object per line instead (``{"stage", "message"}``, then ``{"done": true, ...}`` or
``{"error": ...}``) so the TUI can run the export as a subprocess and follow it. Errors are raised
as ``GapruneError``; cli.py prints them and exits 2. The engine is imported only when the command
runs, so building the parser stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.modelspec import EXPORT_DTYPES
from gaprune_tui.core.units import describe


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write a run's best genome as a standalone Hugging Face model (MergeKit)",
        description="Export a run's recommended genome (the confirmed best when its finalists "
        "were confirmed) or its N-th genome through MergeKit, verify it and write a model card. "
        "The default folder is <run folder>/exports/rank<N>-drop-<layers>.",
    )
    parser.add_argument("run", help="run id, unique id prefix or run folder")
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help="N-th distinct genome, in confirmed order when the run confirmed finalists "
        "(default: the run's pick, the confirmed best)",
    )
    parser.add_argument(
        "--drop",
        type=_layers,
        default=None,
        metavar="LAYERS",
        help="the genome dropping these layers (comma-separated, e.g. 3,4) instead of --rank",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        help="a Pareto run's front member with K dropped layers (default: the front's knee)",
    )
    parser.add_argument(
        "--healed",
        default=None,
        metavar="HEAL_ID",
        help="export the healed model of this heal (its genome; see `gaprune-tui show RUN`)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--dtype",
        choices=EXPORT_DTYPES,
        default=None,
        help="weights dtype of the export (default: the dtype the search ran in, so verification "
        "re-scores exactly; the base checkpoint's for a run that never loaded its model)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the logits / generate / re-score checks against the layer view",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--progress-json",
        action="store_true",
        help="print one JSON object per line (for programs following the export)",
    )
    return parser


def _layers(text: str) -> list[int]:
    """``3,4`` -> [3, 4]; anything else is a usage error naming the expected form."""
    try:
        return sorted(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of layer indices: write them comma-separated, e.g. 3,4"
        ) from None


def _front_member(args: argparse.Namespace) -> list[int]:
    """``--k K``: the dropped layers of the Pareto front's member with K dropped layers."""
    from gaprune_tui.core.pareto import member_for_k
    from gaprune_tui.core.store import RunStore

    if args.drop is not None or args.rank is not None:
        raise GapruneError("--k names the genome already: drop --rank/--drop, or drop --k")
    store = RunStore.open(args.run)
    try:
        return member_for_k(store.result(), args.k, store.id)
    finally:
        store.close()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _quiet_libraries() -> None:
    """Our progress lines replace the libraries' bars and warnings (datasets maps, lm-eval's
    request bars, MergeKit's deprecation notes). tqdm reads its environment at import time, so
    this runs before the engine is imported; in a process that already imported tqdm it is a no-op
    for the bars."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("lm_eval", "mergekit", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    _quiet_libraries()
    dropped = args.drop
    if args.k is not None:
        dropped = _front_member(args)
    from gaprune_tui.engine.export import export_run

    kwargs = dict(
        rank=args.rank,
        dropped=dropped,
        out=args.out,
        dtype=args.dtype,
        verify=not args.no_verify,
        force=args.force,
        healed=args.healed,
    )
    if args.progress_json:
        return _run_json(export_run, args.run, kwargs)
    return _run_human(export_run, args.run, kwargs)


def _run_json(export_run: Any, run_id: str, kwargs: dict[str, Any]) -> int:
    def progress(stage: str, message: str) -> None:
        _emit({"stage": stage, "message": message, "ts": round(time.time(), 3)})

    try:
        result = export_run(run_id, progress=progress, **kwargs)
    except GapruneError as exc:
        _emit({"error": str(exc)})
        raise
    except KeyboardInterrupt:
        _emit({"error": "interrupted"})
        raise
    payload = result.to_json()
    summary = result.verification.summary() if result.verification else None
    _emit({"done": True, **payload, "summary": summary})
    return 0


def _run_human(export_run: Any, run_id: str, kwargs: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    started = time.perf_counter()

    def progress(stage: str, message: str) -> None:
        console.print(
            f"[dim]{time.perf_counter() - started:6.1f}s[/] [bold]{stage:<9}[/] {escape(message)}"
        )

    result = export_run(run_id, progress=progress, **kwargs)
    out = Console(highlight=False)
    plan, before, after = result.plan, result.params_before, result.params_after
    removed = f" ({100 * (before - after) / before:.1f}% removed)" if before and after else ""
    out.print(
        f"exported rank {plan.rank} ({plan.ranking.order} order) of run {plan.run_id} "
        f"to [bold]{escape(str(result.path))}[/]"
    )
    sub = plan.granularity == "sublayer"
    dropped = describe(plan.dropped, "sublayer") if sub else f"layers {plan.dropped}"
    out.print(
        f"dropped {dropped}; parameters {before:,} -> {after:,}{removed}; "
        f"{result.size_bytes / 2**20:.1f} MiB on disk ({plan.dtype})"
        if before and after
        else f"dropped {dropped}; {result.size_bytes / 2**20:.1f} MiB on disk"
    )
    if result.verification is None:
        out.print("[yellow]not verified (--no-verify)[/]")
    else:
        colour = "green" if result.verified else "red"
        out.print(f"[{colour}]{escape(result.verification.summary())}[/]")
    return 0
