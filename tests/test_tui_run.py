"""Pilot tests of the Run screen: every binding, live updates, and a dead engine.

The engine here is tests/fake_engine.py writing into a real run store, so the tests run in
milliseconds; the real engine is driven end to end by the lead's e2e test. Pause/resume/stop are
checked where they land: control rows in the store, and the engine's answer shown on screen.
"""

from __future__ import annotations

import io
import re
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store, populate
from rich.console import Console
from textual.widgets import DataTable, Sparkline, Static
from tui_wait import key, opened, until

from gaprune_tui.core import launch
from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.results import ResultsScreen
from gaprune_tui.ui.screens.run import RunScreen
from gaprune_tui.ui.widgets.dialogs import ConfirmDialog, QuitDialog, ScoresDialog
from gaprune_tui.ui.widgets.layer_bitmap import (
    FALLBACK_COLOURS,
    GLYPH_DROPPED,
    GLYPH_KEPT,
    GLYPH_PROTECTED,
    LABEL_WIDTH,
    LayerBitmap,
)

pytestmark = pytest.mark.anyio

SIZE = (100, 30)


def running_store(steps: int = 20) -> tuple[RunStore, FakeEngine]:
    store = fake_store()
    engine = FakeEngine(store)
    engine.run(steps)
    return store, engine


def actions(store: RunStore) -> list[str]:
    return [request.action for request in store.pending_requests()]


def plain(renderable: object) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def run_screen(
    store: RunStore, **run_test: Any
) -> AbstractAsyncContextManager[tuple[Any, RunScreen]]:
    """The app attached to ``store``, on its Run screen."""
    return opened(GapruneApp(initial="run", run=str(store.path)), RunScreen, "run", **run_test)


def banner_text(screen: RunScreen) -> str:
    return str(screen.query_one("#banner", Static).render())


def title_text(screen: RunScreen) -> str:
    return str(screen.query_one("#run-title", Static).render())


async def pressed(pilot: Any, name: str) -> object:
    """Press ``name``; the screen (or dialog) the app shows then."""
    await pilot.press(name)
    return pilot.app.screen


async def requested(pilot: Any, store: RunStore, name: str) -> list[str]:
    """Press ``name``; the control requests it wrote to the store."""
    await pilot.press(name)
    return actions(store)


async def engine_step(pilot: Any, screen: RunScreen, engine: FakeEngine) -> None:
    """The fake engine takes one step (honouring any request) and the screen shows it now,
    without waiting for its timer."""
    engine.step()
    screen.poll()
    await pilot.pause()


async def test_opens_on_a_running_search_and_follows_it_live() -> None:
    store, engine = running_store(4)  # started, base scores, first evaluation started
    async with run_screen(store, notifications=True) as (pilot, screen):
        table = screen.query_one("#generations", DataTable)
        bitmap = screen.query_one("#layer-bitmap", LayerBitmap)
        assert table.row_count == 0
        evaluating = str(screen.query_one("#evaluating", Static).render())
        assert "evaluating gen 0 #1" in evaluating
        # The rest of generation 0 and generation 1 arrive while we watch.
        engine.run(16 + 9)
        screen.poll()
        await pilot.pause()
        gens = store.generations()
        assert table.row_count == len(gens) == 2
        assert screen.query_one("#best-fitness", Sparkline).data == [g.best_fitness for g in gens]
        assert bitmap.rows[0].best and bitmap.rows[0].dropped == gens[-1].best_dropped
        assert [r.dropped for r in bitmap.rows[1:]] == gens[-1].population
        title = title_text(screen)
        assert "running" in title and "generation 2/3" in title
        # The timer alone (4 Hz) picks up the next events too.
        engine.run()

        def toasts() -> list[str]:
            return [str(t.render()) for t in screen.query("Toast")]

        await until(
            pilot,
            lambda: (
                table.row_count == 4
                and "finished" in banner_text(screen)
                and any("press o for the results" in t for t in toasts())
            ),  # offered, not forced
            "the timer to show the finished search",
        )
        log = screen.query_one("#engine-log")
        assert any("search finished" in str(line.text) for line in log.lines)


async def test_pause_and_resume_write_requests_and_show_the_engine_answer() -> None:
    store, engine = running_store()
    async with run_screen(store) as (pilot, screen):
        assert await requested(pilot, store, "p") == ["pause"]
        assert "running" in title_text(screen)
        await engine_step(pilot, screen, engine)  # the engine honours it between evaluations
        assert store.state == "paused"
        assert "paused" in title_text(screen)
        assert "Paused" in banner_text(screen)
        assert await requested(pilot, store, "p") == []  # already paused: no second request
        assert await requested(pilot, store, "r") == ["resume"]
        await engine_step(pilot, screen, engine)
        assert "running" in title_text(screen)
        assert await requested(pilot, store, "r") == []  # running: nothing to resume


async def test_stop_asks_first() -> None:
    store, engine = running_store()
    async with run_screen(store) as (pilot, screen):
        assert isinstance(await pressed(pilot, "s"), ConfirmDialog)
        assert await pressed(pilot, "n") is screen
        assert actions(store) == []
        await pilot.press("s")
        assert await requested(pilot, store, "y") == ["stop"]
        assert pilot.app.screen is screen
        await engine_step(pilot, screen, engine)
        assert "stopped" in banner_text(screen)
        # Not running any more: nothing asked, nothing written.
        assert await requested(pilot, store, "s") == []
        assert isinstance(pilot.app.screen, RunScreen)


@pytest.mark.parametrize(
    ("answer", "requests", "exits"),
    [("c", [], False), ("l", [], True), ("s", ["stop"], True)],  # cancel, leave, stop and quit
)
async def test_quit_while_running_asks(answer: str, requests: list[str], exits: bool) -> None:
    store, _engine = running_store()
    async with run_screen(store) as (pilot, screen):
        assert isinstance(await pressed(pilot, "q"), QuitDialog)
        await key(pilot, answer)
        assert actions(store) == requests
        assert pilot.app.is_running is not exits
        if not exits:
            assert isinstance(pilot.app.screen, RunScreen)


async def test_quit_without_a_live_engine_does_not_ask() -> None:
    store, engine = running_store()
    engine.crash()
    async with run_screen(store) as (pilot, screen):
        await key(pilot, "q")
        assert not pilot.app.is_running


async def test_enter_shows_scores_from_bitmap_and_generation_table() -> None:
    store = fake_store()
    engine = populate(store, finished=False)
    async with run_screen(store) as (pilot, screen):
        bitmap = screen.query_one(LayerBitmap)
        assert bitmap.has_focus
        best = store.best_evaluations(1)[0]
        await pilot.press("enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, ScoresDialog)
        assert dialog.dropped == best.dropped
        assert dialog.scores == engine.scores_of(best.dropped)
        table_text = plain(dialog.query_one("#scores-table", Static).content)
        assert "hellaswag_offline" in table_text and "0.4400" in table_text  # base beside it
        await pilot.press("escape")
        assert pilot.app.screen is screen
        await pilot.press("down", "enter")  # first individual of the population
        assert pilot.app.screen.dropped == store.generations()[-1].population[0]
        await pilot.press("escape")
        screen.query_one("#generations", DataTable).focus()
        await pilot.press("enter")  # generation 0's best
        assert isinstance(pilot.app.screen, ScoresDialog)
        assert pilot.app.screen.dropped == store.generations()[0].best_dropped
        await pilot.press("enter")
        assert pilot.app.screen is screen


async def test_o_opens_results() -> None:
    store, _engine = running_store(30)
    async with run_screen(store) as (pilot, screen):
        await key(pilot, "o")
        assert isinstance(pilot.app.screen, ResultsScreen) and pilot.app.screen.id == "results"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[RunStore]:
    """The runs the screen resumed: ``launch.resume_run`` is replaced by a recorder, because
    starting a real engine is the e2e test's job."""
    calls: list[RunStore] = []
    monkeypatch.setattr(launch, "resume_run", calls.append)
    return calls


async def test_failed_run_shows_error_and_r_resumes(started: list[RunStore]) -> None:
    store, engine = running_store()
    engine.fail("CUDA out of memory while scoring hellaswag_offline")
    async with run_screen(store) as (pilot, screen):
        text = banner_text(screen)
        assert "failed" in text and "CUDA out of memory" in text and "r to resume" in text
        assert screen.query_one("#banner").has_class("error")
        await pilot.press("r")
        assert [s.path for s in started] == [store.path]
        # The UI keeps working: keys still answer.
        await pilot.press("o")
        assert isinstance(pilot.app.screen, ResultsScreen)


async def test_crashed_engine_shows_log_tail(started: list[RunStore]) -> None:
    store, engine = running_store()
    async with run_screen(store, notifications=True) as (pilot, screen):
        engine.crash()  # kill -9 while we watch
        screen.poll()
        await pilot.pause()
        text = banner_text(screen)
        assert "stopped unexpectedly" in text and "Killed" in text
        toasts = [str(t.render()) for t in screen.query("Toast")]
        assert any("stopped with an error" in t for t in toasts)
        assert "crashed" in title_text(screen)
        await pilot.press("p")  # nothing to pause: no request written
        assert actions(store) == []
        await pilot.press("r")
        assert len(started) == 1


async def test_bitmap_glyphs_and_width_at_80_columns() -> None:
    store = fake_store()
    populate(store, finished=False)
    async with run_screen(store, size=(80, 24)) as (pilot, screen):
        bitmap = screen.query_one(LayerBitmap)
        assert bitmap.cell_width(bitmap.size.width) == 2
        assert LABEL_WIDTH + 2 * 30 <= bitmap.size.width <= 80
        lines = bitmap.render_text(bitmap.size.width).plain.splitlines()
        assert lines[1].split() == [str(i % 10) for i in range(30)]
        row = bitmap.rows[1]
        cells = lines[3][LABEL_WIDTH::2]
        for layer, glyph in enumerate(cells[:30]):
            if layer in row.dropped:
                assert glyph == GLYPH_DROPPED
            elif layer < 2:
                assert glyph == GLYPH_PROTECTED
            else:
                assert glyph == GLYPH_KEPT
        assert max(len(line) for line in lines) <= bitmap.size.width


async def test_bitmap_scales_to_80_layers() -> None:
    store = fake_store(prune=10)
    populate(store, n_layers=80, prune=10, finished=False)
    async with run_screen(store) as (pilot, screen):
        bitmap = screen.query_one(LayerBitmap)
        assert bitmap.n_layers == 80
        assert bitmap.cell_width(bitmap.size.width) == 1
        lines = bitmap.render_text(bitmap.size.width).plain.splitlines()
        assert lines[1][LABEL_WIDTH:].startswith("0123456789012")
        assert max(len(line) for line in lines) <= bitmap.size.width
        assert lines[3][LABEL_WIDTH:].count(GLYPH_DROPPED) == 10


async def test_bitmap_colours_follow_the_theme() -> None:
    store = fake_store()
    populate(store, finished=False)
    async with run_screen(store) as (pilot, screen):
        bitmap = screen.query_one(LayerBitmap)
        for theme in ("gaprune-dark", "gaprune-light"):
            pilot.app.theme = theme
            await pilot.pause()
            variables = pilot.app.get_theme(theme).variables
            assert bitmap.colours() == {k: variables[k] for k in FALLBACK_COLOURS}
            line = bitmap.render_text(bitmap.size.width)
            styles = {str(span.style.color.name) for span in line.spans if span.style.color}
            assert variables["bitmap-dropped"].lower() in {s.lower() for s in styles}
        pilot.app.theme = "textual-dark"  # a theme without bitmap variables: the fallbacks
        await pilot.pause()
        assert set(bitmap.colours()) == set(FALLBACK_COLOURS)
        assert all(bitmap.colours().values())


async def test_invalid_run_shows_why() -> None:
    store = fake_store()
    store.set_state("invalid", error="model 'nope' not found: give a folder, a .gguf or demo")
    async with run_screen(store) as (pilot, screen):
        assert "could not start" in banner_text(screen)
        assert "model 'nope' not found" in banner_text(screen)


def count_polls(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[int]:
    """Count the calls of ``cls.poll`` (the screens' interval timers call it): a one-item list."""
    count = [0]
    real = cls.poll

    def counted(self: object, *args: object, **kwargs: object) -> object:
        count[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "poll", counted)
    return count


async def test_unreadable_store_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    store, _engine = running_store()
    run_polls = count_polls(monkeypatch, RunScreen)
    results_polls = count_polls(monkeypatch, ResultsScreen)
    async with run_screen(store) as (pilot, screen):
        screen.store.close()  # what the screen holds can no longer be read
        screen.poll()
        # The 4 Hz timer polls the closed store too, more than once, without raising.
        seen = run_polls[0]
        await until(pilot, lambda: run_polls[0] >= seen + 2, "the Run screen's timer")
        assert pilot.app.is_running
        assert "Cannot read the run store" in banner_text(screen)
        await pilot.press("o")
        assert isinstance(pilot.app.screen, ResultsScreen)
        seen = results_polls[0]
        await until(pilot, lambda: results_polls[0] >= seen + 3, "the Results screen's timer")
        assert pilot.app.is_running


def screen_lines(app: GapruneApp) -> list[str]:
    """The screen as the terminal shows it, one string a row (what a clipped number loses)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
@pytest.mark.parametrize("eta", [False, True])
async def test_progress_and_fitness_numbers_fit_the_terminal(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], eta: bool
) -> None:
    """At 80x24 and 100x30, with and without the ETA, both bars end in their whole percentage
    (a full generation reads "100%", not "100") and the best-fitness line keeps its numbers."""
    monkeypatch.setenv("GAPRUNE_TUI_DETERMINISTIC", "0" if eta else "1")
    store, engine = running_store(0)
    async with run_screen(store, size=size) as (pilot, screen):
        while not (
            screen.view.started.population
            and screen.view.generation_done >= screen.view.started.population
        ):
            assert engine.step(), "the fake engine ended before generation 0 was scored"
            screen.poll()
        await pilot.pause()
        view = screen.view
        lines = screen_lines(pilot.app)
        assert len(lines) == size[1] and all(len(line) == size[0] for line in lines)
        progress = next(line for line in lines if "search " in line and "gen " in line)
        percent = round(100 * view.evaluations_done / view.started.max_evaluations)
        assert re.search(r"━\s*100%\s", progress), progress
        assert re.search(rf"[━╸╺]\s*{percent}%\s", progress), progress
        best = next(line for line in lines if "best fitness" in line)
        assert f"{view.best_fitness:.4f}" in best
        assert f"(base {view.base_fitness:.4f})" in best, best
