"""The run store and the memo on real SQLite files, across connections as across processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gaprune_tui.core import paths
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import StoreError
from gaprune_tui.core.store import (
    Evaluation,
    Generation,
    Memo,
    RunStore,
    list_runs,
    resolve_run,
)


def test_create_open_and_events_across_connections() -> None:
    writer = RunStore.create(RunConfig(prune=3), run_id="20260101-000000-abcd")
    reader = RunStore.open("20260101-000000")
    assert reader.config().prune == 3
    seq = writer.add_event("log", message="hello")
    writer.add_evaluation(
        Evaluation(0, [3, 4], [0, 1, 2, 5], 0.25, {"t": {"acc": 0.5}}, 1.5, False)
    )
    events = reader.events()
    assert [e.kind for e in events] == ["log", "evaluation_finished"]
    assert events[0].seq == seq and events[1].payload["fitness"] == 0.25
    assert reader.events(after=events[-1].seq) == []
    assert reader.evaluations()[0].scores == {"t": {"acc": 0.5}}
    assert (writer.path / "config.toml").is_file()
    assert reader.db_path.read_bytes()[:16] == b"SQLite format 3\x00"
    mode = reader._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_best_evaluations_rank_distinct_full_fidelity_genomes() -> None:
    s = RunStore.create(RunConfig())
    for dropped, fit, fid in [
        ([2, 3], 0.3, "full"),
        ([4, 5], 0.5, "screen:5"),
        ([2, 3], 0.3, "full"),
        ([6, 7], 0.4, "full"),
    ]:
        s.add_evaluation(Evaluation(0, dropped, [], fit, {}, 0.0, False, fid))
    assert [e.dropped for e in s.best_evaluations()] == [[6, 7], [2, 3]]


def test_generations_checkpoints_and_control() -> None:
    s = RunStore.create(RunConfig())
    s.add_generation(Generation(0, 8, 0, 0.1, 0.2, 0.3, [5, 6], 0.3, 2.0, [[5, 6]]))
    assert s.generations()[0].best_dropped == [5, 6]
    assert s.last_checkpoint() is None
    s.save_checkpoint(0, b"zero")
    s.save_checkpoint(1, b"one")
    assert s.last_checkpoint() == (1, b"one")
    rid = s.request("pause")
    s.request("stop")
    assert [a for _, a in s.pending_requests()] == ["pause", "stop"]
    s.mark_handled(rid)
    assert [a for _, a in s.pending_requests()] == ["stop"]
    with pytest.raises(StoreError, match="unknown control action"):
        s.request("explode")


def test_display_state_sees_a_dead_engine_as_crashed() -> None:
    s = RunStore.create(RunConfig())
    s.set_state("running")
    s.set_meta(pid=os.getpid())
    assert s.display_state() == "running" and s.alive()
    s.set_meta(pid=2**22 + 12345)  # no such process
    assert s.display_state() == "crashed" and not s.alive()


def test_list_and_resolve_runs_and_unknown_runs() -> None:
    a = RunStore.create(RunConfig(), run_id="20260101-000000-aaaa")
    RunStore.create(RunConfig(), run_id="20260102-000000-bbbb")
    invalid = RunStore.create(RunConfig(), run_id="20260103-000000-cccc")
    invalid.set_state("invalid")
    assert [r.id for r in list_runs()] == ["20260102-000000-bbbb", "20260101-000000-aaaa"]
    assert resolve_run(str(a.path)) == a.path
    with pytest.raises(StoreError, match="ambiguous"):
        resolve_run("2026010")
    with pytest.raises(StoreError, match="no run 'nope'"):
        resolve_run("nope")


def test_unwritable_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GAPRUNE_HOME", str(blocker))
    with pytest.raises(StoreError, match="cannot create the run folder"):
        RunStore.create(RunConfig())


def test_memo_is_shared_and_keyed_by_context() -> None:
    m1, m2 = Memo(), Memo(paths.memo_path())
    m1.put("ctx", [0, 1, 3], {"t": {"acc": 0.5}}, 2.0)
    assert m2.get("ctx", [3, 1, 0]) == ({"t": {"acc": 0.5}}, 2.0)
    assert m2.get("other", [0, 1, 3]) is None
    assert m2.count() == 1 and m2.count("ctx") == 1
