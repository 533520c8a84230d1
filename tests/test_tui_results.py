"""Pilot tests of the Results screen: hall of fame, base scores, chart, scores dialog, export.

Export is tested with a stand-in command that speaks the export CLI's --progress-json protocol
(stage lines, then a done or error line), injected through ``ResultsScreen.export_command``: the
real export loads torch and MergeKit and takes minutes, which belongs to the export helper's and
the e2e tests, while what this screen owns is following the child process, showing progress, the
path and the verification outcome, and surviving a failure.
"""

from __future__ import annotations

import sys
import textwrap
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store, populate
from textual.widgets import DataTable, RichLog, Static
from tui_wait import SIZE, key, opened

from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.results import (
    HALL_OF_FAME,
    ResultsScreen,
    default_export_command,
    params_removed,
)
from gaprune_tui.ui.screens.run import RunScreen
from gaprune_tui.ui.widgets.dialogs import ScoresDialog
from gaprune_tui.ui.widgets.fitness_chart import FitnessChart

pytestmark = pytest.mark.anyio

STAND_IN = textwrap.dedent(
    """
    import json, sys
    run = sys.argv[1]
    rank = sys.argv[sys.argv.index("--rank") + 1]
    mode = sys.argv[sys.argv.index("--mode") + 1]
    assert "--progress-json" in sys.argv
    print(json.dumps({"stage": "merge", "message": "passthrough, 2 slices"}), flush=True)
    print("a stray warning from a library", flush=True)
    # A progress bar redrawn with CR: one 170 kB "line", past asyncio's 64 kB line limit.
    print("\\r".join("Map: %6d/100000" % i for i in range(0, 100000, 10)), flush=True)
    if mode == "ok":
        print(json.dumps({"stage": "verify", "message": "comparing logits"}), flush=True)
        print(json.dumps({"done": True, "path": f"{run}/exports/rank-{rank}", "verified": True,
                          "params_before": 134515008, "params_after": 120354624,
                          "size_bytes": 481418496,
                          "summary": "verified (float32): logits identical; generate ok"}),
              flush=True)
    elif mode == "error":
        print(json.dumps({"error": "disk full while writing model.safetensors"}), flush=True)
        sys.exit(2)
    else:
        raise SystemExit("Traceback: something broke")
    """
)


def stand_in(tmp_path: Path, mode: str):
    script = tmp_path / "export_stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")

    def command(store: RunStore, rank: int, dropped: list[int]) -> list[str]:
        return [
            sys.executable,
            str(script),
            str(store.path),
            "--rank",
            str(rank),
            "--progress-json",
            "--mode",
            mode,
        ]

    return command


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def cells(table: DataTable, row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


def populated() -> tuple[RunStore, FakeEngine]:
    """A fake engine's finished search in a real run store."""
    store = fake_store()
    return store, populate(store)


def results_screen(
    store: RunStore, **run_test: Any
) -> AbstractAsyncContextManager[tuple[Any, ResultsScreen]]:
    """The app opened on ``store``'s Results screen."""
    app = GapruneApp(initial="results", run=str(store.path))
    return opened(app, ResultsScreen, "results", **run_test)


async def export(pilot: Any, screen: ResultsScreen, command: Any, *keys: str) -> None:
    """Press ``keys`` (default: e) to export with ``command`` standing in for the export CLI, and
    wait until the screen has followed it to its end."""
    screen.export_command = command
    await pilot.press(*(keys or ("e",)))
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_hall_of_fame_beside_base_scores_and_chart() -> None:
    store, _ = populated()
    async with results_screen(store) as (pilot, screen):
        table = screen.query_one("#hall-of-fame", DataTable)
        ranked = store.best_evaluations()
        assert table.row_count == min(HALL_OF_FAME, len(ranked))
        headers = [str(c.label) for c in table.columns.values()]
        assert headers == [
            "rank",
            "dropped",
            "kept",
            "% params",
            "fitness",
            "confirmed",
            "held-out",
            "vs base",
            "hellaswag",
            "openbookqa",
        ]
        first = cells(table, 0)
        best = ranked[0]
        assert first[:5] == [
            "1",
            "[" + ",".join(map(str, best.dropped)) + "]",
            "26",
            f"{100 * 4 * 3_540_096 / 134_515_008:.1f}",  # 10.5
            f"{best.fitness:.4f}",
        ]
        assert first[5:8] == ["", "", ""]  # not confirmed: no confirmed, held-out or verdict
        assert first[8] == f"{best.scores['hellaswag_offline']['acc_norm']:.4f}"
        base = text_of(screen, "#base-scores")
        assert "hellaswag_offline acc_norm 0.4400" in base and "all 30 layers" in base
        chart = screen.query_one("#fitness-chart", FitnessChart)
        assert chart.best == [g.best_fitness for g in store.generations()]
        assert chart.mean == [g.mean for g in store.generations()]
        plain = chart.render_text(80).plain
        assert "generation" in plain and f"{max(chart.best):.4f}" in plain


async def test_params_fall_back_to_layer_share_when_not_recorded() -> None:
    store, _ = populated()
    store.set_meta(n_params=None, params_per_layer=None)
    assert params_removed([3, 4, 5, 6], 30, store.meta()) == (pytest.approx(100 * 4 / 30), False)
    # The engine records one count per layer; anything else falls back to the share of layers.
    per_layer = {"n_params": 1000, "params_per_layer": [10, 20, 30, 40]}
    assert params_removed([1, 3], 4, per_layer) == (pytest.approx(6.0), True)
    assert params_removed([1, 3], 4, {"n_params": 1000, "params_per_layer": 25}) == (50.0, False)
    async with results_screen(store) as (pilot, screen):
        table = screen.query_one("#hall-of-fame", DataTable)
        assert [str(c.label) for c in table.columns.values()][3] == "% layers*"
        assert cells(table, 0)[3] == "13.3"
        assert "share of decoder layers" in text_of(screen, "#base-scores")


async def test_enter_shows_the_rows_scores() -> None:
    store, engine = populated()
    async with results_screen(store) as (pilot, _):
        await pilot.press("down", "enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, ScoresDialog)
        second = store.best_evaluations()[1]
        assert dialog.dropped == second.dropped
        assert dialog.scores == engine.scores_of(second.dropped)
        assert dialog.note == "rank 2"
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, ResultsScreen)


async def test_export_follows_progress_and_shows_path_and_verification(tmp_path: Path) -> None:
    store, _ = populated()
    async with results_screen(store) as (pilot, screen):
        await export(pilot, screen, stand_in(tmp_path, "ok"), "down", "e")
        assert screen.export_error is None
        assert screen.export_result["path"] == f"{store.path}/exports/rank-2"
        assert screen.export_result["verified"] is True
        status = text_of(screen, "#export-status")
        assert f"{store.path}/exports/rank-2" in status
        assert "10.5% parameters removed" in status and "459.1 MiB" in status
        assert "verified (float32): logits identical; generate ok" in status
        log = [str(line.text) for line in screen.query_one("#export-log", RichLog).lines]
        assert log == [
            "merge: passthrough, 2 slices",
            "a stray warning from a library",
            "Map:  99990/100000",
            "verify: comparing logits",
        ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("error", "disk full while writing model.safetensors"),
        ("crash", "exited with code 1: Traceback: something broke"),
    ],
)
async def test_export_failure_is_shown_and_the_ui_keeps_working(
    tmp_path: Path, mode: str, expected: str
) -> None:
    async with results_screen(populated()[0]) as (pilot, screen):
        await export(pilot, screen, stand_in(tmp_path, mode))
        assert screen.export_result is None
        assert expected in screen.export_error
        assert "Export failed" in text_of(screen, "#export-status")
        assert screen.query_one("#export-status").has_class("error")
        await pilot.press("enter")
        assert isinstance(pilot.app.screen, ScoresDialog)


async def test_export_command_that_cannot_start(tmp_path: Path) -> None:
    async with results_screen(populated()[0]) as (pilot, screen):
        await export(
            pilot, screen, lambda store, rank, dropped: [str(tmp_path / "no-such-program")]
        )
        assert pilot.app.is_running
        assert "could not run the export" in screen.export_error


def test_default_export_command_is_the_cli() -> None:
    store = fake_store()
    cli = [sys.executable, "-m", "gaprune_tui", "export", str(store.path)]
    assert default_export_command(store, 3, [4, 7]) == [*cli, "--drop", "4,7", "--progress-json"]


async def test_results_of_a_running_search_update_and_escape_goes_back() -> None:
    store = fake_store()
    engine = FakeEngine(store)
    engine.run(20)
    app = GapruneApp(initial="run", run=str(store.path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        table = screen.query_one("#hall-of-fame", DataTable)
        before = table.row_count
        assert before == len(store.best_evaluations())
        engine.run(20)
        screen.poll()
        await pilot.pause()
        assert table.row_count == min(HALL_OF_FAME, len(store.best_evaluations())) > before
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


async def test_export_with_nothing_evaluated_says_so() -> None:
    async with results_screen(fake_store(), notifications=True) as (pilot, screen):
        await key(pilot, "e")
        assert screen.export_result is None and screen.export_error is None
        assert not screen.export_running
        toasts = [str(t.render()) for t in screen.query("Toast")]
        assert any("No evaluated genome to export yet" in t for t in toasts)


async def test_real_export_cli_error_reaches_the_screen() -> None:
    """The real `gaprune_tui export --progress-json` on a rank it refuses (fails before loading
    any model, so it is fast): its error line must be understood and shown."""

    def refused(store: RunStore, rank: int, dropped: list[int]) -> list[str]:
        command = default_export_command(store, rank, dropped)[:5]
        return [*command, "--rank", str(rank + 100), "--progress-json"]  # past the last rank

    async with results_screen(populated()[0]) as (pilot, screen):
        await export(pilot, screen, refused)
        assert screen.export_result is None
        assert "use --rank 1.." in screen.export_error
        assert "Export failed" in text_of(screen, "#export-status")


async def test_base_scores_from_meta_when_the_event_is_missing() -> None:
    store = fake_store()
    store.set_meta(
        n_layers=30, base_scores={"hellaswag_offline": {"acc_norm": 0.41}}, base_fitness=0.1681
    )
    async with results_screen(store) as (pilot, screen):
        base = text_of(screen, "#base-scores")
        assert "hellaswag_offline acc_norm 0.4100" in base and "fitness 0.1681" in base


async def test_at_80x24_the_table_keeps_eight_rows_and_the_pick_line_shows() -> None:
    """A laptop terminal over SSH: the fitness chart and the (empty) export log fold away, so
    the ranked table keeps at least 8 rows; the pick's line against the baselines stays on top."""
    store, _ = populated()
    async with results_screen(store, size=(80, 24)) as (pilot, screen):
        await pilot.pause()
        table = screen.query_one("#hall-of-fame", DataTable)
        assert table.row_count >= 8
        assert table.size.height >= 9  # the header and 8 rows
        assert not screen.query_one("#fitness-chart", FitnessChart).display
        assert not screen.query_one("#export-log").display
        line = text_of(screen, "#pick-line")
        result = store.result()
        assert result is not None
        assert line.startswith("pick: drop [" + ",".join(map(str, result["dropped_layers"])))
        assert result["headline"] in " ".join(line.split())
    async with results_screen(store, size=(100, 50)) as (pilot, screen):
        await pilot.pause()
        assert screen.query_one("#fitness-chart", FitnessChart).display
