"""A run folder whose files cannot be read is shown as damaged, never as a traceback (issue 20).

Each kind of damage (a run.db that is not a database, one cut short, an empty result.json, a
missing config.toml) is made to a real finished run (the fake engine writes it into a real
store), and every command and screen that touches runs is pointed at it: ``runs`` lists it as
damaged with the one line of what is wrong and what can be done, ``show``, ``attach``, ``export``
and ``resume`` refuse with that line (exit 2), the History screen shows it, and deleting it keeps
its exports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_engine import fake_store, populate
from textual.widgets import DataTable, Static
from tui_wait import key, opened

from gaprune_tui.cli.main import main
from gaprune_tui.core.store import RunState, RunStore, list_runs
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.history import HistoryScreen

pytestmark = pytest.mark.usefixtures("cpu_only")


def garbage_db(run: Path) -> None:
    (run / "run.db").write_bytes(b"this is not a database, just text\n" * 200)


def truncated_db(run: Path) -> None:
    """The first page of a real run.db (SQLite's header and schema), the rest cut off."""
    db = run / "run.db"
    db.write_bytes(db.read_bytes()[:4096])


def empty_result(run: Path) -> None:
    (run / "result.json").write_text("", encoding="utf-8")


def missing_config(run: Path) -> None:
    (run / "config.toml").unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage run.db": (garbage_db, "run.db is not a readable database (file is not a database)"),
    "truncated run.db": (truncated_db, "run.db is not a readable database"),
    "empty result.json": (empty_result, "result.json cannot be read"),
    "missing config.toml": (missing_config, "config.toml is missing"),
}


@pytest.fixture(params=list(DAMAGE))
def damaged(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A finished run with one kind of damage and an export folder: its path and the problem."""
    store = fake_store(run_id="20260101-000001-aaaa")
    populate(store)
    assert store.result() is not None
    store.close()
    run = store.path
    for name in ("run.db-wal", "run.db-shm"):  # the database is whole in run.db once closed
        assert not (run / name).exists()
    exported = run / "exports" / "rank1-drop-3-4"
    exported.mkdir(parents=True)
    (exported / "config.json").write_text("{}", encoding="utf-8")
    damage, problem = DAMAGE[request.param]
    damage(run)
    return run, problem


def one_error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``gaprune-tui ARGV`` in this process: exit 2 and one line on stderr, which it returns."""
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


def test_every_command_names_the_damage_in_one_line(
    damaged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run, problem = damaged
    (summary,) = list_runs()
    assert summary.state == RunState.DAMAGED and summary.error is not None
    assert problem in summary.error

    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and f"run {run.name} is damaged: {problem}" in out

    for argv in (["show"], ["attach"], ["export"], ["resume"], ["confirm"]):
        line = one_error_line(capsys, *argv, run.name)
        assert line.startswith(f"error: run {run.name} is damaged: {problem}"), (argv, line)
        assert "delete it (its exports stay) with `gaprune-tui delete" in line

    assert main(["delete", run.name]) == 0
    said = capsys.readouterr().out
    assert f"deleted run {run.name}; its exports stay in {run / 'exports'}" in said
    assert (run / "exports" / "rank1-drop-3-4" / "config.json").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["exports"]
    assert list_runs() == []
    assert main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_delete_refuses_a_running_run_and_removes_an_ended_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = fake_store(run_id="20260101-000002-bbbb")
    populate(running, finished=False)  # pid = this test process: alive
    line = one_error_line(capsys, "delete", running.id)
    assert line == f"error: run {running.id} is running: stop it before deleting it"
    finished = fake_store(run_id="20260101-000003-cccc")
    populate(finished)
    assert main(["delete", finished.id]) == 0
    assert not finished.path.exists()  # no exports: the whole folder goes


def test_store_open_and_list_runs_never_raise_sqlite_errors(damaged: tuple[Path, str]) -> None:
    run, problem = damaged
    with pytest.raises(Exception) as raised:
        RunStore.open(run)
    assert type(raised.value).__name__ == "DamagedRunError"
    assert problem in str(raised.value)
    assert [r.state for r in list_runs()] == [RunState.DAMAGED]


@pytest.mark.anyio
async def test_history_shows_the_damage_and_deletes_keeping_exports(
    damaged: tuple[Path, str],
) -> None:
    run, problem = damaged
    async with opened(GapruneApp(initial="history"), HistoryScreen, "history") as (pilot, screen):
        table = screen.query_one("#runs", DataTable)
        row: list[Any] = [str(c) for c in table.get_row_at(0)]
        assert row[0] == run.name and row[1] == "damaged"
        detail = str(screen.query_one("#run-detail", Static).render())
        assert problem.split(" (")[0] in detail and "delete it" in detail
        for action in ("o", "r"):
            await key(pilot, action)
            assert pilot.app.screen is screen
        notes = [n.message for n in pilot.app._notifications]
        assert sum(f"run {run.name} is damaged" in n for n in notes) == 2
        await key(pilot, "d")
        assert pilot.app.screen.id == "confirm"
        await key(pilot, "y")
        assert table.row_count == 0
        assert (run / "exports" / "rank1-drop-3-4" / "config.json").is_file()
        assert not (run / "run.db").exists()
