"""The Setup screen, driven with Pilot: validation, cost preview, save/load, start, and its keys.

Models are real: the embedded demo model (inspected, not loaded) and tiny HF folders from
tests/tiny_models.py. The engine is never started here: ``launch.start_run`` is replaced by a
stand-in that creates a real run store and hands back a fake process, because spawning the real
engine (model load, lm-eval tasks) is the end-to-end test's job and would cost a minute per test.
"""

from __future__ import annotations

import dataclasses
import statistics
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_engine import fake_store, populate
from listeners import closed_address, grpc_listener, silent_listener
from textual.widgets import Button, Input, Select, SelectionList, Static
from tiny_models import build_tiny
from tui_wait import key, opened, settle, until

from gaprune_tui.core import launch, modelinfo
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.devices import CPU_DEFAULTS, auto_dtype
from gaprune_tui.core.errors import ConfigError, GapruneError
from gaprune_tui.core.estimate import (
    TimingSample,
    estimate_cost,
    items_per_evaluation,
    measure_timings,
    workers_note,
)
from gaprune_tui.core.format import duration as format_duration
from gaprune_tui.core.store import RunState, RunStore
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.setup import SetupScreen
from gaprune_tui.ui.screens.setup_fields import FORM_FIELDS, OFF, OVERRIDE_FIELDS

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cpu_only")]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("tiny") / "tiny-llama", n_layers=6)


def text_of(screen: SetupScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def start_button(screen: SetupScreen) -> Button:
    return screen.query_one("#start", Button)


async def set_value(pilot: Any, screen: SetupScreen, ident: str, value: str) -> None:
    screen.query_one(f"#{ident}", Input).value = value
    await settle(pilot)


async def rejected(pilot: Any, screen: SetupScreen, ident: str, value: str, error: str) -> None:
    """Typing ``value`` into ``ident`` disables Start, and the form's error line says ``error``."""
    await set_value(pilot, screen, ident, value)
    assert start_button(screen).disabled
    assert error in text_of(screen, "#form-error")


async def accepted(pilot: Any, screen: SetupScreen, ident: str, value: str) -> None:
    """Typing ``value`` into ``ident`` leaves Start enabled."""
    await set_value(pilot, screen, ident, value)
    assert not start_button(screen).disabled


# ---- defaults -----------------------------------------------------------------------------------
async def test_cpu_defaults_are_scaled_and_said_so() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        assert "No GPU found" in text_of(screen, "#cpu-note")
        config = screen.build_config()
        assert (config.population, config.generations, config.limit) == (
            CPU_DEFAULTS["population"],
            CPU_DEFAULTS["generations"],
            CPU_DEFAULTS["limit"],
        )
        assert config.model == "demo"
        assert [t.name for t in config.tasks] == [t.name for t in RunConfig().tasks]
        assert not start_button(screen).disabled
        assert "30 layers" in text_of(screen, "#model-info")
        # The dtype it will run in (this CPU's: bfloat16 where native); why is the tooltip.
        auto = auto_dtype("cpu")
        assert text_of(screen, "#model-info").endswith(f"runs in {auto.dtype}")
        assert str(screen.query_one("#model-info").tooltip) == auto.reason
        screen.query_one("#dtype", Select).value = "bfloat16"
        await settle(pilot)
        assert text_of(screen, "#model-info").endswith("runs in bfloat16")
        assert str(screen.query_one("#model-info").tooltip).startswith("bfloat16: asked for")


async def test_gpu_machine_gets_the_methods_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "1")
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        assert not screen.query("#cpu-note")
        config = screen.build_config()
        assert dataclasses.asdict(config) == dataclasses.asdict(RunConfig().validate())


def test_gpu_detection_without_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gaprune_tui.core import devices

    monkeypatch.delenv("GAPRUNE_ASSUME_GPU")
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", tmp_path / "no-driver")
    assert not devices.gpu_available()
    assert devices.default_config().population == CPU_DEFAULTS["population"]
    (tmp_path / "no-driver").mkdir()
    assert devices.gpu_available()  # the driver's /proc entry alone is enough
    (tmp_path / "no-driver").rmdir()
    monkeypatch.setattr(devices.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert devices.gpu_available()
    assert devices.default_config().population == RunConfig().population
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "0")
    assert not devices.gpu_available()


def test_form_table_names_real_config_fields_once() -> None:
    """FORM_FIELDS drives compose, fill and build_config: each row is a RunConfig field, once."""
    config_fields = {f.name for f in dataclasses.fields(RunConfig)}
    attrs = [f.attr for f in FORM_FIELDS]
    assert set(attrs) <= config_fields and len(set(attrs)) == len(attrs)
    idents = [f.ident for f in (*FORM_FIELDS, *OVERRIDE_FIELDS)]
    assert len(set(idents)) == len(idents)
    task_fields = {f.name for f in dataclasses.fields(TaskSpec)}
    assert {f.attr for f in OVERRIDE_FIELDS} <= task_fields
    limit = next(f for f in FORM_FIELDS if f.attr == "limit")
    assert (limit.parse(" 20 "), limit.parse(""), limit.format(None)) == (20, None, "")
    with pytest.raises(ConfigError, match="prune k must be a whole number, got 'x'"):
        next(f for f in FORM_FIELDS if f.attr == "prune").parse("x")


# ---- validation ---------------------------------------------------------------------------------
async def test_invalid_value_disables_start_and_fixing_it_enables_it() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        offspring = screen.query_one("#offspring", Input)
        offspring.focus()
        await pilot.press("end", "backspace", "backspace", "0")  # "16" -> "0": none to select
        await settle(pilot)
        assert offspring.value == "0"
        assert not offspring.is_valid
        assert start_button(screen).disabled
        assert "offspring must be an integer >= 1" in text_of(screen, "#form-error")
        await pilot.press("backspace", "1", "2")
        await settle(pilot)
        assert offspring.value == "12"
        assert not start_button(screen).disabled
        assert "Ready" in text_of(screen, "#form-error")
        await rejected(pilot, screen, "cxpb", "1.5", "cxpb")
        await set_value(pilot, screen, "cxpb", "0.5")
        await rejected(pilot, screen, "device", "gpu", "device")
        await accepted(pilot, screen, "device", "cpu")


async def test_names_the_machine_or_lm_eval_lacks_are_refused_on_the_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``core.preflight`` refuses before a run exists (issue 20), the form refuses too, with
    the same line: a held-out task nobody declares, a device this machine does not have."""
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "2")
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await rejected(
            pilot,
            screen,
            "holdout-tasks",
            "arc_easy_offline,no_such_task_xyz",
            "held-out tasks: unknown task 'no_such_task_xyz'",
        )
        await accepted(pilot, screen, "holdout-tasks", "arc_easy_offline")
        await rejected(
            pilot, screen, "device", "cuda:7", "device cuda:7 does not exist (this machine has 2"
        )
        await accepted(pilot, screen, "device", "cuda:1")


async def test_bad_model_path_shows_inline_error(tmp_path: Path) -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await set_value(pilot, screen, "model", str(tmp_path / "no-such-model"))
        info = text_of(screen, "#model-info")
        assert "does not exist" in info
        assert screen.query_one("#model-info").has_class("error")
        assert start_button(screen).disabled
        assert "does not exist" in text_of(screen, "#form-error")
        (tmp_path / "notes.txt").write_text("not a model")
        await set_value(pilot, screen, "model", str(tmp_path / "notes.txt"))
        assert "not a model" in text_of(screen, "#model-info")
        assert start_button(screen).disabled


async def test_local_model_layers_checked_against_prune_and_protect(tiny_llama: Path) -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await set_value(pilot, screen, "model", str(tiny_llama))
        assert "6 layers" in text_of(screen, "#model-info")
        # 6 layers, 2 protected: 4 droppable, so prune 4 would drop them all.
        assert start_button(screen).disabled
        assert "prune=4 must be below the 4 droppable layers" in text_of(screen, "#form-error")
        await accepted(pilot, screen, "prune", "3")
        await set_value(pilot, screen, "protect", "6")
        assert "protect=6 leaves no droppable layer" in text_of(screen, "#form-error")


async def test_unknown_extra_task_lists_close_matches_and_known_one_passes() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await set_value(pilot, screen, "extra-tasks", "hellaswag_ofline")
        error = text_of(screen, "#form-error")
        assert "unknown task 'hellaswag_ofline'" in error
        assert "did you mean hellaswag_offline" in error
        assert "unknown task 'hellaswag_ofline'" in text_of(screen, "#tasks-info")
        assert screen.query_one("#tasks-info").has_class("error")
        assert start_button(screen).disabled
        await set_value(pilot, screen, "extra-tasks", "lambada_openai")
        assert not start_button(screen).disabled
        assert "✓ lm-eval task lambada_openai" in text_of(screen, "#tasks-info")
        names = [t.name for t in screen.build_config().tasks]
        assert names == ["hellaswag_offline", "openbookqa_offline", "lambada_openai"]
        await set_value(pilot, screen, "extra-tasks", "")
        assert not screen.query_one("#tasks-info").display


async def test_no_task_selected_disables_start() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        screen.query_one("#tasks", SelectionList).deselect_all()
        await settle(pilot)
        assert start_button(screen).disabled
        assert "no tasks given" in text_of(screen, "#form-error")
        screen.query_one("#tasks", SelectionList).select("arc_easy_offline")
        await settle(pilot)
        assert not start_button(screen).disabled
        assert [t.name for t in screen.build_config().tasks] == ["arc_easy_offline"]


async def test_per_task_overrides_reach_the_config() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        screen.query_one("#override-task", Select).value = "openbookqa_offline"
        await settle(pilot)
        await set_value(pilot, screen, "override-limit", "7")
        await set_value(pilot, screen, "override-fewshot", "2")
        await set_value(pilot, screen, "override-metric", "acc")
        assert "openbookqa_offline: metric=acc, num_fewshot=2, limit=7" in text_of(
            screen, "#overrides"
        )
        await rejected(pilot, screen, "override-limit", "0", "openbookqa_offline.limit")
        await set_value(pilot, screen, "override-limit", "7")
        config = screen.build_config()
        assert config.tasks[1] == TaskSpec("openbookqa_offline", "acc", 2, 7)
        assert config.tasks[0] == TaskSpec("hellaswag_offline")
        # Switching the row to another task shows that task's (empty) overrides.
        screen.query_one("#override-task", Select).value = "hellaswag_offline"
        await settle(pilot)
        assert screen.query_one("#override-limit", Input).value == ""


async def test_hf_cache_models_are_listed_and_selectable(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache scan itself is modelinfo's to test; here its answer must fill the model field."""
    info = modelinfo.inspect_model(str(tiny_llama))
    info.name = str(tiny_llama)
    monkeypatch.setattr(modelinfo, "scan_hf_cache", lambda: [info])
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        options = screen.query_one("#cache-models")
        options.focus()
        await pilot.press("down", "enter")
        await settle(pilot)
        assert screen.query_one("#model", Input).value == str(tiny_llama)
        assert "6 layers" in text_of(screen, "#model-info")


# ---- cost preview ---------------------------------------------------------------------------------
def test_estimate_uses_median_seconds_per_item_of_similar_runs() -> None:
    config = RunConfig(
        population=8, generations=3, limit=20, fitness="squared_mean", algorithm="ga"
    ).validate()
    assert items_per_evaluation(config) == 40
    samples = [
        TimingSample(frozenset({"hellaswag_offline"}), 0.05),
        TimingSample(frozenset({"hellaswag_offline", "openbookqa_offline"}), 0.10),
        TimingSample(frozenset({"hellaswag_offline"}), 0.20),
        TimingSample(frozenset({"piqa_offline"}), 9.0),  # no task in common: ignored
    ]
    est = estimate_cost(config, samples)
    assert est.max_evaluations == 32
    assert est.samples == 3
    assert est.seconds == pytest.approx(32 * 40 * 0.10)
    assert estimate_cost(config, samples[3:]).seconds is None
    unlimited = dataclasses.replace(config, limit=None)
    assert estimate_cost(unlimited, samples).seconds is None


def test_measure_timings_reads_computed_evaluations_only() -> None:
    store = fake_store(limit=20)
    engine = populate(store)
    evaluations = store.evaluations()
    computed = [e for e in evaluations if not e.from_memo and e.fidelity == "full"]
    assert 0 < len(computed) < len(evaluations)  # the fake has memo hits too
    samples = measure_timings("demo")
    assert len(samples) == len(computed)
    assert [s.seconds_per_item for s in samples] == pytest.approx(
        [e.seconds / 40 for e in computed]
    )
    assert samples[0].tasks == frozenset(t.name for t in engine.store.config().tasks)
    assert measure_timings("another-model") == []


async def test_cost_preview_shows_max_evaluations_and_measured_estimate() -> None:
    store = fake_store(limit=20)  # the demo model, 2 tasks x 20 items
    populate(store)
    median = statistics.median(
        e.seconds for e in store.evaluations() if not e.from_memo and e.fidelity == "full"
    )
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        # The default fitness is KL, whose timing the task measurements do not give.
        assert "KL timing not measured yet" in text_of(screen, "#cost")
        screen.query_one("#fitness", Select).value = "squared_mean"
        await settle(pilot)
        cost = text_of(screen, "#cost")
        # The CPU defaults: EvoPress, 8 random starts, 10 generations x 16 children, all in
        # full (task fitness screens nothing unless --screen is given).
        assert "at most 168 evaluations" in cost
        assert f"estimated ≤ {format_duration(168 * median)}" in cost
        assert "estimate from" in cost
        screen.query_one("#algorithm", Select).value = "ga"
        await settle(pilot)
        assert "at most 88 evaluations" in text_of(screen, "#cost")  # 8 x (10 + 1)
        await set_value(pilot, screen, "generations", "9")
        assert "at most 80 evaluations" in text_of(screen, "#cost")
        await set_value(pilot, screen, "model", "demo ")  # same model: same measurement
        assert f"estimated ≤ {format_duration(80 * median)}" in text_of(screen, "#cost")


async def test_cost_preview_without_measurement_says_so() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        cost = text_of(screen, "#cost")
        # KL: 8 random starts, 10 generations x 16 children, the best 2 in full; in the budget
        # unit, the children screened on 512 of 2,048 tokens count a quarter each. Greedy
        # removal (a default baseline) to k = 4 over 28 layers: 28 + 27 + 26 + 25 candidates on
        # 512 tokens and the best 2 of each step in full.
        assert "at most 168 evaluations" in cost
        assert "16 children on 512 tokens, the best 2 on all: ≈ 62 full evaluations" in cost
        assert "greedy baseline: 106 candidates on 512 tokens, ≈ 34 full evaluations" in cost
        assert "no measurement yet" in cost


async def config_file(pilot: Any, screen: SetupScreen, path: Path, key: str) -> None:
    """Name ``path`` in the config-file field and press ``key`` (f2 saves the form there, f3
    loads it into the form); then let the screen answer."""
    screen.query_one("#config-path", Input).value = str(path)
    await pilot.press(key)
    await settle(pilot)


# ---- save / load ---------------------------------------------------------------------------------
async def test_save_and_load_round_trip_the_form(tmp_path: Path, tiny_llama: Path) -> None:
    path = tmp_path / "my-run.toml"
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        edits = {
            "model": str(tiny_llama),
            "prune": "2",
            "protect": "1",
            "population": "6",
            "generations": "2",
            "cxpb": "0.7",
            "mutpb": "0.3",
            "tournament": "3",
            "seed": "42",
            "limit": "30",
            "num-fewshot": "1",
            "metric": "acc",
            "device": "cpu",
            "extra-tasks": "lambada_openai",
        }
        for ident, value in edits.items():
            screen.query_one(f"#{ident}", Input).value = value
        screen.query_one("#tasks", SelectionList).select("piqa_offline")
        screen.query_one("#dtype", Select).value = "float32"
        screen.query_one("#fitness", Select).value = "mean"
        await settle(pilot)
        screen.query_one("#override-task", Select).value = "piqa_offline"
        await settle(pilot)
        await set_value(pilot, screen, "override-limit", "5")
        saved = screen.build_config()
        await config_file(pilot, screen, path, "f2")
    assert path.is_file()
    assert RunConfig.load(path).to_dict() == saved.to_dict()

    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await config_file(pilot, screen, path, "f3")
        loaded = screen.build_config()
        assert loaded.to_dict() == saved.to_dict()
        assert loaded.tasks == [
            TaskSpec("hellaswag_offline"),
            TaskSpec("openbookqa_offline"),
            TaskSpec("piqa_offline", limit=5),
            TaskSpec("lambada_openai"),
        ]
        assert not start_button(screen).disabled


async def test_load_of_a_bad_file_reports_and_keeps_the_form(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("population = 'many'\nmystery = 1\n")
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        before = screen.build_config().to_dict()
        await config_file(pilot, screen, bad, "f3")
        assert any("unknown key 'mystery'" in n.message for n in pilot.app._notifications)
        assert screen.build_config().to_dict() == before
        await config_file(pilot, screen, tmp_path / "missing.toml", "f3")
        assert any("does not exist" in n.message for n in pilot.app._notifications)


# ---- start -----------------------------------------------------------------------------------------
class FakeProc:
    """Stands in for the engine's Popen: alive until ``returncode`` is set."""

    pid = 0

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RunStore, FakeProc]]:
    """Replace the engine spawn (see the module docstring) with a real store and a fake process."""
    started: list[tuple[RunStore, FakeProc]] = []

    def start_run(config: RunConfig) -> tuple[RunStore, FakeProc]:
        config.validate()
        store = RunStore.create(config)
        started.append((store, FakeProc()))
        return started[-1]

    monkeypatch.setattr(launch, "start_run", start_run)
    return started


async def start(pilot: Any, launches: list[tuple[RunStore, FakeProc]]) -> tuple[RunStore, FakeProc]:
    """Press F5 (Start) and hand back the launch it made."""
    await key(pilot, "f5")
    assert launches, "F5 launched nothing"
    return launches[-1]


async def test_start_opens_the_run_screen_once_the_engine_runs(launches: list) -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        store, _ = await start(pilot, launches)
        assert len(launches) == 1
        assert store.config().to_dict() == screen.build_config().to_dict()
        assert start_button(screen).disabled
        assert f"Starting run {store.id}" in text_of(screen, "#form-error")
        await pilot.press("f5")  # a second press while starting starts nothing
        await pilot.pause()
        assert len(launches) == 1
        store.set_state(RunState.RUNNING)
        await until(pilot, lambda: pilot.app.screen.id == "run", "the Run screen")


async def test_invalid_setup_reported_by_the_engine_comes_back_to_the_form(
    launches: list,
) -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await pilot.click("#start")
        await pilot.pause()
        store, _ = launches[0]
        store.set_state(
            RunState.INVALID, error="task 'mutual' needs its dataset, which is not offline"
        )
        await until(
            pilot,
            lambda: (
                "Not started: task 'mutual' needs its dataset" in text_of(screen, "#form-error")
            ),
            "the engine's error on the form",
        )
        assert pilot.app.screen is screen
        assert not store.path.exists()  # discarded
        assert not start_button(screen).disabled


async def test_engine_that_dies_before_starting_is_reported(launches: list) -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        store, proc = await start(pilot, launches)
        store.log_path.write_text("Traceback...\nModuleNotFoundError: No module named 'torch'\n")
        proc.returncode = 1
        await until(
            pilot,
            lambda: "exited before starting" in text_of(screen, "#form-error"),
            "the start-up failure on the form",
        )
        error = text_of(screen, "#form-error")
        assert "exited before starting" in error
        assert "No module named 'torch'" in error


def test_launch_status_is_what_the_cli_waits_on() -> None:
    """``launch.launch_status``: the one start-up check behind Setup's poll and the CLI's wait."""
    config = RunConfig(model="demo")
    store, proc = RunStore.create(config), FakeProc()
    assert launch.launch_status(store, proc) == launch.LaunchStatus("starting")
    store.set_state(RunState.RUNNING)
    assert launch.launch_status(store, proc).phase == "started"
    launch.wait_started(store, proc)  # returns at once: the engine is past setup

    rejected = RunStore.create(config)
    rejected.set_state(RunState.INVALID, error="task 'mutual' needs its dataset")
    with pytest.raises(GapruneError, match="task 'mutual' needs its dataset"):
        launch.wait_started(rejected, FakeProc())
    assert not rejected.path.exists()  # discarded: never listed as a run

    dead, proc = RunStore.create(config), FakeProc()
    dead.log_path.write_text("Traceback...\nModuleNotFoundError: No module named 'torch'\n")
    proc.returncode = 1
    status = launch.launch_status(dead, proc)
    assert status.phase == "rejected"
    assert (
        status.error
        == "the engine exited before starting: ModuleNotFoundError: No module named 'torch'"
    )
    with pytest.raises(GapruneError, match="exited before starting"):
        launch.wait_started(dead, proc)


# ---- keys ----------------------------------------------------------------------------------------
async def test_keys_history_help_and_quit() -> None:
    app = GapruneApp()
    async with opened(app, SetupScreen, "setup", settled=True) as (pilot, screen):
        assert screen.query_one("#model", Input).has_focus
        await key(pilot, "f1")
        assert app.screen.query("HelpPanel")
        await key(pilot, "f1")
        assert not app.screen.query("HelpPanel")
        await key(pilot, "f4")
        assert app.screen.id == "history"
        await key(pilot, "n")
        assert app.screen.id == "setup"
        app.screen.query_one("#tasks").focus()
        await key(pilot, "question_mark")
        assert app.screen.query("HelpPanel")
        await key(pilot, "q")
    assert app.return_code == 0


async def test_q_types_into_a_field_instead_of_quitting() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        screen.query_one("#metric", Input).focus()
        await key(pilot, "q")
        assert pilot.app.is_running
        assert screen.query_one("#metric", Input).value == "q"


# ---- several workers (issue 12): workers, devices, ray ----------------------------------------
# These tests use only settle, text_of, set_value, start_button and launches, and open the screen
# through backend_form.
@asynccontextmanager
async def backend_form() -> AsyncIterator[tuple[Any, SetupScreen]]:
    """The Setup screen at 100x30 with its thread workers settled."""
    async with GapruneApp().run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, SetupScreen)
        yield pilot, screen


@pytest.fixture
def ray_head() -> Iterator[str]:
    """An address that answers the Ray address check's gRPC handshake (tests/listeners.py)."""
    with grpc_listener() as address:
        yield address


async def test_workers_zero_is_a_visible_error_and_two_is_named_in_the_cost() -> None:
    async with backend_form() as (pilot, screen):
        # No GPU here: no --devices choice (its label and its select with the list box).
        assert not screen.query_one(".label-devices").display
        assert not screen.query_one("#devices").parent.display
        await set_value(pilot, screen, "workers", "0")
        assert not screen.query_one("#workers", Input).is_valid
        assert start_button(screen).disabled
        assert "workers must be an integer >= 1" in text_of(screen, "#form-error")
        await set_value(pilot, screen, "workers", "2")
        assert not start_button(screen).disabled
        assert screen.build_config().workers == 2
        cost = text_of(screen, "#cost")
        assert "2 workers share one device (auto): about one process's rate" in cost
        assert "at most 168 evaluations" in cost


async def test_ray_choice_and_address_are_checked_with_visible_errors(ray_head: str) -> None:
    async with backend_form() as (pilot, screen):
        address = screen.query_one("#ray-address", Input)
        assert str(screen.query_one("#ray", Select).value) == OFF and not address.display
        screen.query_one("#ray", Select).value = "address"
        await settle(pilot)
        assert address.display
        assert "ray is empty" in text_of(screen, "#form-error")
        await set_value(pilot, screen, "ray-address", "head-node")
        assert start_button(screen).disabled
        assert "ray address 'head-node' is not HOST:PORT" in text_of(screen, "#form-error")
        nobody = closed_address()
        await set_value(pilot, screen, "ray-address", nobody)
        assert f"no Ray cluster answers at {nobody}" in text_of(screen, "#form-error")
        assert start_button(screen).disabled
        with silent_listener() as silent:  # accepts, never answers: refused, not hung
            await set_value(pilot, screen, "ray-address", silent)
            assert "sent nothing in 3 s" in text_of(screen, "#form-error")
            assert start_button(screen).disabled
        await set_value(pilot, screen, "ray-address", ray_head)
        assert not start_button(screen).disabled, text_of(screen, "#form-error")
        assert screen.build_config().ray == ray_head
        assert "a Ray actor per GPU of the cluster" in text_of(screen, "#cost")
        screen.query_one("#ray", Select).value = "local"
        await settle(pilot)
        assert not address.display
        assert screen.build_config().ray == "local"
        screen.query_one("#ray", Select).value = OFF
        await settle(pilot)
        assert screen.build_config().ray is None


async def test_devices_offered_with_several_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ray_head: str
) -> None:
    """Two GPUs: devices all / a typed list; saved and loaded (F2/F3) with workers and ray."""
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "2")
    path = tmp_path / "gpus.toml"
    async with backend_form() as (pilot, screen):
        devices = screen.query_one("#devices", Select)
        assert devices.parent.display and screen.query_one(".label-devices").display
        assert not screen.query_one("#devices-list").display  # until "list" is picked
        devices.value = "all"
        await settle(pilot)
        assert text_of(screen, "#devices #label") == "all 2 GPUs"  # the GPUs found, by count
        assert screen.build_config().devices == "all"
        assert "2 workers on 2 devices: up to 2x faster" in text_of(screen, "#cost")
        await set_value(pilot, screen, "workers", "2")
        assert "--workers and --devices both set" in text_of(screen, "#form-error")
        await set_value(pilot, screen, "workers", "1")
        devices.value = "list"
        await settle(pilot)
        assert screen.query_one("#devices-list").display
        await set_value(pilot, screen, "devices-list", "cuda:1,gpu0")
        assert "devices must be all or a list like cuda:0,cuda:1" in text_of(screen, "#form-error")
        await set_value(pilot, screen, "devices-list", "cuda:1, cuda:0")
        screen.query_one("#ray", Select).value = "address"
        await settle(pilot)
        await set_value(pilot, screen, "ray-address", ray_head)
        assert not start_button(screen).disabled, text_of(screen, "#form-error")
        saved = screen.build_config()
        assert (saved.devices, saved.ray) == ("cuda:1,cuda:0", ray_head)
        screen.query_one("#config-path", Input).value = str(path)
        await pilot.press("f2")
        await settle(pilot)

    async with backend_form() as (pilot, screen):
        screen.query_one("#config-path", Input).value = str(path)
        await pilot.press("f3")
        await settle(pilot)
        assert screen.build_config().to_dict() == saved.to_dict()
        assert str(screen.query_one("#devices", Select).value) == "list"
        assert screen.query_one("#devices-list", Input).value == "cuda:1,cuda:0"
        assert str(screen.query_one("#ray", Select).value) == "address"
        assert screen.query_one("#ray-address", Input).value == ray_head
        assert not start_button(screen).disabled


def test_estimate_names_the_workers_and_never_divides_by_them() -> None:
    config = RunConfig(
        population=8, generations=3, limit=20, fitness="squared_mean", algorithm="ga"
    ).validate()
    samples = [TimingSample(frozenset({"hellaswag_offline"}), 0.10)]
    one = estimate_cost(config, samples)
    assert workers_note(config) == "" and one.workers == ""
    for changes, said in (
        ({"workers": 3, "device": "cpu"}, "3 workers share one device (cpu)"),
        ({"devices": "cuda:0,cuda:1"}, "2 workers on 2 devices: up to 2x faster"),
        (
            {"ray": "local", "workers": 2},
            "2 Ray actors: up to 2x faster on 2 GPUs, not when they share",
        ),
    ):
        changed = dataclasses.replace(config, **changes)
        several = estimate_cost(changed, samples, gpus=2)
        assert several.seconds == one.seconds  # the measurement is one process's
        assert several.text() == f"{one.text()}; {workers_note(changed, 2)}"
        assert said in several.text()
    every = dataclasses.replace(config, devices="all")
    assert "4 workers on 4 devices: up to 4x faster" in estimate_cost(every, [], gpus=4).text()


async def test_two_workers_reach_the_launched_runs_config(launches: list) -> None:
    async with backend_form() as (pilot, screen):
        await set_value(pilot, screen, "workers", "2")
        await pilot.press("f5")
        await pilot.pause()
        assert len(launches) == 1
        store, _ = launches[0]
        written = tomllib.loads((store.path / "config.toml").read_text())
        assert (written["workers"], written.get("devices"), written.get("ray")) == (2, None, None)
        assert store.config().to_dict() == screen.build_config().to_dict()


@pytest.mark.parametrize(("assume", "count"), [("3", 3), ("yes", 1), ("0", 0)])
def test_gpu_count_assumed(monkeypatch: pytest.MonkeyPatch, assume: str, count: int) -> None:
    """GAPRUNE_ASSUME_GPU overrides detection: a count, yes for one GPU, 0 for none."""
    from gaprune_tui.core import devices

    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", assume)
    assert devices.gpu_count() == count and devices.gpu_available() == (count > 0)


@pytest.mark.parametrize(("visible", "count"), [(None, 4), ("2,3", 2), ("", 0)])
def test_gpu_count_without_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, visible: str | None, count: int
) -> None:
    """One folder per GPU under the driver's /proc entry, narrowed by CUDA_VISIBLE_DEVICES."""
    from gaprune_tui.core import devices

    monkeypatch.delenv("GAPRUNE_ASSUME_GPU", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", tmp_path / "nvidia")
    assert devices.gpu_count() == 0
    for bus in ("0000:01:00.0", "0000:41:00.0", "0000:81:00.0", "0000:c1:00.0"):
        (tmp_path / "nvidia" / "gpus" / bus).mkdir(parents=True)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.gpu_count() == count
