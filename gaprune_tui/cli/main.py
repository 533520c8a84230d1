"""``gaprune-tui``: the TUI by default, and a headless CLI over the same run store.

Bad input exits 2 with one line on stderr and no traceback. Heavy libraries are never imported
here: the engine runs in its own process (see ``core/launch.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gaprune_tui import __version__
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.errors import GapruneError, StoreError
from gaprune_tui.core.store import (
    ACTIVE_STATES,
    FINISHED,
    RunStore,
    list_runs,
)

# Flags that map 1:1 onto RunConfig fields: (flag, type, help).
_RUN_FLAGS: list[tuple[str, Any, str]] = [
    ("model", str, "embedded 'demo' (default), a local folder, a .gguf file or a cached hub id"),
    ("tasks", str, "comma-separated lm-eval tasks, each optionally name:metric"),
    ("metric", str, "metric for tasks without one (default acc_norm where present, else acc)"),
    ("num-fewshot", int, "few-shot examples per prompt (default 0)"),
    ("limit", int, "items per task (default 100)"),
    ("prune", int, "number of decoder layers to drop, k (default 4)"),
    ("protect", int, "leading layers never dropped (default 2)"),
    ("population", int, "GA population size (default 60)"),
    ("generations", int, "GA generations (default 10)"),
    ("cxpb", float, "crossover probability (default 0.5)"),
    ("mutpb", float, "mutation probability (default 0.5)"),
    ("tournament", int, "tournament size (default 5)"),
    ("seed", int, "random seed (default 0)"),
    ("fitness", str, "squared_mean (default) or mean"),
    ("invalid", str, "repair (default) or zero: how invalid offspring are handled"),
    ("device", str, "auto (default), cpu, cuda, cuda:N or mps"),
    ("dtype", str, "auto (default), bfloat16, float16 or float32"),
    ("scorer", str, "fast (default) or hflm (lm-eval's reference HFLM)"),
    ("screen", int, "multi-fidelity: screen offspring on N items per task first"),
    (
        "prefix-cache-mb",
        int,
        "memory budget for the cross-genome prefix cache (default 4096; at most a quarter of free memory)",
    ),
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (its own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gaprune-tui", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gaprune-tui {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    sub.add_parser("tui", help="open the TUI (the default)")

    run = sub.add_parser("run", help="start a search (foreground with progress, or --detach)")
    run.add_argument("--config", type=Path, help="a run config TOML; flags override its keys")
    for flag, typ, help_text in _RUN_FLAGS:
        run.add_argument(f"--{flag}", type=typ, default=None, help=help_text)
    run.add_argument(
        "--include-path", action="append", default=None, help="extra lm-eval task folder"
    )
    run.add_argument("--trust-remote-code", action="store_true", default=None)
    run.add_argument("--no-prefix-cache", action="store_true", help="turn the prefix cache off")
    run.add_argument("--detach", action="store_true", help="run in the background, print the id")
    run.add_argument("--json", action="store_true", help="print result.json at the end")

    resume = sub.add_parser("resume", help="continue a stopped or crashed run")
    resume.add_argument("run")
    resume.add_argument("--detach", action="store_true")
    resume.add_argument("--json", action="store_true", help="print result.json at the end")

    attach = sub.add_parser("attach", help="open the TUI on a run")
    attach.add_argument("run")

    sub.add_parser("runs", help="list runs")
    show = sub.add_parser("show", help="print a run's result")
    show.add_argument("run")
    for action, text in (
        ("pause", "pause a running search"),
        ("resume-run", "resume a paused search"),
        ("stop", "stop a search (resumable later)"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("run")

    try:
        from gaprune_tui.cli import export as cli_export
    except ImportError:  # the export command ships with the export module
        pass
    else:
        cli_export.add_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.load(args.config) if args.config else RunConfig()
    for flag, _, _ in _RUN_FLAGS:
        name = flag.replace("-", "_")
        value = getattr(args, name)
        if value is None:
            continue
        if name == "tasks":
            value = [TaskSpec.parse(t) for t in value.split(",") if t.strip()]
        setattr(config, name, value)
    if args.include_path:
        config.include_path = list(args.include_path)
    if args.trust_remote_code:
        config.trust_remote_code = True
    if args.no_prefix_cache:
        config.prefix_cache = False
    return config.validate()


def precheck(config: RunConfig) -> None:
    """Catch a missing or unusable model and bad layer counts in milliseconds, before any process
    starts. The engine checks everything again (tasks included) once the libraries are loaded."""
    from gaprune_tui.core.modelinfo import inspect_model

    info = inspect_model(config.model)
    if info.n_layers:
        config.check_layers(info.n_layers)


# ---- following a run ------------------------------------------------------------------------------
def wait_started(store: RunStore, proc: Any) -> None:
    """Block until the engine has loaded the model and tasks, or rejected the run (discarded, so
    it never looks like a real run): ``core.launch.wait_started``, shared with the Setup screen."""
    from gaprune_tui.core import launch

    launch.wait_started(store, proc)


def follow(store: RunStore, proc: Any) -> int:
    """Show a run's progress until its engine exits. Ctrl-C asks the engine to stop."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    last = 0
    total = None
    population = 0
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    task_id = None
    stop_sent = False
    with progress:
        while True:
            try:
                for event in store.events(after=last):
                    last = event.seq
                    p = event.payload
                    if event.kind == "run_started":
                        total = p["max_evaluations"]
                        population = p["population"]
                        task_id = progress.add_task("evaluations", total=total, status="")
                        console.print(
                            f"[dim]run {store.id}: {p['model']}, {p['n_layers']} layers, drop "
                            f"{p['prune']}, tasks {', '.join(p['tasks'])}[/]"
                        )
                    elif event.kind == "base_scores":
                        console.print(f"base model fitness {p['fitness']:.4f}  {_fmt(p['scores'])}")
                    elif event.kind == "evaluation_started" and task_id is not None:
                        progress.update(
                            task_id, status=f"gen {p['generation']} drop {p['dropped']}"
                        )
                    elif event.kind == "evaluation_finished" and task_id is not None:
                        if p["fidelity"] == "full" or p["fidelity"] == "invalid":
                            progress.advance(task_id)
                    elif event.kind == "generation_finished":
                        if task_id is not None:  # repeats within a generation were scored once
                            progress.update(task_id, completed=(p["gen"] + 1) * population)
                        console.print(
                            f"gen {p['gen']:>3}  new {p['evaluated']:>3}  memo {p['from_memo']:>3}  "
                            f"max {p['max']:.4f}  mean {p['mean']:.4f}  best drop {p['best_dropped']}"
                            f"  ({p['seconds']:.1f} s)"
                        )
                    elif event.kind in ("run_paused", "run_resumed", "run_stopped"):
                        console.print(f"[yellow]{event.kind.removeprefix('run_')}[/]")
                    elif event.kind == "run_failed":
                        console.print(f"[red]engine failed: {p['error']}[/]")
                # Stop once the engine has exited and everything it wrote has been shown.
                if proc.poll() is not None and not store.events(after=last):
                    break
                time.sleep(0.2)
            except KeyboardInterrupt:
                if stop_sent:
                    console.print(
                        "[red]leaving the engine running; stop it with gaprune-tui stop[/]"
                    )
                    return 130
                console.print(
                    "[yellow]stopping after the current batch… (Ctrl-C again to detach)[/]"
                )
                store.request("stop")
                stop_sent = True
    return proc.returncode or 0


def _fmt(scores: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{t} {m}={v:.4f}" for t, ms in scores.items() for m, v in ms.items())


def print_result(store: RunStore, as_json: bool = False) -> int:
    result = store.result()
    if result is None:
        state = store.display_state()
        error = store.meta().get("error")
        print(f"run {store.id} is {state}" + (f": {error}" if error else ""))
        if state in ("stopped", "failed", "crashed"):
            print(f"resume it with: gaprune-tui resume {store.id}")
        return 0 if state == "stopped" else 1
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"run {store.id}: best of {result['model']}")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("pruned", justify="right")
    for task, metrics in result["scores"].items():
        for metric, value in metrics.items():
            base = result.get("base_scores", {}).get(task, {}).get(metric)
            table.add_row(task, metric, "-" if base is None else f"{base:.4f}", f"{value:.4f}")
    console.print(table)
    removed = result.get("params_removed", 0) / max(1, result.get("params_total", 1))
    console.print(
        f"dropped layers {result['dropped_layers']} (kept {len(result['kept_layers'])} of "
        f"{result['n_layers']}, {removed:.1%} of parameters removed)\n"
        f"fitness {result['fitness']:.4f} ({result['fitness_function']}); base "
        f"{result['base_fitness']:.4f}\n"
        f"{result['evaluations']} new evaluations, {result['cache_hits']} from the memo"
        + (" — nothing new to evaluate" if result["evaluations"] == 0 else "")
        + f"; {result['eval_seconds']:.1f} s evaluating, {result['wall_seconds']:.1f} s in all\n"
        f"export it with: gaprune-tui export {store.id}"
    )
    return 0


# ---- commands -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from gaprune_tui.core.launch import start_run

    config = config_from_args(args)
    precheck(config)
    store, proc = start_run(config)
    print(f"run {store.id}: loading model and tasks…", file=sys.stderr)
    wait_started(store, proc)
    if args.detach:
        print(store.id)
        return 0
    return _foreground(store, proc, args.json)


def _foreground(store: RunStore, proc: Any, as_json: bool) -> int:
    code = follow(store, proc)
    if code == 130:
        return code
    return print_result(store, as_json)


def cmd_resume(args: argparse.Namespace) -> int:
    from gaprune_tui.core.launch import resume_run

    store = RunStore.open(args.run)
    state = store.display_state()
    if state == FINISHED:
        raise StoreError(f"run {store.id} already finished: start a new run, or export it")
    if store.alive():
        raise StoreError(
            f"run {store.id} is still running: attach with gaprune-tui attach {store.id}"
        )
    if state not in ("stopped", "failed", "crashed", "created"):
        raise StoreError(f"run {store.id} is {state} and cannot be resumed")
    proc = resume_run(store)
    if args.detach:
        print(store.id)
        return 0
    return _foreground(store, proc, args.json)


def cmd_runs(_: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    runs = list_runs()
    if not runs:
        print("no runs yet: start one with `gaprune-tui run` or `gaprune-tui`")
        return 0
    table = Table()
    table.add_column("run", no_wrap=True, min_width=len(runs[0].id))
    for col in ("state", "model", "best fitness", "best dropped", "started"):
        table.add_column(col, overflow="fold")
    for r in runs:
        table.add_row(
            r.id,
            r.state,
            r.model,
            "-" if r.best_fitness is None else f"{r.best_fitness:.4f}",
            "-" if r.best_dropped is None else str(r.best_dropped),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
        )
    Console().print(table)
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    store = RunStore.open(args.run)
    if not store.alive():
        raise StoreError(
            f"run {store.id} is {store.display_state()}, not running: nothing to {args.command}"
        )
    action = {"resume-run": "resume"}.get(args.command, args.command)
    store.request(action)
    print(f"{action} requested for run {store.id}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from gaprune_tui.ui.tui import run_tui

    if getattr(args, "run", None):
        store = RunStore.open(args.run)
        initial = "run" if store.state in ACTIVE_STATES else "results"
        return run_tui(initial=initial, run=str(store.path))
    return run_tui()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "tui"
    handlers = {
        "tui": cmd_tui,
        "attach": cmd_tui,
        "run": cmd_run,
        "resume": cmd_resume,
        "runs": cmd_runs,
        "show": lambda a: print_result(RunStore.open(a.run)),
        "pause": cmd_control,
        "resume-run": cmd_control,
        "stop": cmd_control,
    }
    if command == "export":
        from gaprune_tui.cli import export as cli_export

        handler = cli_export.run
    else:
        handler = handlers[command]
    try:
        return handler(args)
    except GapruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
