"""Sub-block runs (``--granularity sublayer``) in the TUI: the two-row bitmap, the Run screen's
genome text, the Results screen's savings of the pick, and the Setup form's granularity field.

The bitmap's rendering is checked cell by cell against the genome's units (2 i attention, 2 i + 1
MLP of layer i, ``core/units.py``) at the widths an 80-column terminal gives it; the screens run on
tests/fake_engine.py's sub-block mode, which writes the events and result.json keys the engine
writes. Snapshots of both screens at 80x24 are in test_tui_snapshots_sublayer.py.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fake_engine import PARAMS_PER_ATTENTION, PARAMS_PER_MLP, FakeEngine, fake_store, populate
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Label, Select, Static
from tui_wait import key, opened, settle

from gaprune_tui.core.store import RunStore
from gaprune_tui.core.units import describe
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.history import HistoryScreen
from gaprune_tui.ui.screens.results import ResultsScreen, pick_facts
from gaprune_tui.ui.screens.run import RunScreen
from gaprune_tui.ui.screens.setup import SetupScreen
from gaprune_tui.ui.widgets.dialogs import ScoresDialog
from gaprune_tui.ui.widgets.layer_bitmap import (
    GLYPH_DROPPED,
    GLYPH_KEPT,
    GLYPH_PROTECTED,
    LABEL_WIDTH,
    SUB_LABEL_WIDTH,
    BitmapRow,
    LayerBitmap,
)

pytestmark = pytest.mark.anyio

# A sub-block genome on 30 layers: layer 5 whole (units 10, 11), attention of 7 and 20 (14, 40),
# MLP of 12 and 29 (25, 59).
GENOME = [10, 11, 14, 25, 40, 59]
SUBLAYER = {"granularity": "sublayer", "prune": 6, "protect": 1}


class BitmapApp(App[None]):
    """Just the bitmap, ``width`` columns wide (as the Run screen's body gives it)."""

    def __init__(self, bitmap: LayerBitmap) -> None:
        super().__init__()
        self.bitmap = bitmap

    def compose(self) -> ComposeResult:
        yield self.bitmap


async def rendered(
    n_layers: int, rows: list[BitmapRow], width: int, granularity: str = "sublayer"
) -> tuple[LayerBitmap, list[str]]:
    """The bitmap's lines at ``width`` columns, drawn inside a running app (it reads the theme)."""
    bitmap = LayerBitmap()
    async with BitmapApp(bitmap).run_test(size=(width, 40)) as pilot:
        bitmap.set_rows(n_layers, 1, rows, granularity=granularity)
        await pilot.pause()
        return bitmap, bitmap.render_text(width).plain.splitlines()


def cells(line: str, label_width: int, cell_width: int, n_layers: int) -> str:
    """The glyphs of one bitmap line, one per layer."""
    return line[label_width::cell_width][:n_layers]


def expected(dropped: list[int], kind: int, n_layers: int, protect: int = 1) -> str:
    """The glyphs a sub-block row should show: dropped units, then protected layers, else kept."""
    out = ""
    for layer in range(n_layers):
        if 2 * layer + kind in dropped:
            out += GLYPH_DROPPED
        elif layer < protect:
            out += GLYPH_PROTECTED
        else:
            out += GLYPH_KEPT
    return out


# ---- the bitmap -----------------------------------------------------------------------------------
async def test_bitmap_draws_attention_and_mlp_rows_per_genome_at_80_columns() -> None:
    """30 layers (the demo model) in 78 columns: two-column cells, an ``attn`` row and an ``mlp``
    row per genome, each dropped unit on its own row, a whole layer dropped on both."""
    rows = [BitmapRow(GENOME, 0.1234, best=True), BitmapRow([2, 3], None)]
    bitmap, lines = await rendered(30, rows, 78)
    assert bitmap.cell_width(78) == 2 and bitmap.label_width(78) == SUB_LABEL_WIDTH
    assert lines[1][SUB_LABEL_WIDTH:].split() == [str(i % 10) for i in range(30)]
    attn, mlp, attn2, mlp2, legend = lines[2:7]
    assert attn.startswith("★ 0.1234 attn") and mlp[:SUB_LABEL_WIDTH].split() == ["mlp"]
    assert attn2[:SUB_LABEL_WIDTH].split() == ["…", "attn"]
    assert cells(attn, SUB_LABEL_WIDTH, 2, 30) == expected(GENOME, 0, 30)
    assert cells(mlp, SUB_LABEL_WIDTH, 2, 30) == expected(GENOME, 1, 30)
    # Spelled out: layer 5 dropped whole, attention alone at 7 and 20, MLP alone at 12 and 29.
    a, m = cells(attn, SUB_LABEL_WIDTH, 2, 30), cells(mlp, SUB_LABEL_WIDTH, 2, 30)
    assert [i for i, c in enumerate(a) if c == GLYPH_DROPPED] == [5, 7, 20]
    assert [i for i, c in enumerate(m) if c == GLYPH_DROPPED] == [5, 12, 29]
    assert a[0] == m[0] == GLYPH_PROTECTED
    # Layer 1's attention (unit 2) and MLP (unit 3) of the second genome.
    assert cells(attn2, SUB_LABEL_WIDTH, 2, 30)[:3] == GLYPH_PROTECTED + GLYPH_DROPPED + GLYPH_KEPT
    assert cells(mlp2, SUB_LABEL_WIDTH, 2, 30)[:3] == GLYPH_PROTECTED + GLYPH_DROPPED + GLYPH_KEPT
    assert "dropped" in legend and "attention" not in legend  # the tags name themselves
    assert max(len(line) for line in lines) <= 78
    assert bitmap.get_content_height(bitmap.size, bitmap.size, 78) == 2 + 2 * 2 + 1


@pytest.mark.parametrize("n_layers", [32, 48, 64])
async def test_bitmap_of_32_to_64_layers_fits_80_columns(n_layers: int) -> None:
    """One-column cells; at 64 layers the tags shrink to ``a`` / ``m`` (the legend says what
    they are) so the row still fits in 78 columns."""
    genome = [2 * (n_layers - 1), 2 * 3 + 1, 2 * 8, 2 * 8 + 1]  # attn of the last layer, ...
    bitmap, lines = await rendered(n_layers, [BitmapRow(sorted(genome), 0.2)], 78)
    label_width = bitmap.label_width(78)
    assert bitmap.cell_width(78) == 1
    assert max(len(line) for line in lines) <= 78
    attn, mlp = lines[2], lines[3]
    assert cells(attn, label_width, 1, n_layers) == expected(genome, 0, n_layers)
    assert cells(mlp, label_width, 1, n_layers) == expected(genome, 1, n_layers)
    if n_layers == 64:
        assert label_width == LABEL_WIDTH
        assert attn[:label_width].split()[-1] == "a" and mlp[:label_width].split() == ["m"]
        assert "a attention  m MLP" in lines[4]
    else:
        assert label_width == SUB_LABEL_WIDTH
        assert attn[:label_width].split()[-1] == "attn" and mlp[:label_width].split() == ["mlp"]


async def test_layer_granularity_still_draws_one_row_per_genome() -> None:
    bitmap, lines = await rendered(30, [BitmapRow([3, 9], 0.5)], 78, granularity="layer")
    assert bitmap.label_width(78) == LABEL_WIDTH
    assert len(lines) == 2 + 1 + 1
    row = cells(lines[2], LABEL_WIDTH, 2, 30)
    assert [i for i, c in enumerate(row) if c == GLYPH_DROPPED] == [3, 9]
    assert "attn" not in lines[2]


# ---- the Run screen -------------------------------------------------------------------------------
def sublayer_store(**config: Any) -> RunStore:
    return fake_store(**{**SUBLAYER, **config})


def run_screen(store: RunStore, **run_test: Any) -> AbstractAsyncContextManager[tuple[Any, Any]]:
    return opened(GapruneApp(initial="run", run=str(store.path)), RunScreen, "run", **run_test)


async def test_run_screen_of_a_sublayer_run_names_sub_blocks() -> None:
    store = sublayer_store()
    engine = FakeEngine(store, prune=6, protect=1)
    engine.run(30)
    while store.events()[-1].kind != "evaluation_started":
        engine.step()
    async with run_screen(store, size=(80, 24)) as (pilot, screen):
        view = screen.view
        assert view.started.granularity == "sublayer"
        bitmap = screen.query_one(LayerBitmap)
        assert bitmap.granularity == "sublayer" and bitmap.n_layers == 30
        assert all(len(r.dropped) == 6 for r in bitmap.rows)
        assert max(u for r in bitmap.rows for u in r.dropped) < 60
        summary = str(screen.query_one("#best-summary", Static).render())
        assert f"dropping {describe(view.best_dropped, 'sublayer')}" in summary
        evaluating = str(screen.query_one("#evaluating", Static).render())
        assert describe(view.evaluating.dropped, "sublayer") in evaluating
        table = screen.query_one("#generations", DataTable)
        last = view.rows[-1]
        assert table.get_row(str(last.gen))[6] == describe(last.best_dropped, "sublayer")
        # Enter on the best row: the scores dialog names the sub-blocks, attention and MLP apart.
        await key(pilot, "enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, ScoresDialog)
        head = str(dialog.query_one("#scores-head", Static).render())
        assert describe(view.best_dropped, "sublayer") in head and "kept 54/60 sub-blocks" in head


# ---- the Results screen ---------------------------------------------------------------------------
def results_screen(store: RunStore, **run_test: Any) -> AbstractAsyncContextManager[Any]:
    app = GapruneApp(initial="results", run=str(store.path))
    return opened(app, ResultsScreen, "results", **run_test)


def facts_of(screen: ResultsScreen) -> str:
    return " ".join(str(screen.query_one("#pick-facts", Static).render()).split())


async def test_results_show_the_picks_drops_params_kv_cache_and_measured_speed() -> None:
    store = sublayer_store()
    populate(store, prune=6, protect=1)
    result = store.result()
    assert result is not None and result["granularity"] == "sublayer"
    pick = result["dropped_layers"]
    async with results_screen(store, size=(80, 24)) as (pilot, screen):
        facts = facts_of(screen)
        # Attention and MLP apart, a whole layer in both.
        split = result["dropped_split"]
        attention = sorted(split["layers"] + split["attention"])
        mlp = sorted(split["layers"] + split["mlp"])
        assert (
            f"attention dropped in {len(attention)} layers: {', '.join(map(str, attention))}"
            in (facts)
        )
        assert f"MLP in {len(mlp)}: {', '.join(map(str, mlp))}" in facts
        removed = sum(PARAMS_PER_ATTENTION if u % 2 == 0 else PARAMS_PER_MLP for u in pick)
        assert result["params_removed"] == removed
        share = 100 * removed / result["params_total"]
        assert f"({share:.1f}%)" in facts and f"−{removed / 1e6:.1f}M of 134.5M" in facts
        kv = result["kv_cache"]
        assert kv["attention_kept"] == 30 - len(attention)
        assert f"KV cache −{100 * kv['reduction']:.1f}%" in facts
        assert f"attention in {30 - len(attention)}/30 layers" in facts
        speed = result["speed"]
        assert "measured on cpu, 2 threads:" in facts
        assert f"prompt {speed['prompt_speedup']:.2f}x" in facts
        assert f"generation {speed['generate_speedup']:.2f}x" in facts
        assert f"{speed['base']['generate_tokens_per_s']:.1f}→" in facts
        # The table: genomes as sub-blocks, kept sub-blocks, % params from the per-unit counts.
        table = screen.query_one("#hall-of-fame", DataTable)
        first = [str(c) for c in table.get_row_at(0)]
        assert first[1] == describe(screen.rows[0].dropped, "sublayer")
        assert first[2] == str(60 - 6)
        assert table.ordered_columns[3].label.plain == "% params"
        row_removed = sum(
            PARAMS_PER_ATTENTION if u % 2 == 0 else PARAMS_PER_MLP for u in screen.rows[0].dropped
        )
        assert first[3] == f"{100 * row_removed / result['params_total']:.1f}"
        assert table.row_count >= 8 and table.size.height >= 9  # still 8 rows at 80x24
        line = str(screen.query_one("#pick-line", Static).render())
        assert line.startswith(f"pick: drop {describe(pick, 'sublayer')} — ")


async def test_results_say_speed_not_measured_and_older_runs_show_no_facts() -> None:
    store = fake_store()
    populate(store, measure_speed=False)
    async with results_screen(store) as (pilot, screen):
        facts = facts_of(screen)
        assert "speed not measured" in facts
        assert "params −14.2M of 134.5M (10.5%)" in facts  # 4 layers of 30
        assert "KV cache −13.3% (attention in 26/30 layers)" in facts
        assert "attention dropped" not in facts  # a layer run: the pick line names the layers
    # A result.json written before these keys existed: nothing made up.
    result = store.result()
    assert result is not None
    for name in ("kv_cache", "speed", "granularity", "dropped_split", "dropped_text"):
        result.pop(name)
    assert pick_facts(result).plain == "params −14.2M of 134.5M (10.5%)"
    result.pop("params_removed")
    assert pick_facts(result).plain == ""
    # A search still running has no pick yet: the line is folded away.
    running = fake_store()
    populate(running, finished=False)
    async with results_screen(running) as (pilot, screen):
        assert not screen.query_one("#pick-facts", Static).display


async def test_history_names_a_sublayer_runs_best_genome_by_sub_blocks() -> None:
    store = sublayer_store()
    populate(store, prune=6, protect=1)
    best = store.meta()["best_dropped"]
    app = GapruneApp(initial="history")
    async with opened(app, HistoryScreen, "history") as (pilot, screen):
        detail = str(screen.query_one("#run-detail", Static).render())
        assert f"best: drop {describe(best, 'sublayer')}" in detail


# ---- the Setup screen -----------------------------------------------------------------------------
async def test_setup_granularity_reaches_the_config_and_relabels_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "0")
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        drops = screen.query_one("#attention-drops", Input)
        label = screen.query_one(".label-prune", Label)
        error = screen.query_one("#form-error", Static)
        assert screen.config is not None and screen.config.granularity == "layer"
        assert not drops.display and str(label.render()) == "prune k"
        screen.query_one("#granularity", Select).value = "sublayer"
        await settle(pilot)
        assert drops.display and str(label.render()) == "sub-blocks"
        assert "sub-blocks" in str(screen.query_one("#prune", Input).tooltip)
        config = screen.build_config()
        assert (config.granularity, config.attention_drops) == ("sublayer", None)
        assert screen.config is not None and screen.config.granularity == "sublayer"
        assert "Ready" in str(error.render())
        # The cost line says what the sub-blocks can save: 4 sub-blocks of the embedded model's 30
        # layers (2 protected) remove 0 to 4 attention sub-blocks' share of the KV cache.
        cost = str(screen.query_one("#cost", Static).render())
        assert "drops 4 sub-blocks: KV cache −0% to −13% of 30 layers'" in cost
        drops.value = "3"
        await settle(pilot)
        assert screen.build_config().attention_drops == 3
        cost = str(screen.query_one("#cost", Static).render())
        assert "drops 4 sub-blocks (3 attention): KV cache −10% of 30 layers'" in cost
        # The config's own checks, one line each, as for any field.
        drops.value = "9"
        await settle(pilot)
        assert "--attention-drops 9 is more than the 4 sub-blocks" in str(error.render())
        assert screen.query_one("#start").disabled
        drops.value = ""
        screen.query_one("#protect", Input).value = "0"
        await settle(pilot)
        assert "--granularity sublayer needs --protect 1 or more" in str(error.render())
        screen.query_one("#protect", Input).value = "2"
        screen.query_one("#prune", Input).value = "56"  # 28 droppable layers: 56 sub-blocks
        await settle(pilot)
        assert "below the 56 droppable sub-blocks" in str(error.render())
        screen.query_one("#prune", Input).value = "4"
        drops.value = "3"
        # Back to whole layers: the sub-block settings are hidden and not read.
        screen.query_one("#granularity", Select).value = "layer"
        await settle(pilot)
        assert not drops.display and str(label.render()) == "prune k"
        config = screen.build_config()
        assert (config.granularity, config.attention_drops) == ("layer", None)
        assert "Ready" in str(error.render())


async def test_setup_refuses_sublayer_for_a_family_without_it(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 6}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        screen.query_one("#model", Input).value = str(folder)
        screen.query_one("#prune", Input).value = "2"
        screen.query_one("#granularity", Select).value = "sublayer"
        await settle(pilot)
        error = str(screen.query_one("#form-error", Static).render())
        assert "--granularity sublayer supports the llama, mistral, qwen2, qwen3 families" in error
        assert "not gpt2: use --granularity layer" in error
        assert screen.query_one("#start").disabled


async def test_results_scores_dialog_draws_the_genome_as_attention_and_mlp_rows() -> None:
    store = sublayer_store()
    populate(store, prune=6, protect=1)
    async with results_screen(store, size=(80, 24)) as (pilot, screen):
        screen.query_one("#hall-of-fame", DataTable).focus()
        await key(pilot, "enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, ScoresDialog)
        bitmap = dialog.query_one("#scores-bitmap", LayerBitmap)
        assert bitmap.granularity == "sublayer" and bitmap.n_layers == 30
        assert [r.dropped for r in bitmap.rows] == [screen.rows[0].dropped]
        text = bitmap.render_text(76).plain.splitlines()
        attn = next(line for line in text if " attn " in line)
        mlp = next(line for line in text if " mlp " in line)
        label = bitmap.label_width(76)
        width = bitmap.cell_width(76)
        for unit in range(2, 60):  # layer 0 is protected
            row = attn if unit % 2 == 0 else mlp
            cell = row[label + width * (unit // 2)]
            assert (cell == "·") == (unit in screen.rows[0].dropped), unit
