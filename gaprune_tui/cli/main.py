"""``gaprune-tui``: the TUI by default, and a headless CLI over the same run store.

Bad input exits 2 with one line on stderr and no traceback. Heavy libraries are never imported
here: the engine runs in its own process (see ``core/launch.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gaprune_tui import __version__
from gaprune_tui.core import events, format, preflight
from gaprune_tui.core.config import ALGORITHM_DEFAULTS, RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError, GapruneError, StoreError
from gaprune_tui.core.store import ControlAction, RunState, RunStore, can_resume, list_runs
from gaprune_tui.core.units import describe

# The run-control verbs and what each asks of the engine. ``resume`` is not one of them: it
# starts a new engine on a stopped or crashed run (``cmd_resume``).
CONTROL_VERBS: dict[str, tuple[ControlAction, str]] = {
    "pause": (ControlAction.PAUSE, "pause a running search"),
    "unpause": (ControlAction.UNPAUSE, "continue a paused search"),
    "stop": (ControlAction.STOP, "stop a search (resume it later with `resume`)"),
}
# Old spellings still accepted on the command line (not shown in --help): old -> new.
DEPRECATED_VERBS = {"resume-run": "unpause"}

# Flags that map 1:1 onto RunConfig fields: (flag, type, help).
_RUN_FLAGS: list[tuple[str, Any, str]] = [
    ("model", str, "embedded 'demo' (default), a local folder, a .gguf file or a cached hub id"),
    ("tasks", str, "comma-separated lm-eval tasks, each optionally name:metric"),
    ("metric", str, "metric for tasks without one (default acc_norm where present, else acc)"),
    ("num-fewshot", int, "few-shot examples per prompt (default 0)"),
    ("limit", int, "items per task (default 100)"),
    (
        "prune",
        int,
        "number of decoder layers (or sub-blocks, --granularity sublayer) to drop, k (default 4)",
    ),
    (
        "granularity",
        str,
        "layer (default: drop whole decoder layers) or sublayer (drop attention and MLP "
        "sub-blocks separately; Llama, Mistral, Qwen2 and Qwen3 families)",
    ),
    (
        "attention-drops",
        int,
        "sublayer: how many of the --prune sub-blocks are attention (default: the search decides)",
    ),
    (
        "objective",
        str,
        "single (default: one k, --prune) or pareto (every k in --prune-range at once, NSGA-II)",
    ),
    ("prune-range", str, "MIN:MAX, the k a pareto run covers (e.g. 2:8)"),
    ("protect", int, "leading layers never dropped (default 2)"),
    ("population", int, "GA population size (default 60)"),
    ("generations", int, "GA generations (default 10)"),
    ("cxpb", float, "crossover probability (default 0.5)"),
    ("mutpb", float, "mutation probability (default 0.5)"),
    ("tournament", int, "tournament size (default 5)"),
    ("seed", int, "random seed (default 0)"),
    (
        "fitness",
        str,
        "squared_mean (default: the original's mean of squared task scores), mean, "
        "kl (KL to the base model on calibration text, lower is better) or ppl (perplexity)",
    ),
    ("calibration", str, "calibration text: offline (default, bundled), a .txt/.jsonl, or hf:NAME"),
    ("calibration-tokens", int, "calibration tokens for kl/ppl and the baselines (default 2048)"),
    ("finalists", int, "best genomes confirmed at the end on more items and held-out tasks (5)"),
    ("confirm-limit", int, "items per task when confirming finalists (default 100)"),
    (
        "holdout-tasks",
        str,
        "comma-separated held-out tasks for confirmation (default arc_easy, piqa, winogrande offline)",
    ),
    (
        "algorithm",
        str,
        "evopress (default: (1 + lambda) evolution with multi-step selection) or ga (the "
        "original method's operators); pareto runs use NSGA-II",
    ),
    (
        "baselines",
        str,
        "baselines scored before the search: a comma-separated subset of shortgpt, angular, "
        "last_k, greedy (default shortgpt,angular,last_k), or none",
    ),
    ("offspring", int, "evopress: children of the parent per generation (default 16)"),
    ("survivors", int, "evopress: children re-scored on all calibration tokens (default 2)"),
    (
        "selection-tokens",
        str,
        "evopress with kl/ppl: calibration tokens of the first selection step (default 512), "
        "or all",
    ),
    ("init", str, "heuristics (default: generation 0 starts from the baselines) or random"),
    (
        "mutation",
        str,
        "uniform (default: the original's mutUniformInt + repair) or swap (EvoPress)",
    ),
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
    ("workers", int, "score each generation on N worker processes (CPU: the cores split)"),
    ("devices", str, "one worker per device: all, or cuda:0,cuda:1"),
    ("ray", str, "score on Ray actors: local (start one here), auto or HOST:PORT (a cluster)"),
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (its own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_follow_flags(command: argparse.ArgumentParser) -> None:
    """How a command that starts the engine ends (``_follow_or_detach``): in the background, or
    followed here to its end, printing result.json or the report."""
    command.add_argument(
        "--detach", action="store_true", help="run in the background, print the id"
    )
    command.add_argument("--json", action="store_true", help="print result.json at the end")


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
    _add_follow_flags(run)

    resume = sub.add_parser("resume", help="continue a stopped or crashed run")
    resume.add_argument("run")
    _add_follow_flags(resume)

    confirm = sub.add_parser(
        "confirm", help="re-score a run's finalists on more items and on held-out tasks"
    )
    confirm.add_argument("run")
    confirm.add_argument("--finalists", type=int, help="how many of the best genomes")
    confirm.add_argument("--confirm-limit", type=int, help="items per task")
    confirm.add_argument(
        "--holdout-tasks",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        help="comma-separated held-out tasks",
    )
    _add_follow_flags(confirm)

    attach = sub.add_parser("attach", help="open the TUI on a run")
    attach.add_argument("run")

    sub.add_parser("runs", help="list runs")
    show = sub.add_parser("show", help="print a run's result")
    show.add_argument("run")
    delete = sub.add_parser("delete", help="delete an ended or damaged run (its exports stay)")
    delete.add_argument("run")
    for verb, (_, text) in CONTROL_VERBS.items():
        p = sub.add_parser(verb, help=text)
        p.add_argument("run")

    try:
        from gaprune_tui.cli import export as cli_export
    except ImportError:  # the export command ships with the export module
        pass
    else:
        cli_export.add_parser(sub)
    from gaprune_tui.cli import heal as cli_heal

    cli_heal.add_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.load(args.config) if args.config else RunConfig()
    if args.algorithm is not None:
        # An algorithm named on the command line without its sizes gets its own defaults; sizes
        # given as flags or in the config file win.
        in_file = RunConfig.keys_in(args.config) if args.config else set()
        for name, size in ALGORITHM_DEFAULTS.get(args.algorithm, {}).items():
            if getattr(args, name) is None and name not in in_file:
                setattr(config, name, size)
    for flag, _, _ in _RUN_FLAGS:
        name = flag.replace("-", "_")
        value = getattr(args, name)
        if value is None:
            continue
        if name == "tasks":
            value = [TaskSpec.parse(t) for t in value.split(",") if t.strip()]
        elif name == "holdout_tasks":
            value = [t.strip() for t in value.split(",") if t.strip()]
        elif name == "selection_tokens":
            value = _int_or_all("--selection-tokens", value)
        setattr(config, name, value)
    if args.include_path:
        config.include_path = list(args.include_path)
    if args.trust_remote_code:
        config.trust_remote_code = True
    if args.no_prefix_cache:
        config.prefix_cache = False
    return config.validate()


def _int_or_all(flag: str, text: str) -> int | None:
    """A flag's whole number, or None for ``all``; a ConfigError naming the flag otherwise."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a whole number or 'all', got {text!r}") from None


def precheck(config: RunConfig) -> None:
    """Catch a missing or unusable model and bad layer counts in milliseconds, before any process
    starts. The engine checks everything again (tasks included) once the libraries are loaded."""
    from gaprune_tui.core.modelinfo import inspect_model

    info = inspect_model(config.model)
    if info.n_layers:
        config.check_layers(info.n_layers, info.model_type)


# ---- following a run ------------------------------------------------------------------------------
def wait_started(store: RunStore, proc: Any) -> None:
    """Block until the engine has loaded the model and tasks, or rejected the run (discarded, so
    it never looks like a real run): ``core.launch.wait_started``, shared with the Setup screen."""
    from gaprune_tui.core import launch

    launch.wait_started(store, proc)


def follow(store: RunStore, proc: Any) -> int:
    """Show a run's progress until its engine exits. Ctrl-C asks the engine to stop.

    The events are folded by ``Follower``, as on the Run screen, so the bar counts what the
    screen counts; this only prints the lines a terminal user wants to keep.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gaprune_tui.core.follow import Follower

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    follower = Follower(store)
    bar: list[Any] = []  # the progress task, once the engine has started
    stop_sent = False
    with progress:
        while True:
            try:
                for event in follower.read():
                    _print_event(event, store, console, progress, bar)
                view = follower.view
                if bar:  # the screen's count; a finished search used all of its budget
                    done = view.started.max_evaluations if view.state == RunState.FINISHED else None
                    progress.update(
                        bar[0],
                        total=view.started.max_evaluations,
                        completed=done if done is not None else view.evaluations_done,
                    )
                # Stop once the engine has exited and everything it wrote has been shown.
                if proc.poll() is not None and not store.events(after=view.last_seq):
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
                store.request(ControlAction.STOP)
                stop_sent = True
    return proc.returncode or 0


_GRANULARITY: dict[str, str] = {}  # run id -> its granularity, read once per run


def _genome(store: RunStore, dropped: list[int]) -> str:
    """A genome as the terminal prints it: ``[3, 9]`` (layers) or ``layers 3 · attn 12 · mlp 20``."""
    if store.id not in _GRANULARITY:
        _GRANULARITY[store.id] = store.config().granularity
    granularity = _GRANULARITY[store.id]
    return str(list(dropped)) if granularity == "layer" else describe(dropped, granularity)


def _print_event(
    event: events.RunEvent, store: RunStore, console: Any, progress: Any, bar: list[Any]
) -> None:
    """The terminal's line for one event (most print nothing: the bar shows them)."""
    if isinstance(event, events.RunStarted):
        if not bar:
            bar.append(progress.add_task("evaluations", total=event.max_evaluations, status=""))
        drop = (
            f"every k in {event.prune_range[0]}..{event.prune_range[1]} (Pareto)"
            if event.objective == "pareto" and event.prune_range
            else str(event.prune)
        )
        if event.granularity == "sublayer":
            quota = event.attention_drops
            drop += " sub-blocks" + (f" ({quota} attention)" if quota is not None else "")
        console.print(
            f"[dim]run {store.id}: {event.model}, {event.n_layers} layers, drop "
            f"{drop}, tasks {', '.join(event.tasks)}[/]"
        )
    elif isinstance(event, events.BaseScores):
        console.print(f"base model fitness {event.fitness:.4f}  {format.scores_line(event.scores)}")
    elif isinstance(event, events.EvaluationStarted) and bar:
        progress.update(
            bar[0], status=f"gen {event.generation} drop {_genome(store, event.dropped)}"
        )
    elif isinstance(event, events.GenerationFinished) and event.front:
        front = "  ".join(
            f"k{p['k']} {format.score(p['fitness'])}{'*' if p.get('dominated') else ''}"
            for p in event.front
        )
        console.print(
            f"gen {event.generation:>3}  new {event.evaluated:>3}  memo {event.from_memo:>3}  "
            f"hypervolume {event.hypervolume or 0:.4g}  front {front}  ({event.seconds:.1f} s)"
        )
    elif isinstance(event, events.GenerationFinished):
        console.print(
            f"gen {event.generation:>3}  new {event.evaluated:>3}  memo {event.from_memo:>3}  "
            f"best {format.score(event.best_fitness)}  mean {format.score(event.mean)}  "
            f"best drop {_genome(store, event.best_dropped)}  ({event.seconds:.1f} s)"
        )
    elif isinstance(event, events.ReferenceScored):
        console.print(
            f"baseline {event.name}: drop {_genome(store, event.dropped)}  "
            f"{format.scores_line(event.scores)}"
        )
    elif isinstance(event, events.ConfirmationStarted):
        held = ", ".join(event.holdout_tasks) or "none"
        console.print(
            f"confirming {event.genomes} genomes on {', '.join(event.tasks)} at "
            f"{event.confirm_limit or 'all'} items each; held out: {held}"
        )
    elif isinstance(event, events.GenomeConfirmed):
        console.print(
            f"  {event.label:<12} drop {_genome(store, event.dropped)}: confirmed "
            f"{format.score(event.confirmed, event.confirmed_stderr)}, held-out "
            f"{format.score(event.holdout, event.holdout_stderr)}  ({event.seconds:.1f} s)"
        )
    elif isinstance(event, events.LogMessage):
        console.print(f"[yellow]{event.message}[/]")
    elif isinstance(event, events.RunPaused | events.RunResumed | events.RunStopped):
        console.print(f"[yellow]{event.kind.removeprefix('run_')}[/]")
    elif isinstance(event, events.RunFailed):
        console.print(f"[red]engine failed: {event.error}[/]")


def print_result(store: RunStore, as_json: bool = False) -> int:
    result = store.result()
    if result is None:
        state = store.display_state()
        error = store.meta().get("error")
        print(f"run {store.id} is {state}" + (f": {error}" if error else ""))
        if can_resume(state, store.alive()):
            print(f"resume it with: gaprune-tui resume {store.id}")
        return 0 if state == RunState.STOPPED else 1
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    from gaprune_tui.cli.report import print_report

    print_report(result, store.id)
    return 0


# ---- commands -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from gaprune_tui.core.launch import start_run

    config = config_from_args(args)
    precheck(config)
    store, proc = start_run(config)
    print(f"run {store.id}: loading model and tasks…", file=sys.stderr)
    wait_started(store, proc)
    return _follow_or_detach(store, proc, args)


def _follow_or_detach(store: RunStore, proc: Any, args: argparse.Namespace) -> int:
    """A started engine: print the run id and leave it running (``--detach``), or follow it here
    and print its result (``--json``: result.json)."""
    if args.detach:
        print(store.id)
        return 0
    code = follow(store, proc)
    if code == 130:
        return code
    return print_result(store, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    from gaprune_tui.core.launch import resume_run

    store = RunStore.open(args.run)
    state = store.display_state()
    alive = store.alive()
    from gaprune_tui.core.heal import unfinished_heal

    heal = None if alive else unfinished_heal(store)
    if heal is not None:  # a heal stopped or killed before it finished: continue it
        from gaprune_tui.cli.heal import follow_heal
        from gaprune_tui.core.launch import heal_run

        proc = heal_run(store, heal)
        print(f"continuing heal {heal} of run {store.id}…", file=sys.stderr)
        if args.detach:
            print(store.id)
            return 0
        return follow_heal(store, proc, heal, as_json=args.json)
    if state == RunState.FINISHED:
        raise StoreError(f"run {store.id} already finished: start a new run, or export it")
    if alive:
        raise StoreError(
            f"run {store.id} is still running: attach with gaprune-tui attach {store.id}"
        )
    if not can_resume(state, alive):
        raise StoreError(f"run {store.id} is {state} and cannot be resumed")
    proc = resume_run(store)
    return _follow_or_detach(store, proc, args)


def cmd_confirm(args: argparse.Namespace) -> int:
    """Confirm a finished or stopped run's finalists now (optionally with other settings)."""
    from gaprune_tui.core.launch import confirm_run

    store = RunStore.open(args.run)
    state = store.display_state()
    if store.alive():
        raise StoreError(f"run {store.id} is {state}: wait for it to end, or stop it first")
    if not state.has_result:
        raise StoreError(
            f"run {store.id} is {state}: only a finished or stopped search can be confirmed"
        )
    config = store.config()
    for name in ("finalists", "confirm_limit", "holdout_tasks"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    config.validate()
    preflight.check_tasks(config)  # a held-out typo is refused now, not after the re-scoring
    config.save(store.path / "config.toml")
    proc = confirm_run(store)
    return _follow_or_detach(store, proc, args)


def _backend_of(run_path: Path) -> str:
    """Where a run scores its genomes (in-process, local workers, Ray), from its config."""
    from gaprune_tui.core.config import backend_label

    try:
        return backend_label(RunConfig.load(run_path / "config.toml"))
    except GapruneError:
        return "-"


def cmd_runs(_: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    runs = list_runs()
    if not runs:
        print("no runs yet: start one with `gaprune-tui run` or `gaprune-tui`")
        return 0
    table = Table()
    table.add_column("run", no_wrap=True, min_width=len(runs[0].id))
    for col in ("state", "model", "backend", "best fitness", "best dropped", "started"):
        table.add_column(col, overflow="fold")
    for r in runs:
        table.add_row(
            r.id,
            r.state,
            r.model,
            _backend_of(r.path),
            "-" if r.best_fitness is None else f"{r.best_fitness:.4f}",
            "-" if r.best_dropped is None else str(r.best_dropped),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
        )
    Console().print(table)
    for r in runs:
        if r.state == RunState.DAMAGED and r.error:
            print(r.error)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Remove a run that no engine writes to any more (ended, crashed or damaged); the models
    exported into its ``exports`` folder stay where they are."""
    from gaprune_tui.core.store import delete_run, resolve_run

    folder = resolve_run(args.run)
    try:
        store = RunStore(folder)
    except StoreError:  # damaged: nothing in it can be running
        state, alive = RunState.DAMAGED, False
    else:
        try:
            state = store.summary_or_damage().state
            alive = state != RunState.DAMAGED and store.alive()
        except StoreError:
            state, alive = RunState.DAMAGED, False
        finally:
            store.close()
    if alive or not state.deletable:
        raise StoreError(f"run {folder.name} is {state}: stop it before deleting it")
    delete_run(folder)
    kept = f"; its exports stay in {folder / 'exports'}" if (folder / "exports").is_dir() else ""
    print(f"deleted run {folder.name}{kept}")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    store = RunStore.open(args.run)
    if not store.alive():
        raise StoreError(
            f"run {store.id} is {store.display_state()}, not running: nothing to {args.command}"
        )
    action, _ = CONTROL_VERBS[args.command]
    store.request(action)
    print(f"{args.command} requested for run {store.id}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from gaprune_tui.ui.tui import run_tui

    if getattr(args, "run", None):
        store = RunStore.open(args.run)
        initial = "run" if store.state.active else "results"
        return run_tui(initial=initial, run=str(store.path))
    return run_tui()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DEPRECATED_VERBS:
        new = DEPRECATED_VERBS[argv[0]]
        print(f"note: `{argv[0]}` is now `{new}`", file=sys.stderr)
        argv[0] = new
    args = parser.parse_args(argv)
    command = args.command or "tui"
    handlers = {
        "tui": cmd_tui,
        "attach": cmd_tui,
        "run": cmd_run,
        "resume": cmd_resume,
        "confirm": cmd_confirm,
        "runs": cmd_runs,
        "delete": cmd_delete,
        "show": lambda a: print_result(RunStore.open(a.run)),
        **dict.fromkeys(CONTROL_VERBS, cmd_control),
    }
    handler: Callable[[argparse.Namespace], int]
    if command == "export":
        from gaprune_tui.cli import export as cli_export

        handler = cli_export.run
    elif command == "heal":
        from gaprune_tui.cli import heal as cli_heal

        handler = cli_heal.run
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
