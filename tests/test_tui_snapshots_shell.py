"""Snapshots of the shell's screens (setup, history) at 100x30, plus setup at 80x24 (the smallest
terminal the app promises to work in). Deterministic: GAPRUNE_TUI_DETERMINISTIC hides times and
stops cursor blink, the GPU check is pinned, runs have fixed ids and seeded fake-engine data.
Update after an intended change with ``pytest tests/test_tui_snapshots_shell.py --snapshot-update``.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_engine import history_runs
from tui_wait import SIZE, settle

from gaprune_tui.ui.app import GapruneApp

pytestmark = pytest.mark.usefixtures("deterministic", "cpu_only")


@pytest.fixture(autouse=True)
def _empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # The setup screen lists Hugging Face cache models; other tests put models in the session's
    # cache, so give these snapshots an empty one of their own.
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-hub"))


def test_setup_screen(snap_compare: Any) -> None:
    assert snap_compare(GapruneApp(), terminal_size=SIZE, run_before=settle)


def test_setup_screen_80x24(snap_compare: Any) -> None:
    assert snap_compare(GapruneApp(), terminal_size=(80, 24), run_before=settle)


def test_history_screen(snap_compare: Any) -> None:
    history_runs(failed=False)
    assert snap_compare(GapruneApp(initial="history"), terminal_size=SIZE, run_before=settle)
