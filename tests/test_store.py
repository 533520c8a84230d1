"""The run store and the memo on real SQLite files, across connections as across processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gaprune_tui.core import paths
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import StoreError
from gaprune_tui.core.events import (
    EvaluationStarted,
    GenerationFinished,
    LogMessage,
    RunFailed,
    RunStarted,
    UnknownEvent,
    parse,
)
from gaprune_tui.core.store import (
    ControlAction,
    Evaluation,
    Generation,
    Memo,
    RunState,
    RunStore,
    can_resume,
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
    assert events[0].seq == seq and events[0] == LogMessage(message="hello")
    assert events[1].payload["fitness"] == 0.25 and events[1].fitness == 0.25
    assert reader.events(after=events[-1].seq) == []
    assert reader.evaluations()[0].scores == {"t": {"acc": 0.5}}
    assert (writer.path / "config.toml").is_file()
    assert reader.db_path.read_bytes()[:16] == b"SQLite format 3\x00"
    mode = reader._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_best_evaluations_rank_distinct_full_fidelity_genomes() -> None:
    s = RunStore.create(RunConfig(fitness="squared_mean"))
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
    assert [r.action for r in s.pending_requests()] == [ControlAction.PAUSE, ControlAction.STOP]
    s.mark_handled(rid)
    assert [r.action for r in s.pending_requests()] == ["stop"]
    s.request(ControlAction.UNPAUSE)  # stored as "resume", the text engines have always read
    assert s._conn.execute("SELECT action FROM control ORDER BY id DESC").fetchone()[0] == "resume"
    with pytest.raises(StoreError, match="unknown control action"):
        s.request("explode")


def test_display_state_sees_a_dead_engine_as_crashed() -> None:
    s = RunStore.create(RunConfig())
    s.set_state(RunState.RUNNING)
    s.set_meta(pid=os.getpid())
    assert s.display_state() == "running" and s.alive()
    s.set_meta(pid=2**22 + 12345)  # no such process
    assert s.display_state() == "crashed" and not s.alive()


@pytest.mark.parametrize(
    ("stored", "pid", "shown", "resumable"),
    [
        ("created", None, "created", False),  # the engine is being spawned
        ("created", "live", "created", False),
        ("created", "dead", "crashed", True),  # died before it loaded: resumable like any crash
        ("running", "live", "running", False),
        ("paused", "dead", "crashed", True),
        ("stopped", "dead", "stopped", True),
        ("failed", "dead", "failed", True),
        ("finished", "dead", "finished", False),
    ],
)
def test_one_rule_says_whether_a_run_can_resume(
    stored: str, pid: str | None, shown: str, resumable: bool
) -> None:
    s = RunStore.create(RunConfig())
    s.set_state(RunState(stored))
    if pid is not None:
        s.set_meta(pid=os.getpid() if pid == "live" else 2**22 + 12345)
    summary = s.summary()
    assert summary.state == shown and isinstance(summary.state, RunState)
    assert summary.can_resume is resumable
    assert can_resume(summary.state, summary.alive) is resumable


def test_run_state_predicates_and_stored_text() -> None:
    assert [s.value for s in RunState] == [
        "created",
        "running",
        "paused",
        "stopped",
        "finished",
        "failed",
        "invalid",
        "crashed",
        "damaged",
    ]
    assert {s for s in RunState if s.active} == {"created", "running", "paused"}
    assert {s for s in RunState if s.resumable} == {"stopped", "failed", "crashed"}
    deletable = {"finished", "stopped", "failed", "crashed", "damaged"}
    assert {s for s in RunState if s.deletable} == deletable
    assert {s for s in RunState if s.has_result} == {"finished", "stopped"}
    s = RunStore.create(RunConfig())
    s.set_state(RunState.PAUSED)
    raw = s._conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0]
    assert raw == '"paused"' and s.state is RunState.PAUSED


def test_typed_events_round_trip_through_the_store() -> None:
    s = RunStore.create(RunConfig())
    written = [
        RunStarted(model="m", n_layers=6, prune=2, tasks=["t"], max_evaluations=12),
        EvaluationStarted(generation=1, index=3, dropped=[2, 4], kept=[0, 1, 3, 5]),
        GenerationFinished(generation=1, min=0.1, mean=0.2, max=0.3, checkpoint=b"blob"),
        RunFailed(error="boom"),
    ]
    for event in written:
        s.add_event(event)
    read = s.events()
    assert read == written  # seq and ts are not compared; every payload field is
    assert [e.seq for e in read] == sorted(e.seq for e in read) and read[0].ts > 0
    assert "checkpoint" not in read[2].payload and read[2].checkpoint == b""
    with pytest.raises(TypeError):
        s.add_event(RunFailed(error="x"), error="y")


def test_old_and_future_payloads_still_read() -> None:
    """A run.db written before the event classes (``gen``), and events from a newer version."""
    s = RunStore.create(RunConfig())
    with s.transaction() as conn:
        conn.executemany(
            "INSERT INTO events (ts, kind, payload) VALUES (?, ?, ?)",
            [
                (1.0, "generation_finished", '{"gen": 3, "max": 0.5, "population": [[1, 2]]}'),
                (2.0, "run_started", '{"model": "m", "n_layers": 8, "new_field": "x"}'),
                (3.0, "telemetry", '{"watts": 300}'),
            ],
        )
    gen, started, unknown = s.events()
    assert isinstance(gen, GenerationFinished) and gen.generation == 3 and gen.max == 0.5
    assert gen.population == [[1, 2]] and gen.mean == 0.0  # missing fields take defaults
    assert isinstance(started, RunStarted) and started.n_layers == 8
    assert started.extra == {"new_field": "x"} and started.to_payload()["new_field"] == "x"
    assert isinstance(unknown, UnknownEvent) and unknown.kind == "telemetry"
    assert unknown.payload == {"watts": 300} and unknown.seq == 3
    assert parse("log", {"message": "hi"}) == LogMessage(message="hi")


def test_list_and_resolve_runs_and_unknown_runs() -> None:
    a = RunStore.create(RunConfig(), run_id="20260101-000000-aaaa")
    RunStore.create(RunConfig(), run_id="20260102-000000-bbbb")
    invalid = RunStore.create(RunConfig(), run_id="20260103-000000-cccc")
    invalid.set_state(RunState.INVALID)
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
