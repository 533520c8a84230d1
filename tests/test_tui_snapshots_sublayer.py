"""Snapshots of a sub-block run (``--granularity sublayer``) at 80x24, the smallest terminal the app
promises: the Run screen mid-search (the bitmap's attention and MLP rows per genome, the genome
text) and the finished run's Results screen (the pick's drops, parameters, KV cache and measured
speed above the table).

Deterministic as the other snapshots: GAPRUNE_TUI_DETERMINISTIC=1, fixed run ids, a seeded fake
engine whose speed figures are made up. Update with
`pytest tests/test_tui_snapshots_sublayer.py --snapshot-update` after a deliberate change, then
look at the SVGs.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store, populate

from gaprune_tui.ui.app import GapruneApp

pytestmark = pytest.mark.usefixtures("deterministic")

SIZE = (80, 24)
# 8 of the demo model's 60 sub-blocks, its first layer protected.
SUBLAYER = {"granularity": "sublayer", "prune": 8, "protect": 1}


def test_run_screen_sublayer_80x24(snap_compare: Any) -> None:
    store = fake_store(run_id="20260101-120000-sub", **SUBLAYER)
    engine = FakeEngine(store, prune=8, protect=1)
    engine.run(36)
    while store.events()[-1].kind != "evaluation_started":  # mid-evaluation, generation 2
        engine.step()
    assert snap_compare(GapruneApp(initial="run", run=str(store.path)), terminal_size=SIZE)


def test_results_screen_sublayer_80x24(snap_compare: Any) -> None:
    store = fake_store(run_id="20260101-120000-sub-done", **SUBLAYER)
    populate(store, prune=8, protect=1)
    assert snap_compare(GapruneApp(initial="results", run=str(store.path)), terminal_size=SIZE)
