"""The headless CLI against the real engine process on tiny models and real lm-eval tasks.

Every bad input gives one line on stderr, exit code 2, no traceback, and leaves no run behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, run_in_home
from tiny_models import build_tiny
from tui_wait import wait_until

from gaprune_tui.core import events, paths
from gaprune_tui.core.devices import auto_dtype
from gaprune_tui.core.store import ControlAction, RunStore, list_runs

TINY_RUN = ["--tasks", "hellaswag_offline", "--limit", "4", "--prune", "2", "--protect", "1"]
# The original task fitness (these tests check task scores), one finalist confirmed on 4 items.
TINY_RUN += ["--fitness", "squared_mean", "--finalists", "1", "--confirm-limit", "4"]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # One error line, last; at most a status line ("run …: loading model and tasks…") before it.
    assert len(errors) == 1 and lines[-1] == errors[0] and len(lines) <= 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert list_runs() == []
    runs = paths.runs_dir()
    assert not runs.exists() or not any(runs.iterdir())


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")


# ---- bad input that the CLI catches before starting anything ----------------------------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--prune", "0"], ["prune must be an integer >= 1"]),
        (["--population", "-1"], ["population must be an integer >= 0"]),
        (["--algorithm", "ga", "--population", "1"], ["population must be an integer >= 2"]),
        (["--algorithm", "cma"], ["algorithm must be one of evopress, ga"]),
        (["--baselines", "shortgpt,best"], ["unknown baseline 'best'"]),
        (["--selection-tokens", "many"], ["--selection-tokens must be a whole number or 'all'"]),
        (["--cxpb", "2"], ["cxpb must be a probability in [0, 1]"]),
        (["--mutpb", "-1"], ["mutpb must be a probability"]),
        (["--fitness", "best"], ["fitness must be one of"]),
        (["--model", "/no/such/model"], ["/no/such/model", "does not exist"]),
    ],
)
def test_bad_flags(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(cli("run", *args), *fragments)


def test_malformed_config_toml(tmp_path: Path) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("population = [\n")
    assert_one_line_error(cli("run", "--config", str(bad)), "not valid TOML")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(cli("run", "--model", str(tmp_path)), "not a model")


def test_unwritable_data_dir(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GAPRUNE_HOME", str(blocker / "home"))
    proc = cli("run", "--model", str(tiny_llama), *TINY_RUN)
    assert proc.returncode == 2 and "cannot create the run folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_unknown_run() -> None:
    assert_one_line_error(cli("resume", "nope"), "no run 'nope'")


# ---- bad input found once the model or tasks are read: nothing is left behind ---------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--prune", "5", "--protect", "1"], ["prune=5 must be below the 5 droppable layers"]),
        (["--protect", "6", "--prune", "1"], ["protect=6 leaves no droppable layer"]),
        (["--tasks", "hellaswag_ofline"], ["hellaswag_ofline", "hellaswag_offline"]),
        (["--tasks", "hellaswag_offline:bleu"], ["bleu"]),
    ],
)
def test_engine_rejects_bad_input(tiny_llama: Path, args: list[str], fragments: list[str]) -> None:
    base = ["--model", str(tiny_llama), "--limit", "4", "--prune", "2", "--population", "2"]
    assert_one_line_error(cli("run", *base, *args), *fragments)


def test_task_data_not_available_offline(tiny_llama: Path) -> None:
    proc = cli(
        "run", "--model", str(tiny_llama), "--tasks", "openbookqa", "--prune", "2", "--limit", "2"
    )
    assert_one_line_error(proc, "openbookqa")
    assert "offline" in proc.stderr or "network" in proc.stderr


# ---- real runs ------------------------------------------------------------------------------------
def test_run_then_repeat_is_all_memo(tiny_llama: Path) -> None:
    args = ["run", "--model", str(tiny_llama), *TINY_RUN, "--population", "4", "--generations", "2"]
    first = cli(*args, "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    # The progress lines come from the events, folded by the same Follower as the Run screen.
    assert "base model fitness" in first.stderr
    assert [line.split()[1] for line in first.stderr.splitlines() if line.startswith("gen ")] == [
        "0",
        "1",
        "2",
    ]
    for key in (
        "dropped_layers",
        "kept_layers",
        "fitness",
        "scores",
        "evaluations",
        "cache_hits",
        "generations",
        "wall_seconds",
        "model",
        "tasks",
        "scorer",
        "eval_seconds",
    ):
        assert key in result
    assert len(result["dropped_layers"]) == 2 and 0 not in result["dropped_layers"]
    assert sorted(result["dropped_layers"] + result["kept_layers"]) == list(range(6))
    assert result["evaluations"] > 0
    assert set(result["scores"]) == {"hellaswag_offline"}
    # --dtype auto on a CPU: this CPU's choice and why, in result.json, the store and `show`.
    auto = auto_dtype("cpu")
    assert (result["dtype"], result["dtype_reason"]) == (auto.dtype, auto.reason)

    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert "0 new evaluations" in second.stdout and "nothing new to evaluate" in second.stdout
    assert f"s in all in {auto.dtype} (" in second.stdout
    runs = list_runs()
    assert len(runs) == 2 and all(r.state == "finished" for r in runs)
    again = RunStore.open(runs[0].id).result()
    assert again["evaluations"] == 0 and again["cache_hits"] > 0
    assert again["dropped_layers"] == result["dropped_layers"]
    assert again["fitness"] == result["fitness"]
    assert RunStore.open(runs[0].id).meta()["dtype_reason"] == result["dtype_reason"]

    listing = cli("runs")
    assert listing.returncode == 0 and runs[0].id in listing.stdout


def start_detached(model: Path, generations: int, limit: int = 4) -> tuple[str, RunStore]:
    """Start a search in the background on a tiny model; its id and store."""
    args = ["--population", "6", "--generations", str(generations), "--limit", str(limit)]
    return start_detached_args(model, [*TINY_RUN, *args])


def start_detached_args(model: Path, args: list[str]) -> tuple[str, RunStore]:
    start = cli("run", "--model", str(model), *args, "--detach")
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip().splitlines()[-1]
    return run_id, RunStore.open(run_id)


# ---- kill -9 and resume ----------------------------------------------------------------------
# A 12-layer tiny model dropping 3 of the last 11 layers: 165 genomes, so the generations are
# mostly fresh work, not memo hits, and each lasts long enough to kill inside it.
RESUME_RUN = [
    "--tasks",
    "hellaswag_offline",
    "--limit",
    "24",
    "--prune",
    "3",
    "--protect",
    "1",
    "--population",
    "8",
    "--generations",
    "3",
    "--finalists",
    "2",
    "--confirm-limit",
    "8",
    "--holdout-tasks",
    "piqa_offline",
]
# result.json keys that depend on what was computed, not on when or in how many sessions.
RESULT_KEYS = ("dropped_layers", "kept_layers", "fitness", "scores", "picked_by", "finalists")
RESULT_KEYS += ("baselines", "base_confirmation")


@pytest.fixture(scope="module")
def uninterrupted(
    tiny12: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], int]:
    """The same search run start to end in its own GAPRUNE_HOME (its own memo): the result and
    the number of fresh (non-memo) evaluations it made."""
    home = tmp_path_factory.mktemp("uninterrupted-home")
    result, store = run_in_home(home, tiny12, *RESUME_RUN, timeout=600)
    assert [e.resumed for e in store.events() if isinstance(e, events.RunStarted)] == [False]
    return result, genomes_computed(store)


def fresh_evaluations(store: RunStore) -> int:
    """Evaluations computed (not read from the memo) over every session of a run: the
    evaluation_finished events, which are appended and never replaced."""
    return sum(
        1 for e in store.events() if isinstance(e, events.EvaluationFinished) and not e.from_memo
    )


def genomes_computed(store: RunStore) -> int:
    """Genomes this run's own work scored, over every session: the fresh evaluations, plus the
    genomes whose first evaluation in the run was read from the memo (in a run with its own memo
    those were scored by the run before the search recorded them: by a one-shot baseline, or by a
    session killed after the genome reached the memo and before the run committed it, whose
    resume reads it back instead of computing it again)."""
    seen: set[tuple[int, ...]] = set()
    count = 0
    for e in store.events():
        if isinstance(e, events.EvaluationFinished):
            first = tuple(e.dropped) not in seen
            seen.add(tuple(e.dropped))
            count += (not e.from_memo) or first
    return count


def kill_mid_generation(store: RunStore) -> None:
    """Kill the engine inside generation g + 1 once generation g (g >= 1) is checkpointed.

    Polling for that moment and killing races the engine: on an idle machine a generation of memo
    hits closes in milliseconds, between two polls. So the engine is parked on a pause there (the
    engine honours a pause before it records each event, memo hits included) and killed while
    parked: it steps one event at a time (unpause and pause together) until it holds inside such a
    generation."""
    from gaprune_tui.core.store import ControlAction, RunState

    def where() -> str:
        """Where the engine is: "inside" generation g + 1, "before" it, or "past" the search."""
        checkpoint = store.last_checkpoint()
        if checkpoint is None or checkpoint[0] < 1:
            return "before"
        evs = store.events()
        if any(isinstance(e, events.SearchFinished | events.ConfirmationStarted) for e in evs):
            return "past"
        g = checkpoint[0]
        closed = any(isinstance(e, events.GenerationFinished) and e.generation > g for e in evs)
        begun = any(isinstance(e, events.EvaluationFinished) and e.generation == g + 1 for e in evs)
        return "inside" if begun and not closed else "before"

    def parked() -> bool:
        return store.state == RunState.PAUSED

    wait_until(lambda: store.last_checkpoint() is not None, "generation 0 to be checkpointed")
    store.request(ControlAction.PAUSE)
    wait_until(parked, "the engine to park on the pause")

    def unpauses() -> int:
        return sum(isinstance(e, events.RunResumed) for e in store.events())

    while (spot := where()) == "before":
        # Both at once: the engine takes the unpause, records one event, and parks on the pause
        # at its next check (requests after an unpause wait for that check), so each step is one
        # event whatever the machine's speed.
        taken = unpauses() + 1
        store.request(ControlAction.UNPAUSE)
        store.request(ControlAction.PAUSE)
        wait_until(lambda n=taken: unpauses() >= n and parked(), "one step of the engine")
    assert spot == "inside", "the search ended before the engine could be held inside a generation"
    kill_engine(store)


def kill_engine(store: RunStore) -> None:
    pid = store.meta()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: store.display_state() == "crashed", "the run to show as crashed", 30)


def resume_and_compare(
    run_id: str, store: RunStore, uninterrupted: tuple[dict[str, Any], int]
) -> dict[str, Any]:
    """Resume a killed run to the end; its result equals the uninterrupted run's and its fresh
    evaluations over both sessions are the uninterrupted run's, plus at most the one in flight."""
    expected, expected_fresh = uninterrupted
    resumed = cli("resume", run_id, "--json", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert store.state == "finished"
    assert json.loads(store.result_path.read_text()) == result
    assert not store.result_path.with_suffix(".json.tmp").exists()
    for key in RESULT_KEYS:
        assert result[key] == expected[key], key
    assert expected_fresh <= genomes_computed(store) <= expected_fresh + 1
    assert [g.gen for g in store.generations()] == [0, 1, 2, 3]
    return result


def test_kill_9_before_any_evaluation_mid_generation_and_in_result_write(
    tiny12: Path, uninterrupted: tuple[dict[str, Any], int]
) -> None:
    """One run killed with -9 three times (before its first evaluation, inside a generation,
    while its result is being written), each resume checked where it restarts or continues, and
    resumed to the uninterrupted run's result (one run where two tests each ran one: the same
    kills and checks, one engine start and one confirmation fewer)."""
    # 1. Before the very first evaluation finished. On a tiny model the base model is scored in
    # well under a second, so a kill "during" it would race; instead the run is created with a
    # pause request already queued, the engine loads, announces the run and parks on the pause
    # just before scoring the base model, and is killed there: deterministically before any
    # evaluation finished.
    from gaprune_tui.cli.main import build_parser, config_from_args
    from gaprune_tui.core.launch import spawn_engine
    from gaprune_tui.core.store import ControlAction, RunState

    config = config_from_args(
        build_parser().parse_args(["run", "--model", str(tiny12), *RESUME_RUN])
    )
    store = RunStore.create(config)
    run_id = store.id
    store.request(ControlAction.PAUSE)
    spawn_engine(store)
    wait_until(lambda: store.state == RunState.PAUSED, "the engine to park on the pause")
    kill_engine(store)
    assert store.last_checkpoint() is None and not store.evaluations()
    assert not any(isinstance(e, events.BaseScores) for e in store.events())

    # 2. Resume: with no generation finished it restarts; kill it inside generation g + 1, once
    # generation g (g >= 1) is checkpointed.
    again = cli("resume", run_id, "--detach")
    assert again.returncode == 0, again.stderr
    kill_mid_generation(store)
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, False]
    assert "no generation finished yet: restarting" in store.log_path.read_text()
    checkpoint = store.last_checkpoint()
    assert checkpoint is not None
    g = checkpoint[0]
    # The kill really landed inside generation g + 1 (the test would prove nothing otherwise).
    assert [x.gen for x in store.generations()] == list(range(g + 1))
    assert any(e.generation == g + 1 for e in store.evaluations())
    assert g + 1 <= 3, "the kill came after the last generation"
    killed_at = len(store.events())

    # 3. Resume: it continues after generation g. Kill it again once the search is over and the
    # result is being put together (confirmation started: result.json is next). A kill in the
    # middle of ``write_result`` leaves at most a partial ``result.json.tmp`` and no
    # result.json (it is replaced atomically): leave such a partial file, as that kill would.
    again = cli("resume", run_id, "--detach")
    assert again.returncode == 0, again.stderr
    wait_until(
        lambda: any(isinstance(e, events.ConfirmationStarted) for e in store.events()[killed_at:]),
        "the confirmation to start",
        timeout=600,
    )
    kill_engine(store)
    assert store.result() is None
    store.result_path.with_suffix(".json.tmp").write_text('{"dropped_layers": [1,')
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, False, True]
    assert f"resuming after generation {g}" in store.log_path.read_text()
    # No generation up to g ran again: that session's first evaluation and first closed
    # generation are of generation g + 1.
    third_session = store.events()[killed_at:]
    redone = {
        e.generation
        for e in third_session
        if isinstance(e, events.EvaluationFinished | events.GenerationFinished)
    }
    assert min(redone) == g + 1, redone

    # 4. Resume to the end: the uninterrupted run's result, each generation closed once.
    resume_and_compare(run_id, store, uninterrupted)
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, False, True, True]
    assert "resuming after generation 3" in store.log_path.read_text()
    closed = [e.generation for e in store.events() if isinstance(e, events.GenerationFinished)]
    assert closed == [0, 1, 2, 3]

    finished = cli("resume", run_id)
    assert_one_line_error_keep_runs(finished, "already finished")


def assert_one_line_error_keep_runs(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


def paused_and_idle(store: RunStore, steps: int = 3) -> None:
    """The run is paused and its engine evaluates nothing, measured on the engine's own steps,
    not on a clock: a paused engine keeps reading control requests (it handles them between
    events while running), so each of ``steps`` further pause requests, sent once the one before
    is handled, spans at least one more of its steps; one that went on evaluating would write
    an evaluation row within two steps."""
    wait_until(lambda: store.state == "paused", "the pause")
    count = len(store.evaluations())
    for _ in range(steps):
        request = store.request(ControlAction.PAUSE)
        wait_until(
            lambda r0=request: all(r.id != r0 for r in store.pending_requests()),
            "the paused engine to read a request",
        )
        assert store.state == "paused"
        assert len(store.evaluations()) == count, "a paused engine evaluates nothing"


def held_genomes(evs: list[events.RunEvent]) -> dict[str, list[int]]:
    """Per worker, the genome it holds after ``evs`` (busy at their end)."""
    last = {e.name: e for e in evs if isinstance(e, events.WorkerStatus)}
    return {name: e.dropped for name, e in last.items() if e.state == "busy" and e.dropped}


def next_report(store: RunStore, name: str, seq: int) -> events.WorkerStatus | None:
    """Worker ``name``'s first status after event ``seq``, if any yet."""
    return next(
        (
            e
            for e in store.events()
            if isinstance(e, events.WorkerStatus) and e.name == name and e.seq > seq
        ),
        None,
    )


def pause_unpause_stop(run_id: str, store: RunStore, *, workers: bool = False) -> None:
    """Pause a running search (it then evaluates nothing and writes nothing), unpause it (it
    evaluates again) and stop it, through the CLI: each request reaches the engine. With
    ``workers``, a pause that lands while workers hold genomes (paused again until one does):
    each worker finishes the genome it holds, and its next report after the unpause is that
    genome scored (not lost, not handed to another worker)."""
    for _ in range(10):
        assert cli("pause", run_id).returncode == 0
        paused_and_idle(store)
        evs = store.events()
        (paused,) = [e for e in evs if isinstance(e, events.RunPaused)][-1:]
        held = held_genomes([e for e in evs if e.seq < paused.seq])
        count = len(store.evaluations())
        assert cli("unpause", run_id).returncode == 0
        wait_until(lambda n=count: len(store.evaluations()) > n, "evaluations after unpause")
        # Nothing at all was written between the pause and the unpause.
        after = [e for e in store.events() if e.seq > paused.seq]
        assert isinstance(after[0], events.RunResumed), after[:3]
        for name, genome in held.items():
            seq = paused.seq
            wait_until(lambda w=name, s=seq: next_report(store, w, s), f"{name}'s next report")
            report = next_report(store, name, seq)
            assert report is not None and report.state == "idle", report
            assert report.scored == genome, (name, genome, report)
        if not workers or held:
            break
    else:
        pytest.fail("no pause landed while a worker held a genome")
    assert cli("stop", run_id).returncode == 0
    wait_until(lambda: not store.alive(), "the stop")
    assert store.state == "stopped"


def test_pause_unpause_stop_requests(tiny_llama: Path) -> None:
    # Far more generations than will ever run (the test stops it): a short search on a tiny
    # model could finish before the pause request is read.
    run_id, store = start_detached(tiny_llama, generations=500)
    pause_unpause_stop(run_id, store)
    kinds = [e.kind for e in store.events()]
    assert "run_paused" in kinds and "run_stopped" in kinds
    stopped = cli("stop", run_id)
    assert stopped.returncode == 2 and "not running" in stopped.stderr
    # The old verb still reaches ``unpause`` (and says so).
    old = cli("resume-run", run_id)
    assert old.returncode == 2 and "nothing to unpause" in old.stderr
    assert "`resume-run` is now `unpause`" in old.stderr
