"""Snapshots of the Run and Results screens at 100x30, from the fake engine with a fixed run id.

Deterministic by construction: GAPRUNE_TUI_DETERMINISTIC=1 (no ETA, no blink), a fixed run id
(the default one holds the clock), and a seeded fake engine whose timings are made up, not measured.
Update with `pytest tests/test_tui_snapshots_run.py --snapshot-update` after a deliberate change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_engine import FakeEngine, fake_store, populate
from tui_wait import SIZE

from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.app import GapruneApp

pytestmark = pytest.mark.usefixtures("deterministic")


def ran(run_id: str, steps: int) -> tuple[RunStore, FakeEngine]:
    """A fake run with a fixed id (the snapshot shows it), ``steps`` engine steps in."""
    store = fake_store(run_id=run_id)
    engine = FakeEngine(store)
    engine.run(steps)
    return store, engine


def test_run_screen_mid_search(snap_compare) -> None:
    store, engine = ran("20260101-120000-demo", 36)
    while store.events()[-1].kind != "evaluation_started":  # stop mid-evaluation, generation 2
        engine.step()
    assert snap_compare(GapruneApp(initial="run", run=str(store.path)), terminal_size=SIZE)


def test_run_screen_failed_engine(snap_compare) -> None:
    store, engine = ran("20260101-120000-fail", 30)
    engine.fail("CUDA out of memory while scoring hellaswag_offline")
    assert snap_compare(GapruneApp(initial="run", run=str(store.path)), terminal_size=SIZE)


def test_results_screen(snap_compare) -> None:
    store = fake_store(run_id="20260101-120000-done")
    populate(store)
    assert snap_compare(GapruneApp(initial="results", run=str(store.path)), terminal_size=SIZE)


def test_screenshot_script_saves_every_screen(tmp_path: Path) -> None:
    """scripts/screenshots.py --fake: one SVG per screen, each showing what it should."""
    out = tmp_path / "shots"
    env = {**os.environ, "GAPRUNE_HOME": str(tmp_path / "home")}
    script = Path(__file__).resolve().parent.parent / "scripts" / "screenshots.py"
    subprocess.run(
        [sys.executable, str(script), "--fake", "--theme", "gaprune-dark", "--out", str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        f"{screen}-gaprune-dark.svg"
        for screen in sorted(("setup", "run", "run-scores", "results", "history"))
    ]
    run_svg = (out / "run-gaprune-dark.svg").read_text(encoding="utf-8")
    assert "20260101-120000-demo" in run_svg and "best&#160;so&#160;far" in run_svg
    results_svg = (out / "results-gaprune-dark.svg").read_text(encoding="utf-8")
    assert "%&#160;params" in results_svg
