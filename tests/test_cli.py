"""The headless CLI against the real engine process on tiny models and real lm-eval tasks.

Every bad input gives one line on stderr, exit code 2, no traceback, and leaves no run behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_models import build_tiny

from gaprune_tui.core import paths
from gaprune_tui.core.store import RunStore, list_runs

TINY_RUN = ["--tasks", "hellaswag_offline", "--limit", "4", "--prune", "2", "--protect", "1"]
# The original task fitness (these tests check task scores), one finalist confirmed on 4 items.
TINY_RUN += ["--fitness", "squared_mean", "--finalists", "1", "--confirm-limit", "4"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gaprune_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GAPRUNE_THREADS": "1"},
    )


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
        (["--population", "1"], ["population must be an integer >= 2"]),
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
    # --dtype auto on a CPU: float32 and why (issue 14), in result.json, the store and `show`.
    assert result["dtype"] == "float32" and result["dtype_reason"].startswith("float32: ")

    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert "0 new evaluations" in second.stdout and "nothing new to evaluate" in second.stdout
    assert "s in all in float32 (" in second.stdout
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
    start = cli("run", "--model", str(model), *TINY_RUN, *args, "--detach")
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip().splitlines()[-1]
    return run_id, RunStore.open(run_id)


def test_kill_9_then_resume_redoes_nothing(tiny_llama: Path) -> None:
    # 40 items per evaluation: slow enough that the search cannot finish between the moment
    # generation 2 shows up and the kill.
    run_id, store = start_detached(tiny_llama, generations=4, limit=40)
    deadline = time.monotonic() + 240
    # Kill mid-generation: after generation 1 has begun and some of its evaluations finished.
    while time.monotonic() < deadline:
        evs = store.evaluations()
        if any(e.generation >= 2 for e in evs):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the engine made no progress")
    pid = store.meta()["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert store.display_state() == "crashed"
    before = store.evaluations()
    fresh_before = {tuple(e.dropped) for e in before if not e.from_memo}

    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert store.state == "finished"
    after = store.evaluations()[len(before) :]
    fresh_after = [tuple(e.dropped) for e in after if not e.from_memo]
    # Nothing finished before the kill was evaluated again.
    assert not fresh_before & set(fresh_after)
    assert len(fresh_after) == len(set(fresh_after))
    assert result["generations"] == 4
    assert [g.gen for g in store.generations()] == [0, 1, 2, 3, 4]

    finished = cli("resume", run_id)
    assert_one_line_error_keep_runs(finished, "already finished")


def assert_one_line_error_keep_runs(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_pause_unpause_stop_requests(tiny_llama: Path) -> None:
    # Far more generations than will ever run (the test stops it): a short search on a tiny
    # model could finish before the pause request is read.
    run_id, store = start_detached(tiny_llama, generations=500)
    assert cli("pause", run_id).returncode == 0
    deadline = time.monotonic() + 120
    while store.state != "paused" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.state == "paused"
    count = len(store.evaluations())
    time.sleep(1.5)
    assert len(store.evaluations()) == count, "a paused engine evaluates nothing"
    assert cli("unpause", run_id).returncode == 0
    assert cli("stop", run_id).returncode == 0
    while store.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.state == "stopped"
    kinds = [e.kind for e in store.events()]
    assert "run_paused" in kinds and "run_stopped" in kinds
    stopped = cli("stop", run_id)
    assert stopped.returncode == 2 and "not running" in stopped.stderr
    # The old verb still reaches ``unpause`` (and says so).
    old = cli("resume-run", run_id)
    assert old.returncode == 2 and "nothing to unpause" in old.stderr
    assert "`resume-run` is now `unpause`" in old.stderr
