"""A Pareto run (``--objective pareto --prune-range MIN:MAX``) on the three screens, with Pilot.

Run: the front plot, the hypervolume sparkline and the front's members in the layer bitmap, live.
Results: the front as a table (one row per k, the knee marked), and ``e`` exporting the selected
member's genome. Setup: the objective choice, the range field and its one-line errors, and the cost
estimate at the range's mean k. The engine is tests/fake_engine.py's Pareto mode writing a real run
store (its fronts come from core/pareto, as the real engine's do); the real engine's Pareto run is
the lead's end-to-end test.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store, populate
from rich.console import Console
from test_pareto import brute_knee
from test_tui_setup import config_file
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Label, Select, Sparkline, Static
from tui_wait import opened, settle, until

from gaprune_tui.core import pareto
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.estimate import TimingSample, estimate_cost
from gaprune_tui.core.events import GenerationFinished
from gaprune_tui.core.follow import Follower
from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.results import ResultsScreen, default_export_command
from gaprune_tui.ui.screens.run import RunScreen
from gaprune_tui.ui.screens.setup import SetupScreen
from gaprune_tui.ui.widgets.dialogs import ScoresDialog
from gaprune_tui.ui.widgets.fitness_chart import FitnessChart
from gaprune_tui.ui.widgets.front_plot import (
    GLYPH_DOMINATED,
    GLYPH_EARLIER,
    GLYPH_FRONT,
    GLYPH_KNEE,
    FrontPlot,
)
from gaprune_tui.ui.widgets.layer_bitmap import LayerBitmap

pytestmark = pytest.mark.anyio

RANGE = [2, 6]


def pareto_store(**config: Any) -> RunStore:
    return fake_store(objective="pareto", prune_range=list(RANGE), population=10, **config)


def plain(renderable: object, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# ---- the fake engine's Pareto mode (what the screens below are fed) ------------------------------
def test_fake_pareto_run_writes_the_contract() -> None:
    store = pareto_store()
    populate(store, population=10, faithful=True)
    result = store.result()
    assert result["objective"] == "pareto" and result["prune_range"] == RANGE
    front = result["front"]
    assert [m["k"] for m in front] == [2, 3, 4, 5, 6]  # every k in the range, sorted
    assert all(len(m["dropped_layers"]) == m["k"] for m in front)
    assert all(min(m["dropped_layers"]) >= 2 for m in front)  # protect=2
    knee = [m for m in front if m["knee"]]
    assert len(knee) == 1 and knee[0]["k"] == result["knee_k"]
    assert result["dropped_layers"] == knee[0]["dropped_layers"]  # the knee is the pick
    for member in front:
        assert member["fitness_vs_base"] in ("within noise", "worse", "better")
        assert member["confirmed_stderr"] > 0 and member["holdout_stderr"] > 0
        assert member["params_removed"] == member["k"] * 3_540_096
    # The front is the per-k best of everything scored, flagged by core/pareto.
    scored = [(e.dropped, e.fitness) for e in store.evaluations()]
    expected = pareto.per_k_best(scored, "squared_mean", range(2, 7))
    assert [(m["dropped_layers"], m["dominated"]) for m in front] == [
        (p.dropped, p.dominated) for p in expected
    ]
    follower = Follower(store)
    follower.poll()
    view = follower.view
    assert view.pareto and view.started.prune_range == RANGE
    assert len(view.fronts) == len(view.hypervolumes) == 4  # generations 0..3
    assert view.hypervolumes == sorted(view.hypervolumes)  # cumulative: never shrinks
    assert view.hypervolumes[-1] > view.hypervolumes[0]


def test_fake_single_objective_result_has_no_front() -> None:
    store = fake_store()
    populate(store)
    result = store.result()
    assert "front" not in result and "knee_k" not in result


# ---- the front plot ---------------------------------------------------------------------------------
class PlotApp(App[None]):
    """The plot alone, in the app's default theme colours."""

    def compose(self) -> ComposeResult:
        yield FrontPlot(plot_height=6)


async def test_front_plot_marks_front_dominated_knee_and_earlier_fronts() -> None:
    earlier = [pareto.FrontPoint(2, [3, 4], 0.30), pareto.FrontPoint(4, [3, 4, 5, 6], 0.10)]
    latest = pareto.per_k_best(
        [([3, 4], 0.40), ([3, 4, 9], 0.20), ([3, 4, 5, 9], 0.20), ([3, 4, 5, 6, 9], 0.12)],
        "squared_mean",
    )
    assert [p.dominated for p in latest] == [False, True, False, False]
    app = PlotApp()
    async with app.run_test(size=(80, 12)) as pilot:
        await pilot.pause()
        plot = app.query_one(FrontPlot)
        check_plot(plot, earlier, latest)


def check_plot(
    plot: FrontPlot, earlier: list[pareto.FrontPoint], latest: list[pareto.FrontPoint]
) -> None:
    plot.set_fronts([earlier, latest], [2, 7], "squared_mean", knee_k=4)
    lines = plain(plot.render_text(100), 100).splitlines()
    assert "mean of squared task scores (higher is better)" in lines[0]
    # Narrower, the key keeps its one line and the kind its short label.
    assert plain(plot.render_text(80), 80).splitlines()[0].startswith("fitness  ● front")
    body = lines[1:7]
    # Better is up: k=2's 0.40 on the top row, k=5's 0.12 near the bottom, the earlier k=4
    # (0.10) on the bottom row.
    assert body[0].lstrip().startswith("0.4000┤") and GLYPH_FRONT in body[0]
    assert body[-1].lstrip().startswith("0.1000┤") and GLYPH_EARLIER in body[-1]
    assert sum(line.count(GLYPH_KNEE) for line in body) == 1
    assert sum(line.count(GLYPH_DOMINATED) for line in body) == 1
    assert sum(line.count(GLYPH_FRONT) for line in body) == 2  # k=2 and k=5
    # The whole range on the axis, k=6 and k=7 too (not reached yet).
    assert lines[-1].split()[:6] == ["2", "3", "4", "5", "6", "7"]
    assert "layers dropped" in lines[-1]
    # KL: lower is better, drawn upside down (the smallest KL on the top row).
    plot.set_fronts(
        [[pareto.FrontPoint(2, [3, 4], 0.05), pareto.FrontPoint(3, [3, 4, 5], 0.30)]], [2, 3], "kl"
    )
    lines = plain(plot.render_text(100), 100).splitlines()
    assert "lower is better" in lines[0]
    assert lines[1].lstrip().startswith("0.0500┤")


# ---- Run screen --------------------------------------------------------------------------------------
async def test_run_screen_follows_the_front_live() -> None:
    store = pareto_store()
    engine = FakeEngine(store, population=10, faithful=True)  # scores with standard errors
    engine.run(4)  # started, base scores, the baselines
    app = GapruneApp(initial="run", run=str(store.path))
    async with opened(app, RunScreen, "run") as (pilot, screen):
        plot = screen.query_one("#front-plot", FrontPlot)
        assert plot.display and plot.fronts == [[]]
        assert str(screen.query_one("#fitness-label", Label).render()) == "hypervolume"
        engine.run()
        await until(
            pilot, lambda: len(screen.view.fronts) == 4, "the four generations' fronts to arrive"
        )
        await pilot.pause()
        view = screen.view
        sparkline = screen.query_one("#best-fitness", Sparkline)
        assert list(sparkline.data or []) == view.hypervolumes
        front = view.front
        assert [p.k for p in front] == [2, 3, 4, 5, 6]
        # The plot: every generation's front, the latest last, over the run's whole range.
        assert len(plot.fronts) == 4 and plot.ks == [2, 3, 4, 5, 6]
        assert plot.knee_k == view.result["knee_k"]
        # The bitmap shows the front's members, one row per k, the knee highlighted.
        bitmap = screen.query_one(LayerBitmap)
        assert [r.dropped for r in bitmap.rows] == [p.dropped for p in front]
        assert [r.best for r in bitmap.rows] == [p.k == plot.knee_k for p in front]
        assert bitmap.rows[0].marker is not None and "k=2" in bitmap.rows[0].marker
        assert "★ knee" in plain(bitmap.render_text(100))
        summary = str(screen.query_one("#best-summary", Static).render())
        assert f"knee k={plot.knee_k}" in summary and "±" in summary
        assert "front: 5 of k 2–6" in summary
        # enter on a front row shows that member's scores.
        bitmap.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ScoresDialog)
        assert app.screen.dropped == front[1].dropped


async def test_single_objective_run_has_no_front_plot() -> None:
    store = fake_store()
    populate(store, finished=False)
    app = GapruneApp(initial="run", run=str(store.path))
    async with opened(app, RunScreen, "run") as (_, screen):
        assert not screen.query_one("#front-plot", FrontPlot).display
        assert "best" in str(screen.query_one("#fitness-label", Label).render())
        assert screen.query_one(LayerBitmap).rows[0].marker is None


# ---- Results screen ----------------------------------------------------------------------------------
EXPORT_STAND_IN = textwrap.dedent(
    """
    import json, sys
    out = sys.argv[1]
    args = sys.argv[2:]
    open(out, "w").write(json.dumps(args))
    print(json.dumps({"stage": "merge", "message": "passthrough"}), flush=True)
    print(json.dumps({"done": True, "path": "/exports/front", "verified": True}), flush=True)
    """
)


async def test_results_screen_shows_the_front_and_exports_the_selected_member(
    tmp_path: Path,
) -> None:
    store = pareto_store()
    populate(store, population=10, faithful=True)
    result = store.result()
    script = tmp_path / "export_stand_in.py"
    script.write_text(EXPORT_STAND_IN, encoding="utf-8")
    argv_file = tmp_path / "argv.json"

    def command(run: RunStore, rank: int, dropped: list[int]) -> list[str]:
        # The real command's arguments, recorded by a stand-in instead of run.
        real = default_export_command(run, rank, dropped)
        return [sys.executable, str(script), str(argv_file), *real[1:]]

    app = GapruneApp(initial="results", run=str(store.path))
    async with opened(app, ResultsScreen, "results") as (pilot, screen):
        screen.export_command = command
        assert screen.query_one("#front-plot", FrontPlot).display
        assert not screen.query_one(FitnessChart).display
        table = screen.query_one("#hall-of-fame", DataTable)
        headers = [str(c.label) for c in table.columns.values()]
        assert headers == [
            "k", "dropped", "% params", "fitness", "confirmed", "held-out", "vs base"
        ]  # fmt: skip
        assert table.row_count == len(result["front"]) == 5
        knee = result["knee_k"]
        for index, member in enumerate(result["front"]):
            cells = [str(c) for c in table.get_row_at(index)]
            k_cell = str(member["k"]) + (" ◆" if member["knee"] else "")
            if member["dominated"] and not member["knee"]:
                k_cell += " ○"
            assert cells[0] == k_cell
            assert cells[1] == "[" + ",".join(map(str, member["dropped_layers"])) + "]"
            assert float(cells[2]) == pytest.approx(
                100 * member["params_removed"] / result["params_total"], abs=0.05
            )
            assert " ± " in cells[3] and " ± " in cells[4] and " ± " in cells[5]
            assert cells[6] == member["holdout_vs_base"]  # judged on held-out tasks first
            assert "gain" not in " ".join(cells)
        base_text = str(screen.query_one("#base-scores", Static).render())
        assert "one row per k" in base_text
        # Select the k=4 row and export it: the member with 4 dropped layers is what goes.
        table.focus()
        await pilot.press("down", "down")
        row = screen.selected_row
        assert row is not None and row.k == 4 and row.knee == (knee == 4)
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.export_error is None and screen.export_result is not None
        args = json.loads(argv_file.read_text())
        member = next(m for m in result["front"] if m["k"] == 4)
        assert args[:3] == ["-m", "gaprune_tui", "export"]
        assert args[args.index("--drop") + 1] == ",".join(map(str, member["dropped_layers"]))
        status = str(screen.query_one("#export-status", Static).render())
        assert "Exported to /exports/front" in status


async def test_results_screen_of_a_running_pareto_search_marks_the_live_knee() -> None:
    store = pareto_store()
    populate(store, population=10, finished=False)
    # The knee of the last generation's front, by the test's own brute-force rule.
    (last,) = [e for e in store.events() if isinstance(e, GenerationFinished)][-1:]
    expected = brute_knee([(p["k"], p["fitness"]) for p in last.front], higher_is_better=True)
    # A bend inside the front: a rule that picks either end (the largest k, or the smallest
    # when it finds no member above the chord) would mark another row.
    assert expected is not None and RANGE[0] < expected < RANGE[1]
    app = GapruneApp(initial="results", run=str(store.path))
    async with opened(app, ResultsScreen, "results") as (_, screen):
        rows = screen.rows
        assert [r.k for r in rows] == [2, 3, 4, 5, 6]
        assert [r.knee for r in rows] == [r.k == expected for r in rows]
        assert all(r.rank is not None for r in rows)  # every member can be exported


# ---- Setup screen -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("cpu_only")
async def test_setup_objective_switches_the_size_field_and_names_bad_ranges() -> None:
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        prune = screen.query_one("#prune", Input)
        prune_range = screen.query_one("#prune-range", Input)
        error = screen.query_one("#form-error", Static)
        assert prune.display and not prune_range.display
        assert screen.build_config().prune_range is None
        screen.query_one("#objective", Select).value = "pareto"
        await settle(pilot)
        assert prune_range.display and not prune.display
        assert "--objective pareto needs the sizes to cover" in str(error.render())
        assert error.has_class("error") and screen.query_one("#start").disabled
        prune_range.value = "2-6"
        await settle(pilot)
        assert str(error.render()) == (
            "Not ready: prune range '2-6' is not MIN:MAX: use --prune-range 2:8"
        )
        assert not prune_range.is_valid
        prune_range.value = "6:2"
        await settle(pilot)
        assert "prune_range must be MIN:MAX with 1 <= MIN < MAX" in str(error.render())
        prune_range.value = "2:40"  # the demo model has 30 layers, 2 protected
        await settle(pilot)
        assert "must stay below the 28 droppable layers" in str(error.render())
        prune_range.value = "2:6"
        await settle(pilot)
        assert "Ready" in str(error.render()) and not error.has_class("error")
        config = screen.build_config()
        assert (config.objective, config.prune_range, config.ks) == (
            "pareto",
            RANGE,
            [2, 3, 4, 5, 6],
        )
        # Back to a single k: the range is hidden and not read (it would be refused).
        screen.query_one("#objective", Select).value = "single"
        await settle(pilot)
        assert prune.display and not prune_range.display
        assert screen.build_config().prune_range is None
        assert "Ready" in str(error.render())


@pytest.mark.usefixtures("cpu_only")
async def test_setup_loads_a_pareto_config_into_the_form(tmp_path: Path) -> None:
    path = tmp_path / "pareto.toml"
    RunConfig(objective="pareto", prune_range=[3, 7], fitness="mean").validate().save(path)
    async with opened(GapruneApp(), SetupScreen, "setup", settled=True) as (pilot, screen):
        await config_file(pilot, screen, path, "f3")
        assert screen.query_one("#prune-range", Input).value == "3:7"
        assert screen.query_one("#prune-range", Input).display
        assert not screen.query_one("#prune", Input).display
        assert screen.build_config().prune_range == [3, 7]


def test_estimate_of_a_pareto_run_takes_the_range_mean_k() -> None:
    """Past evaluations kept 26 of 30 layers (k=4); a 2:12 run's mean k is 7, so a mean genome
    keeps 23: each measured second per item is scaled by 23/26."""
    tasks = frozenset({"hellaswag_offline"})
    samples = [TimingSample(tasks, 0.26, kept=26, n_layers=30)]
    single = RunConfig(
        population=8, generations=3, limit=20, fitness="mean", algorithm="ga"
    ).validate()
    est = estimate_cost(single, samples)
    assert est.seconds == pytest.approx(32 * 40 * 0.26)  # a single-k estimate is not scaled
    assert est.mean_k is None and "mean k" not in est.text()
    wide = replace(single, objective="pareto", prune_range=[2, 12]).validate()
    est = estimate_cost(wide, samples)
    assert est.mean_k == 7
    assert est.seconds == pytest.approx(32 * 40 * 0.23)
    assert "each at the range's mean k 7" in est.text()
    # Confirmation: one front member per k (11) plus the base model; a Pareto run's baselines
    # stand beside the front unconfirmed.
    assert est.confirm_genomes == 11 + 1
