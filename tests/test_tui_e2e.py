"""The whole TUI path on the real engine and the embedded model: Setup -> Run -> Results -> Export.

Nothing is faked: F5 spawns the engine process, the Run screen follows its store, and `e` on the
Results screen runs the real export CLI (MergeKit, verification). A tiny budget keeps it to a few
minutes on 2 cores. Slow; runs in CI.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_wait import until

from gaprune_tui.core.store import RunStore, list_runs
from gaprune_tui.ui.app import GapruneApp

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_setup_run_results_export_on_the_real_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "0")
    app = GapruneApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        screen = app.screen
        assert screen.id == "setup"
        for ident, value in {
            "model": "demo",
            "prune": "4",
            "population": "4",
            "generations": "1",
            "limit": "6",
            "finalists": "1",
            "confirm-limit": "6",
            "calibration-tokens": "512",
            "offspring": "4",
            "baselines": "shortgpt,angular,last_k",
        }.items():
            screen.query_one(f"#{ident}", Input).value = value
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not screen.query_one("#start").disabled
        await pilot.press("f5")

        await until(pilot, lambda: app.screen.id == "run", "the Run screen", 300)
        store = RunStore.open(list_runs()[0].id)
        await until(pilot, lambda: store.state == "finished", "the search to finish", 600)
        if app.screen.id != "results":
            await pilot.press("o")
        await until(pilot, lambda: app.screen.id == "results", "the Results screen", 30)
        results = app.screen
        assert len(results.rows) >= 1
        hof = results.query_one("#hall-of-fame")
        assert hof.row_count >= 1

        await pilot.press("e")
        await until(
            pilot,
            lambda: results.export_result is not None or results.export_error is not None,
            "the export",
            600,
        )
        await app.workers.wait_for_complete()  # the export process has exited
        assert results.export_error is None, results.export_error
        assert results.export_result["verified"] is True
    assert store.config().calibration_tokens == 512  # the form's value reached the engine
    result = store.result()
    assert result is not None and len(result["dropped_layers"]) == 4
    exports = list((store.path / "exports").iterdir())
    assert any((e / "config.json").is_file() for e in exports)
