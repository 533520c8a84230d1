"""Snapshots of a Pareto run's front plot: the Run screen mid-search in both built-in themes (the
plot's colours are the theme's bitmap variables) and the finished run's Results screen.

Deterministic as the other snapshots: GAPRUNE_TUI_DETERMINISTIC=1, fixed run ids, a seeded fake
engine. Update with `pytest tests/test_tui_snapshots_pareto.py --snapshot-update` after a deliberate
change, then look at the SVGs.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store, populate

from gaprune_tui.ui.app import GapruneApp

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAPRUNE_TUI_DETERMINISTIC", "1")


def mid_search(run_id: str) -> GapruneApp:
    """A Pareto run stopped mid-evaluation in generation 3: three fronts behind the latest."""
    store = fake_store(run_id=run_id, objective="pareto", prune_range=[2, 6], population=10)
    engine = FakeEngine(store, population=10)
    while len([e for e in store.events() if e.kind == "generation_finished"]) < 3:
        engine.step()
    while store.events()[-1].kind != "evaluation_started":
        engine.step()
    return GapruneApp(initial="run", run=str(store.path))


@pytest.mark.parametrize("theme", ["gaprune-dark", "gaprune-light"])
def test_run_screen_pareto_front(snap_compare: Any, theme: str) -> None:
    app = mid_search(f"20260101-120000-pareto-{theme.removeprefix('gaprune-')}")

    async def use_theme(pilot: Any) -> None:
        pilot.app.theme = theme
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=use_theme)


def test_results_screen_pareto_front(snap_compare: Any) -> None:
    store = fake_store(
        run_id="20260101-120000-pareto-done", objective="pareto", prune_range=[2, 6], population=10
    )
    populate(store, population=10, faithful=True)
    assert snap_compare(GapruneApp(initial="results", run=str(store.path)), terminal_size=SIZE)
