"""Healing on the Results screen: ``h``, the live heal panel, healed rows, their export, resume.

One real run and one real heal of a tiny Llama, made once for the module through the CLI as a
user makes them (about 45 s each on 2 cores); every test works on its own copy of that run, in
its own GAPRUNE_HOME, because tests add events, requests and heals to it. Expected strings are
computed here from result.json's heal record, not with the screen's formatting code.

A second real heal is started in one test only (``h`` with the real engine, stopped at once:
the stop and the unfinished heal it leaves are what that test checks); the other tests that
press ``h`` or ``r`` record the launch instead, through ``launch.heal_run`` and
``launch.resume_run`` (looked up when called, so the screens' own code path is the one
exercised). The live panel is driven by appending the engine's own event classes to the real
store, so what it shows is deterministic.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, copy_run
from fake_engine import dead_pid
from rich.console import Console
from textual.widgets import DataTable, RichLog, Static
from tui_wait import key, opened, until

from gaprune_tui.core import launch
from gaprune_tui.core.events import (
    HealFinished,
    HealMeasured,
    HealStarted,
    HealStep,
    ReferenceScored,
    RunPaused,
)
from gaprune_tui.core.heal import (
    CPU_TOKENS,
    STATE_FILE,
    HealConfig,
    heals_dir,
    read_json,
    unfinished_heal,
    write_json,
    write_request,
)
from gaprune_tui.core.resume import ResumeChoice, resume_choice
from gaprune_tui.core.store import ControlAction, RunState, RunStore
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.history import HistoryScreen
from gaprune_tui.ui.screens.results import ResultsScreen, default_healed_export_command
from gaprune_tui.ui.widgets.dialogs import HealDialog
from gaprune_tui.ui.widgets.heal_panel import HealPanel

pytestmark = pytest.mark.anyio

SEARCH = [
    "--fitness",
    "kl",
    "--tasks",
    "hellaswag_offline",
    "--prune",
    "2",
    "--protect",
    "1",
    "--population",
    "4",
    "--generations",
    "1",
    "--finalists",
    "1",
    "--confirm-limit",
    "5",
    "--limit",
    "5",
    "--calibration-tokens",
    "256",
]
HEAL = ["--method", "partial", "--heal-tokens", "2048", "--heal-seq-len", "32", "--heal-batch", "4"]


@pytest.fixture(scope="module")
def healed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished KL run of a tiny Llama and one finished heal of its pick, both by the CLI."""
    from tiny_models import build_tiny

    home = tmp_path_factory.mktemp("heal-home")
    model = build_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")
    env = {"GAPRUNE_HOME": str(home)}
    proc = cli("run", "--model", str(model), *SEARCH, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (home / "data" / "runs").iterdir()
    proc = cli("heal", run_dir.name, *HEAL, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.fixture
def run(healed_run: Path, gaprune_home: Path) -> RunStore:
    """This test's copy of the healed run, in its GAPRUNE_HOME (History lists it)."""
    dest = gaprune_home / "data" / "runs" / healed_run.name
    copy_run(healed_run, dest)
    return RunStore(dest)


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Engine starts, recorded instead of spawned: ("heal", id) or ("search", None). The
    stand-in process is still loading (``poll()`` is None), as a real one is at first."""
    calls: list[tuple[str, str | None]] = []

    class Loading:
        def poll(self) -> int | None:
            return None

    def heal_run(store: RunStore, heal_id: str) -> Loading:
        calls.append(("heal", heal_id))
        return Loading()

    def resume_run(store: RunStore) -> Loading:
        calls.append(("search", None))
        return Loading()

    monkeypatch.setattr(launch, "heal_run", heal_run)
    monkeypatch.setattr(launch, "resume_run", resume_run)
    return calls


def record_of(store: RunStore) -> dict[str, Any]:
    result = json.loads((store.path / "result.json").read_text())
    (record,) = result["heals"]
    return record


def pm(value: float, se: float) -> str:
    """value ± se with enough decimals for two significant digits of se (at least 4)."""
    digits = max(4, 1 - math.floor(math.log10(se)))
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def results_screen(
    store: RunStore, **run_test: Any
) -> AbstractAsyncContextManager[tuple[Any, ResultsScreen]]:
    app = GapruneApp(initial="results", run=str(store.path))
    return opened(app, ResultsScreen, "results", **run_test)


def table_rows(screen: ResultsScreen) -> list[list[str]]:
    table = screen.query_one("#hall-of-fame", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def genome_text(dropped: list[int]) -> str:
    return "[" + ",".join(map(str, dropped)) + "]"


def heal_requests(store: RunStore) -> set[str]:
    folder = heals_dir(store)
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def move_to(pilot: Any, screen: ResultsScreen, row: int) -> None:
    table = screen.query_one("#hall-of-fame", DataTable)
    table.focus()
    table.move_cursor(row=row)
    await pilot.pause()


def text_of(renderable: Any) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def panel_text(screen: ResultsScreen) -> str:
    return str(screen.query_one(HealPanel).render())


def status(screen: ResultsScreen) -> str:
    return str(screen.query_one("#export-status", Static).render())


# ---- healed rows ------------------------------------------------------------------------------
async def test_healed_row_shows_the_records_numbers_under_its_genome(run: RunStore) -> None:
    record = record_of(run)
    after, v = record["after"], record["verdicts"]
    async with results_screen(run) as (pilot, screen):
        rows = table_rows(screen)
        label = f"healed: {record['method']}/{record['objective']} {record['tokens']:,} tok"
        assert label == "healed: partial/kd 2,048 tok"
        (index,) = [i for i, r in enumerate(rows) if r[1] == label]
        healed, genome = rows[index], rows[index - 1]
        # Directly under its genome's row (the same kept count and parameter share).
        assert genome[1] == genome_text(record["dropped"])
        assert healed[0] == "└" and healed[2:4] == genome[2:4]
        # After healing: KL (the run's fitness column), confirmed and held-out, each ± SE.
        assert healed[4] == pm(after["kl"], after["kl_stderr"])
        assert healed[5] == pm(after["confirmed"], after["confirmed_stderr"])
        assert healed[6] == pm(after["holdout"], after["holdout_stderr"])
        # The verdicts against before healing, as the engine decided them.
        expected = f"KL {v['kl']['outcome']} · held-out {v['holdout']['outcome']}"
        assert healed[7] == expected
        # This heal lowered KL beyond noise; on 5 held-out items nothing moves beyond noise.
        assert expected == "KL better · held-out within noise"
        assert "healed" in str(screen.query_one("#base-scores", Static).render())
        # enter: what was trained, and before against after.
        await move_to(pilot, screen, index)
        await key(pilot, "enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, HealDialog)
        head = str(dialog.query_one("#heal-head", Static).render())
        assert f"heal {record['id']}" in head and "2,048 tokens (16 steps)" in head
        table = text_of(dialog.heal_table)
        before = record["before"]
        kl_line = next(line for line in table.splitlines() if line.startswith("KL to base"))
        assert pm(before["kl"], before["kl_stderr"]) in kl_line
        assert pm(after["kl"], after["kl_stderr"]) in kl_line
        assert kl_line.rstrip().endswith("better")
        await key(pilot, "escape")
        assert pilot.app.screen is screen


async def test_a_difference_within_noise_is_never_shown_as_a_gain(run: RunStore) -> None:
    """A heal whose KL and held-out score moved the right way, but within noise (the engine's
    verdict): the row says "within noise", nowhere "better"."""
    result = json.loads(run.result_path.read_text())
    record = dict(result["heals"][0])
    before = record["before"]
    record["id"] = "lora-ce-00000000"
    record["method"], record["objective"], record["tokens"] = "lora", "ce", 32768
    record["after"] = {
        **before,
        "kl": before["kl"] * 0.97,
        "holdout": before["holdout"] + 0.05,
        "confirmed": before["confirmed"] + 0.05,
    }
    noise = {"outcome": "within noise", "diff": -0.00001, "stderr": 0.00002}
    record["verdicts"] = {"kl": noise, "nll": noise, "confirmed": noise, "holdout": noise}
    result["heals"].append(record)
    run.write_result(result)
    async with results_screen(run) as (pilot, screen):
        rows = table_rows(screen)
        (row,) = [r for r in rows if r[1] == "healed: lora/ce 32,768 tok"]
        assert row[7] == "KL within noise · held-out within noise"
        assert "better" not in " ".join(row)
        # Both heals of the genome sit under it, in result.json's order.
        labels = [r[1] for r in rows]
        start = labels.index(genome_text(record["dropped"]))
        assert labels[start + 1 : start + 3] == [
            "healed: partial/kd 2,048 tok",
            "healed: lora/ce 32,768 tok",
        ]


async def test_e_on_a_healed_row_exports_the_healed_model(run: RunStore, tmp_path: Path) -> None:
    record = record_of(run)
    assert default_healed_export_command(run, record["id"]) == [
        sys.executable,
        "-m",
        "gaprune_tui",
        "export",
        str(run.path),
        "--healed",
        record["id"],
        "--progress-json",
    ]
    script = tmp_path / "stand_in.py"
    script.write_text(
        "import json, sys\n"
        "heal = sys.argv[sys.argv.index('--healed') + 1]\n"
        "print(json.dumps({'stage': 'heal', 'message': 'healed weights over the merge'}))\n"
        "print(json.dumps({'done': True, 'path': 'exports/' + heal, 'verified': True}))\n"
    )
    healed_calls: list[tuple[str, str]] = []
    plain_calls: list[list[int]] = []

    def healed(store: RunStore, heal_id: str) -> list[str]:
        healed_calls.append((store.id, heal_id))
        real = default_healed_export_command(store, heal_id)
        return [sys.executable, str(script), *real[3:]]

    def plain(store: RunStore, rank: int, dropped: list[int]) -> list[str]:
        plain_calls.append(dropped)
        return [sys.executable, str(script), "--healed", "none"]

    async with results_screen(run) as (pilot, screen):
        screen.healed_export_command = healed
        screen.export_command = plain
        rows = table_rows(screen)
        index = next(i for i, r in enumerate(rows) if r[0] == "└")
        await move_to(pilot, screen, index)
        await key(pilot, "e")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert healed_calls == [(run.id, record["id"])] and plain_calls == []
        assert screen.export_result is not None
        assert screen.export_result["path"] == f"exports/{record['id']}"
        log = [str(line.text) for line in screen.query_one("#export-log", RichLog).lines]
        assert log == ["heal: healed weights over the merge"]
        # The genome's own row still exports the pruned model (--drop).
        await move_to(pilot, screen, index - 1)
        await key(pilot, "e")
        await pilot.app.workers.wait_for_complete()
        assert plain_calls == [record["dropped"]] and len(healed_calls) == 1


async def test_the_real_export_cli_takes_the_healed_command(run: RunStore) -> None:
    """The default command line on the real `export --healed ID --progress-json`, for a healed
    row whose heal is not finished on disk: it is parsed (no argparse error) and refused before
    any model loads, and its error line reaches the screen."""
    result = json.loads(run.result_path.read_text())
    record = {**result["heals"][0], "id": "lora-ce-00000000", "method": "lora"}
    result["heals"].append(record)
    run.write_result(result)
    async with results_screen(run) as (pilot, screen):
        rows = table_rows(screen)
        (index,) = [i for i, r in enumerate(rows) if r[1].startswith("healed: lora/")]
        await move_to(pilot, screen, index)
        await key(pilot, "e")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.export_result is None
        assert "has no finished heal 'lora-ce-00000000'" in str(screen.export_error)
        assert "Export failed" in status(screen)


# ---- h ------------------------------------------------------------------------------------------
async def test_h_writes_a_request_for_exactly_the_selected_genome_and_starts_the_engine(
    run: RunStore, launches: list[tuple[str, str | None]]
) -> None:
    fixture_heals = heal_requests(run)
    async with results_screen(run) as (pilot, screen):
        rows = table_rows(screen)
        # The second genome row of the table (not the pick, not a healed row).
        index = [i for i, r in enumerate(rows) if r[0] != "└"][1]
        cells = rows[index]
        dropped = json.loads(cells[1])
        rank = int(cells[0].split()[0])
        await move_to(pilot, screen, index)
        await key(pilot, "h")
        (heal_id,) = heal_requests(run) - fixture_heals
        assert launches == [("heal", heal_id)]
        request = read_json(heals_dir(run) / heal_id / "request.json")
        assert request is not None
        assert request["dropped"] == dropped and request["rank"] == rank
        # The default heal for a CPU run, as the CLI makes it without flags.
        assert request["config"] == HealConfig(tokens=CPU_TOKENS).to_json()
        assert HealConfig.from_json(request["config"]).validate().steps == 32
        assert request["run_state"] == "finished"
        # The panel shows it at once, and the footer offers its controls.
        panel = panel_text(screen)
        assert screen.query_one(HealPanel).display
        assert f"heal rank {rank} · drop {genome_text(dropped)}" in panel
        assert "before measuring…" in panel
        assert "healing rank" in status(screen)
        assert screen.check_action("pause", ()) and screen.check_action("stop", ())
        # A second h while that engine loads is refused, with one line.
        await key(pilot, "h")
        assert len(launches) == 1 and heal_requests(run) - fixture_heals == {heal_id}
        assert status(screen).startswith("Cannot heal now: a heal is running")


async def test_h_is_refused_while_the_run_is_live_or_for_a_row_that_drops_nothing(
    run: RunStore, launches: list[tuple[str, str | None]]
) -> None:
    before = heal_requests(run)
    run.add_event(ReferenceScored(name="none k=0", dropped=[], fitness=0.0))
    async with results_screen(run) as (pilot, screen):
        rows = table_rows(screen)
        (empty,) = [i for i, r in enumerate(rows) if r[1] == "[]"]
        await move_to(pilot, screen, empty)
        await key(pilot, "h")
        assert "drops no layer: there is nothing to heal" in status(screen)
        assert "\n" not in status(screen)
        run.set_meta(pid=os.getpid())  # an engine (this process) works on the run
        run.set_state(RunState.RUNNING)
        await move_to(pilot, screen, 0)
        await key(pilot, "h")
        assert (
            status(screen) == "Cannot heal now: the run is running; heal once the engine has ended."
        )
    assert launches == [] and heal_requests(run) == before


# ---- the live panel --------------------------------------------------------------------------
async def test_live_panel_follows_the_heal_events_and_its_keys_steer_the_engine(
    run: RunStore,
) -> None:
    record = record_of(run)
    hid = "partial-kd-live0001"
    run.set_meta(healing=hid, pid=os.getpid())  # what the engine sets while it heals
    run.set_state(RunState.RUNNING)
    losses = [2.5, 2.25, 2.0, 1.75, 1.5]
    async with results_screen(run, size=(80, 24)) as (pilot, screen):
        panel = screen.query_one(HealPanel)
        assert not panel.display  # no heal event yet: the fixture's heal ended before
        run.add_event(HealMeasured(heal=hid, phase="before", numbers=record["before"]))
        run.add_event(
            HealStarted(
                heal=hid,
                dropped=record["dropped"],
                rank=1,
                method="partial",
                objective="kd",
                data="offline",
                tokens=2048,
                steps=16,
                trainable=38112,
            )
        )
        for step, loss in enumerate(losses, start=1):
            run.add_event(
                HealStep(
                    heal=hid, step=step, steps=16, loss=loss, lr=1e-4, tokens_per_s=4096, eta_s=120
                )
            )
        screen.poll()
        await pilot.pause()
        assert panel.display
        text = panel_text(screen)
        lines = text.splitlines()
        assert lines[0].startswith(f"heal rank 1 · drop {genome_text(record['dropped'])}")
        assert "partial/kd 2,048 tok · step 5/16" in lines[0] and lines[0].endswith("31%")
        assert "loss 1.5000 · lr 1.0e-04" in text and "4,096 tok/s · ETA 2 min" in text
        assert screen.heals.current is not None
        assert screen.heals.current.loss_series == losses
        # The chart: two rows of bars, one column per step so far (16 levels between the
        # bounds on its axis), the loss falling from 2.5 to 1.5.
        chart = [line.split("┤") for line in lines if "┤" in line]
        assert [label.strip() for label, _ in chart] == ["2.5000", "1.5000"]
        assert [bars[:5] for _, bars in chart] == ["█▄▁  ", "███▅▁"]
        assert chart[1][1][5:16] == " " * 11  # the 11 steps still to come
        before = record["before"]
        assert f"before KL {pm(before['kl'], before['kl_stderr'])}" in text
        assert f"held-out {pm(before['holdout'], before['holdout_stderr'])}" in text
        # Readable at 80x24: nothing cut off, and the table keeps rows above it.
        assert all(len(line) <= 78 and not line.endswith("…") for line in lines)
        assert panel.region.bottom <= 24 - 2
        assert screen.query_one("#hall-of-fame", DataTable).size.height >= 6
        assert "(healing)" in str(screen.query_one("#results-title", Static).render())
        # p / r / s as on the Run screen: requests the engine honours between steps.
        await key(pilot, "p")
        assert [r.action for r in run.pending_requests()] == [ControlAction.PAUSE]
        run.set_state(RunState.PAUSED)
        run.add_event(RunPaused())
        screen.poll()
        await pilot.pause()
        assert "paused · r resumes" in panel_text(screen)
        await key(pilot, "r")
        assert run.pending_requests()[-1].action == ControlAction.UNPAUSE
        run.set_state(RunState.RUNNING)
        await key(pilot, "s")
        await key(pilot, "y")
        assert run.pending_requests()[-1].action == ControlAction.STOP
        # After healing: the numbers and the verdicts arrive, and the run is finished again.
        run.add_event(HealMeasured(heal=hid, phase="after", numbers=record["after"]))
        run.add_event(HealFinished(heal=hid, record={**record, "id": hid}))
        run.set_meta(healing=None)
        run.set_state(RunState.FINISHED)
        screen.poll()
        await pilot.pause()
        text = panel_text(screen)
        after = record["after"]
        assert f"after  KL {pm(after['kl'], after['kl_stderr'])}" in text
        assert "vs before: KL better · held-out within noise" in text
        assert "healed:" in text
        assert not screen.check_action("pause", ()) and not screen.check_action("stop", ())


async def test_a_resumed_heal_replaces_the_steps_after_its_checkpoint(run: RunStore) -> None:
    hid = "partial-kd-resumed01"
    common = dict(heal=hid, dropped=[1, 2], method="partial", objective="kd", steps=8)
    async with results_screen(run) as (pilot, screen):
        run.add_event(HealStarted(**common))
        for step in range(1, 6):
            run.add_event(HealStep(heal=hid, step=step, steps=8, loss=10.0 + step))
        run.add_event(HealFinished(heal=hid, state="stopped"))
        screen.poll()
        await pilot.pause()
        assert "heal stopped at step 5/8" in panel_text(screen)
        assert "r continues it" in panel_text(screen)
        # Resumed from the checkpoint at step 4: step 5 is trained (and reported) again.
        run.add_event(HealStarted(**common, from_step=4))
        run.add_event(HealStep(heal=hid, step=5, steps=8, loss=1.0))
        screen.poll()
        await pilot.pause()
        progress = screen.heals.heals[hid]
        assert progress.loss_series == [11.0, 12.0, 13.0, 14.0, 1.0]
        assert "step 5/8" in panel_text(screen)


# ---- resume -----------------------------------------------------------------------------------
async def test_a_killed_heal_opens_on_results_where_r_continues_it(
    run: RunStore, launches: list[tuple[str, str | None]]
) -> None:
    """kill -9 mid-heal: the run stays "running" with a dead pid. Attaching to it (the Run
    screen's way in) opens its Results screen, whose panel shows where the heal got to and that
    its engine is gone; r starts the engine on that heal."""
    hid = leave_unfinished(run, "running", [1, 2])
    run.add_event(HealStarted(heal=hid, dropped=[1, 2], rank=2, method="partial", steps=16))
    for step in (1, 2, 3):
        run.add_event(HealStep(heal=hid, step=step, steps=16, loss=3.0 - step / 10))
    run.set_meta(healing=hid, pid=dead_pid())
    run.set_state(RunState.RUNNING)
    app = GapruneApp(initial="run", run=str(run.path))
    async with opened(app, ResultsScreen, "results") as (pilot, screen):
        text = panel_text(screen)
        assert screen.query_one(HealPanel).display
        assert "heal rank 2 · drop [1,2]" in text and "step 3/16" in text
        assert "the engine is gone · r continues the heal from its last checkpoint" in text
        assert screen.check_action("resume", ()) and not screen.check_action("stop", ())
        await key(pilot, "r")
        assert launches == [("heal", hid)]
        assert f"continuing heal {hid}" in status(screen)


def leave_unfinished(store: RunStore, state: str, dropped: list[int]) -> str:
    """A heal as the engine leaves it when stopped (or, state "running", killed -9)."""
    hid = write_request(
        store, HealConfig(tokens=1024, seq_len=32, batch_size=4), dropped, 2, "finished"
    )
    write_json(heals_dir(store) / hid / STATE_FILE, {"state": state, "updated": 1e10})
    return hid


def test_resume_choice_is_the_unfinished_heal_before_the_search(run: RunStore) -> None:
    assert resume_choice(run) is None  # finished, and its one heal finished
    run.set_state(RunState.STOPPED)
    assert resume_choice(run) == ResumeChoice("search")
    hid = leave_unfinished(run, "stopped", [1, 2])
    assert unfinished_heal(run) == hid
    assert resume_choice(run) == ResumeChoice("heal", hid)
    run.set_meta(pid=os.getpid())
    run.set_state(RunState.RUNNING)
    assert resume_choice(run) is None  # an engine is alive: nothing to resume


@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_history_r_continues_the_unfinished_heal_not_the_search(
    run: RunStore, launches: list[tuple[str, str | None]], how: str
) -> None:
    if how == "stopped":  # the run is finished again; its heal was stopped
        hid = leave_unfinished(run, "stopped", [1, 2])
    else:  # kill -9 mid-heal: the run stays "running" with a dead pid, and so does the heal
        hid = leave_unfinished(run, "running", [1, 2])
        run.set_meta(healing=hid, pid=dead_pid())
        run.set_state(RunState.RUNNING)
    app = GapruneApp(initial="history")
    async with opened(app, HistoryScreen, "history") as (pilot, screen):
        detail = str(screen.query_one("#run-detail", Static).render())
        assert f"r continues its unfinished heal {hid}" in detail
        await key(pilot, "r")
        assert launches == [("heal", hid)]
        # The heal is followed where it shows: the Results screen.
        await until(pilot, lambda: pilot.app.screen.id == "results", "the Results screen")


async def test_results_r_continues_the_unfinished_heal(
    run: RunStore, launches: list[tuple[str, str | None]]
) -> None:
    hid = leave_unfinished(run, "stopped", [1, 2])
    async with results_screen(run) as (pilot, screen):
        assert screen.check_action("resume", ())
        await key(pilot, "r")
        assert launches == [("heal", hid)]
        assert f"continuing heal {hid}" in status(screen)
    # No unfinished heal: a stopped search resumes on the Run screen.
    write_json(heals_dir(run) / hid / STATE_FILE, {"state": "finished", "updated": 1e10})
    run.set_state(RunState.STOPPED)
    launches.clear()
    async with results_screen(run) as (pilot, screen):
        await key(pilot, "r")
        assert launches == [("search", None)]
        assert pilot.app.screen.id == "run"


# ---- the real engine ---------------------------------------------------------------------------
async def test_h_starts_the_real_engine_and_s_leaves_a_heal_that_resume_continues(
    run: RunStore,
) -> None:
    """h with the real launcher: the engine takes the screen's request (its heal goes live, the
    footer offers p and s); s asks it to stop, and it stops, leaving the heal unfinished, which
    is then what resume continues."""
    fixture_heals = heal_requests(run)
    async with results_screen(run) as (pilot, screen):
        await move_to(pilot, screen, 0)
        await key(pilot, "h")
        (hid,) = heal_requests(run) - fixture_heals
        await until(pilot, lambda: run.meta().get("healing") == hid, "the engine", timeout=120)
        await until(pilot, lambda: screen.check_action("stop", ()), "the heal's keys")
        await key(pilot, "s")
        await key(pilot, "y")
        progress = screen.heals.heals[hid]
        await until(pilot, lambda: progress.ended, "the heal to stop", timeout=180)
        assert progress.state == "stopped", progress.error
        assert screen.heal_proc is not None
        await until(pilot, lambda: screen.heal_proc.poll() is not None, "the engine to exit")
        screen.poll()
        await pilot.pause()
        assert "heal stopped" in panel_text(screen) and "r continues it" in panel_text(screen)
        assert screen.check_action("resume", ())
    assert run.state == RunState.FINISHED  # the run's own state is back
    assert read_json(heals_dir(run) / hid / STATE_FILE)["state"] == "stopped"  # type: ignore[index]
    assert resume_choice(run) == ResumeChoice("heal", hid)
