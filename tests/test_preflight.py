"""Everything a run names is checked before the run is created (issue 20): task names (fitness and
held-out), devices and a Ray address. Each refusal is one line, exit 2, and no run in the history;
the engine's own setup gives the same line for the same input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_run import cli
from listeners import closed_address, grpc_listener, silent_listener

from gaprune_tui.core import preflight
from gaprune_tui.core.config import RAY_CHECK_SECONDS, RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError, TaskError
from gaprune_tui.core.store import list_runs
from gaprune_tui.core.tasknames import task_name_error
from gaprune_tui.engine.model import cuda_count, resolve_device
from gaprune_tui.engine.tasks import build_tasks

# A run that would take minutes if it started: the CLI's method-sized defaults.
RUN = ["run", "--model", "demo", "--prune", "2"]


def refused(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run the CLI with ``args``; assert it refused with one line and exit 2, leaving no run."""
    proc = cli(*args, env=env, timeout=timeout)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert list_runs() == []
    listed = cli("runs")
    assert listed.returncode == 0 and "no runs yet" in listed.stdout
    return lines[0]


# ---- task names ----------------------------------------------------------------------------------
def test_unknown_holdout_task_is_refused_before_the_run_exists() -> None:
    line = refused(*RUN, "--holdout-tasks", "no_such_task_xyz")
    assert line.startswith("error: held-out tasks: unknown task 'no_such_task_xyz'")


def test_unknown_fitness_task_is_refused_with_close_matches() -> None:
    line = refused(*RUN, "--tasks", "hellaswag_ofline")
    assert line.startswith("error: unknown task 'hellaswag_ofline': did you mean hellaswag_offline")


def test_task_checks_cover_holdout_bundled_builtin_and_include_paths(tmp_path: Path) -> None:
    folder = tmp_path / "mytasks"
    folder.mkdir()
    (folder / "mine.yaml").write_text("task: my_own_task\ndataset_path: json\n", encoding="utf-8")
    assert task_name_error("my_own_task", [str(folder)]) is None
    assert task_name_error("my_own_task", []) is not None
    assert task_name_error("piqa_offline", []) is None  # bundled
    assert task_name_error("hellaswag", []) is None  # declared by lm-eval's YAMLs
    config = RunConfig(holdout_tasks=["arc_easy_offline", "nope_task"]).validate()
    with pytest.raises(TaskError, match="held-out tasks: unknown task 'nope_task'"):
        preflight.check_run(config)
    # A run that confirms nothing never loads its held-out tasks, so none is judged.
    config.finalists = 0
    preflight.check_run(config)
    assert preflight.task_names(config) == [t.name for t in config.tasks]


def test_engine_refuses_an_unknown_task_with_the_preflight_line() -> None:
    """The engine's task loading asks the same check before lm-eval's index: one line either way."""
    config = RunConfig(tasks=[TaskSpec("hellaswag_ofline")]).validate()
    with pytest.raises(TaskError) as engine:
        build_tasks(config)
    with pytest.raises(TaskError) as before:
        preflight.check_run(config)
    assert str(engine.value) == str(before.value)


# ---- devices ------------------------------------------------------------------------------------
def test_device_this_machine_lacks_is_refused_before_the_run_exists() -> None:
    no_gpu = {"GAPRUNE_ASSUME_GPU": "0"}
    line = refused(*RUN, "--device", "cuda:7", env=no_gpu)
    assert line == (
        "error: device cuda:7 asked for but CUDA is not available here: use --device cpu or auto"
    )
    line = refused(*RUN, "--devices", "cuda:7", env=no_gpu)
    assert line == (
        "error: --devices cuda:7 asked for but CUDA is not available here: on a CPU use "
        "--workers N to split the cores"
    )
    two = {"GAPRUNE_ASSUME_GPU": "2"}
    line = refused(*RUN, "--devices", "cuda:0,cuda:7", env=two)
    assert line == (
        "error: --devices names cuda:7, which does not exist (this machine has 2 CUDA devices): "
        "use cuda:0..cuda:1"
    )
    line = refused(*RUN, "--device", "cuda:7", env=two)
    assert "device cuda:7 does not exist (this machine has 2 CUDA devices)" in line


def test_engine_and_preflight_give_one_device_line() -> None:
    """torch's count here (no CUDA) through the engine's ``resolve_device`` and the preflight."""
    config = RunConfig(device="cuda:7").validate()
    with pytest.raises(ConfigError) as before:
        preflight.check_run(config, cuda_count=cuda_count())
    if cuda_count() > 7:  # a machine with 8 GPUs has a cuda:7: nothing to refuse
        resolve_device("cuda:7")
        return
    with pytest.raises(Exception) as engine:
        resolve_device("cuda:7")
    assert str(engine.value) == str(before.value)


# ---- a Ray address ------------------------------------------------------------------------------
def test_ray_address_that_accepts_but_never_answers_is_refused_in_bounded_time() -> None:
    with silent_listener() as address:
        started = time.monotonic()
        line = refused(*RUN, "--ray", address)
        elapsed = time.monotonic() - started
    assert line.startswith(f"error: no Ray cluster answers at {address}: something accepted")
    # The check waits at most RAY_CHECK_SECONDS for the answer; the rest is the CLI starting.
    assert elapsed < 2 * RAY_CHECK_SECONDS + 20


def test_ray_address_where_nothing_listens_is_refused() -> None:
    address = closed_address()
    line = refused(*RUN, "--ray", address)
    assert line.startswith(f"error: no Ray cluster answers at {address}: start one")


def test_ray_address_check_in_process() -> None:
    """The check itself: a silent listener times out, a gRPC server (stand-in, see listeners.py)
    passes, and ``ray://`` addresses are checked alike."""
    with silent_listener() as address:
        started = time.monotonic()
        with pytest.raises(ConfigError, match="sent nothing in 3 s"):
            RunConfig(ray=address).validate()
        assert time.monotonic() - started < 2 * RAY_CHECK_SECONDS
    with grpc_listener() as address:
        assert RunConfig(ray=address).validate().ray == address
        assert RunConfig(ray=f"ray://{address}").validate().ray == f"ray://{address}"
