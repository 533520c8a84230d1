"""The History screen on a real run store filled by tests/fake_engine (finished, running, crashed,
stopped and failed runs), driven with Pilot through every key."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from fake_engine import fake_store, history_runs, populate
from textual.widgets import DataTable, Static
from tui_wait import SIZE, key, opened, until

from gaprune_tui.core import launch
from gaprune_tui.core.store import RunStore, list_runs
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.history import HistoryScreen

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cpu_only")]


@pytest.fixture
def runs() -> dict[str, RunStore]:
    """One run per state the screen treats differently; ids sort in this order, newest first."""
    return history_runs()


def history_screen(app: GapruneApp | None = None) -> AbstractAsyncContextManager[Any]:
    """The app (a new one unless given) opened on History; hands over (pilot, screen)."""
    return opened(app or GapruneApp(initial="history"), HistoryScreen, "history")


def rows(screen: HistoryScreen) -> list[list[str]]:
    table = screen.query_one("#runs", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def select(pilot: Any, screen: HistoryScreen, run_id: str) -> None:
    ids = [r.id for r in screen.runs]
    table = screen.query_one("#runs", DataTable)
    table.focus()
    table.move_cursor(row=ids.index(run_id))
    await pilot.pause()


async def test_lists_runs_with_state_model_best_and_evaluations(runs: dict) -> None:
    async with history_screen() as (pilot, screen):
        table = rows(screen)
        by_id = {row[0]: row for row in table}
        assert [row[0] for row in table] == [r.id for r in list_runs()]
        assert len(table) == 5
        for name, store in runs.items():
            row = by_id[store.id]
            assert row[1] == name
            assert row[2] == "demo"
            assert row[5] == str(len(store.evaluations()))
        best = runs["finished"].meta()["best_fitness"]
        assert by_id[runs["finished"].id][3] == f"{best:.4f}"
        assert "5 searches" in str(screen.query_one("#history-status", Static).render())


async def test_empty_history_says_how_to_start() -> None:
    async with history_screen() as (pilot, screen):
        assert rows(screen) == []
        assert "press n" in str(screen.query_one("#history-status", Static).render())
        await pilot.press("o", "r", "d")  # nothing selected: nothing happens
        await pilot.pause()
        assert pilot.app.screen is screen


async def test_one_run_is_one_search() -> None:
    """The status line agrees with its count: "1 search", then "2 searches" after a refresh."""
    populate(fake_store(run_id="20260101-000001-aaaa"))
    async with history_screen() as (pilot, screen):
        status = str(screen.query_one("#history-status", Static).render())
        assert status.startswith("1 search.")
        populate(fake_store(run_id="20260101-000002-bbbb"))
        screen.refresh_runs()
        await pilot.pause()
        assert str(screen.query_one("#history-status", Static).render()).startswith("2 searches.")


async def test_new_runs_appear_on_refresh_and_cursor_stays(runs: dict) -> None:
    async with history_screen() as (pilot, screen):
        await select(pilot, screen, runs["crashed"].id)
        newer = fake_store(run_id="20260101-000009-ffff")
        populate(newer)
        await key(pilot, "f5")
        assert rows(screen)[0][0] == newer.id
        assert screen.selected_run().id == runs["crashed"].id  # type: ignore[union-attr]
        another = fake_store(run_id="20260101-000010-abcd")
        # The interval refresh picks it up without a key.
        await until(pilot, lambda: rows(screen)[0][0] == another.id, "the interval refresh")


@pytest.mark.parametrize(
    ("name", "open_key", "screen_id"),
    [
        ("finished", "enter", "results"),
        ("stopped", "o", "results"),
        ("running", "o", "run"),
        ("crashed", "enter", "run"),
    ],
)
async def test_open_shows_results_or_attaches(
    runs: dict, name: str, open_key: str, screen_id: str
) -> None:
    async with history_screen() as (pilot, screen):
        await select(pilot, screen, runs[name].id)
        await key(pilot, open_key)
        assert pilot.app.screen.id == screen_id
        assert pilot.app.screen.store.id == runs[name].id  # type: ignore[attr-defined]


@pytest.fixture
def resumes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record resume requests instead of spawning the engine: a real engine start (model load,
    lm-eval) is the end-to-end test's job; here the screen's decision and hand-off are tested."""
    calls: list[str] = []

    def resume_run(store: RunStore) -> None:
        calls.append(store.id)

    monkeypatch.setattr(launch, "resume_run", resume_run)
    return calls


@pytest.mark.parametrize(
    ("name", "resumable"),
    [
        ("stopped", True),
        ("crashed", True),
        ("failed", True),
        ("running", False),
        ("finished", False),
    ],
)
async def test_resume_spawns_for_ended_runs_and_refuses_the_others(
    runs: dict, resumes: list[str], name: str, resumable: bool
) -> None:
    """An ended run is resumed and the Run screen attaches to it; a running or finished one is
    refused with a note, and History stays."""
    async with history_screen() as (pilot, screen):
        await select(pilot, screen, runs[name].id)
        await key(pilot, "r")
        if resumable:
            assert resumes == [runs[name].id]
            assert pilot.app.screen.id == "run"
        else:
            assert resumes == []
            assert pilot.app.screen is screen
            notes = [n.message for n in pilot.app._notifications]
            assert any("only stopped, failed or crashed" in n for n in notes)


async def test_delete_asks_and_removes_only_on_yes(runs: dict) -> None:
    async with history_screen() as (pilot, screen):
        target = runs["finished"]
        await select(pilot, screen, target.id)
        await key(pilot, "d")
        assert pilot.app.screen.id == "confirm"
        await key(pilot, "n")
        assert target.path.is_dir()
        await key(pilot, "d")
        await key(pilot, "y")
        assert not target.path.exists()
        assert target.id not in [row[0] for row in rows(screen)]


async def test_delete_refuses_a_running_run(runs: dict) -> None:
    async with history_screen() as (pilot, screen):
        await select(pilot, screen, runs["running"].id)
        await key(pilot, "d")
        assert pilot.app.screen is screen
        assert runs["running"].path.is_dir()


async def test_n_opens_setup_and_f4_comes_back(runs: dict) -> None:
    app = GapruneApp(initial="history")
    async with history_screen(app) as (pilot, screen):
        await key(pilot, "n")
        assert app.screen.id == "setup"
        await key(pilot, "f4")
        assert app.screen is screen
        await key(pilot, "q")
    assert app.return_code == 0


async def test_attach_initial_screen_follows_the_run_state(runs: dict) -> None:
    """``gaprune-tui attach RUN``: the Run screen for a live run, Results for a finished one."""
    for name, expected in (("running", "run"), ("finished", "results")):
        app = GapruneApp(initial="run", run=str(runs[name].path))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert app.screen.id == expected


def test_run_tui_rejects_an_unknown_run_before_touching_the_terminal() -> None:
    from gaprune_tui.core.errors import StoreError
    from gaprune_tui.ui.tui import run_tui

    with pytest.raises(StoreError, match="no run 'nope'"):
        run_tui(initial="run", run="nope")
    with pytest.raises(ValueError, match="needs a run"):
        GapruneApp(initial="results")


@pytest.mark.parametrize("quit_key", ["f10", "ctrl+q", "q"])
async def test_quit_keys_ask_on_a_running_search(runs: dict, quit_key: str) -> None:
    """Every quit key reaches the Run screen's question while its search runs; elsewhere quit
    is immediate (see test_n_opens_setup_and_f4_comes_back)."""
    app = GapruneApp(initial="run", run=str(runs["running"].path))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.id == "run", "the Run screen")
        await key(pilot, quit_key)
        assert app.screen.id == "quit-dialog"
        assert app.is_running
        await key(pilot, "escape")
        assert app.screen.id == "run"


async def test_highlighted_run_shows_its_error_and_what_to_do(runs: dict) -> None:
    async with history_screen() as (pilot, screen):
        detail = screen.query_one("#run-detail", Static)
        await select(pilot, screen, runs["failed"].id)
        assert "error: CUDA out of memory" in str(detail.render())
        assert "r resumes it" in str(detail.render())
        await select(pilot, screen, runs["crashed"].id)
        assert "the engine process died" in str(detail.render())
        await select(pilot, screen, runs["finished"].id)
        best = runs["finished"].meta()["best_dropped"]
        assert f"best: drop {best}" in str(detail.render())
        assert "error" not in str(detail.render())


async def test_r_resumes_a_crashed_run_on_the_real_engine(tmp_path: Any) -> None:
    """No recorder: the real engine process runs a search on a tiny model, is killed -9 after
    generation 0, and ``r`` on History starts the real engine again, which resumes from that
    checkpoint and finishes while the Run screen follows it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tiny_models import build_tiny

    from gaprune_tui.core import events

    model = build_tiny("llama", tmp_path / "llama")
    args = ["--tasks", "hellaswag_offline", "--limit", "8", "--prune", "2", "--protect", "1"]
    args += ["--population", "4", "--generations", "2", "--finalists", "1", "--confirm-limit", "4"]
    args += ["--holdout-tasks", "piqa_offline"]
    start = subprocess.run(
        [sys.executable, "-m", "gaprune_tui", "run", "--model", str(model), *args, "--detach"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GAPRUNE_THREADS": "1"},
    )
    assert start.returncode == 0, start.stderr
    store = RunStore.open(start.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 300
    while store.last_checkpoint() is None:
        assert time.monotonic() < deadline, "generation 0 never closed"
        time.sleep(0.05)
    os.kill(store.meta()["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while store.display_state() != "crashed":
        assert time.monotonic() < deadline, "the killed run does not show as crashed"
        time.sleep(0.05)

    async with history_screen() as (pilot, screen):
        await select(pilot, screen, store.id)
        await pilot.press("r")
        await until(pilot, lambda: pilot.app.screen.id == "run", "the Run screen")
        await until(pilot, lambda: store.state == "finished", "the resumed search", timeout=300)
        banner = pilot.app.screen.query_one("#banner", Static)
        await until(pilot, lambda: "finished" in str(banner.render()), "the finished banner")
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, True]
    closed = [e.generation for e in store.events() if isinstance(e, events.GenerationFinished)]
    assert sorted(closed) == [0, 1, 2] and len(set(closed)) == len(closed)
    result = store.result()
    assert result is not None and len(result["dropped_layers"]) == 2
