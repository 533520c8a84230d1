"""The UI-side follower folds a real run store's events into a RunView (no app involved)."""

from __future__ import annotations

from dataclasses import replace

from fake_engine import FakeEngine, fake_store, populate, write_log

from gaprune_tui.core.events import EvaluationStarted, RunStarted
from gaprune_tui.core.follow import Follower, LogTail, last_error_lines
from gaprune_tui.core.store import ControlAction, Evaluation, RunState, RunStore


def following(*, finished: bool = False) -> tuple[RunStore, FakeEngine, Follower]:
    """A new fake run, its engine (``finished``: already run to its end) and a Follower of it."""
    store = fake_store()
    engine = populate(store) if finished else FakeEngine(store)
    return store, engine, Follower(store)


def test_finished_run_folds_into_view() -> None:
    store, engine, follower = following(finished=True)
    assert follower.poll() is True
    view = follower.view
    gens = store.generations()
    assert view.state == "finished"
    assert view.started.model == "demo"
    assert (view.started.n_layers, view.started.protect, view.started.prune) == (30, 2, 4)
    assert view.started.tasks == ["hellaswag_offline", "openbookqa_offline"]
    assert view.started.max_evaluations == 32
    assert [r.gen for r in view.rows] == [0, 1, 2, 3]
    assert [r.best_fitness for r in view.rows] == [g.best_fitness for g in gens]
    assert view.mean_history == [g.mean for g in gens]
    assert view.population == gens[-1].population
    best = store.best_evaluations(1)[0]
    assert view.best_dropped == best.dropped
    assert view.best_fitness == best.fitness
    assert view.evaluations_done == len(store.evaluations())
    assert view.search_fraction == 1.0
    assert view.base_scores == {
        "hellaswag_offline": {"acc_norm": 0.44},
        "openbookqa_offline": {"acc_norm": 0.36},
    }
    assert view.result is not None and view.result["dropped_layers"] == best.dropped
    # Opening an already finished run is not "finished while watching".
    assert view.finished_live is False
    assert view.scored_for(best.dropped).scores == engine.scores_of(best.dropped)
    assert view.evaluating is None
    # Nothing new: a second poll changes nothing.
    seq = view.last_seq
    assert follower.poll() is False
    assert view.last_seq == seq


def test_live_steps_update_generation_progress_and_evaluating() -> None:
    store, engine, follower = following()
    follower.poll()
    assert follower.view.rows == []
    engine.run(3)  # run_started, log, base_scores
    follower.poll()
    assert follower.view.state == "running"
    assert follower.view.started.population == 8
    engine.step()  # evaluation_started gen 0 #0
    follower.poll()
    current = follower.view.evaluating
    assert current is not None and current.generation == 0 and current.index == 0
    assert len(current.dropped) == 4
    engine.step()  # evaluation_finished
    follower.poll()
    assert follower.view.evaluating is None
    assert follower.view.generation_done == 1
    assert follower.view.population == [current.dropped]
    assert follower.view.fitness_of(current.dropped) is not None
    # The rest of generation 0 in one burst: one poll applies all of it.
    engine.run(15)
    assert follower.poll() is True
    view = follower.view
    assert [r.gen for r in view.rows] == [0]
    assert view.generation == 1 and view.generation_done == 0
    assert len(view.population) == 8
    assert view.evaluations_done == 8
    assert view.search_fraction == 8 / 32
    engine.run()
    follower.poll()
    assert view.state == "finished"
    assert view.finished_live is True


def test_pause_resume_stop_are_reflected_from_the_engine() -> None:
    store, engine, follower = following()
    engine.run(5)
    store.request("pause")
    follower.poll()
    assert follower.view.state == "running"  # a request is not an answer
    engine.step()
    follower.poll()
    assert follower.view.state == "paused"
    store.request(ControlAction.UNPAUSE)
    engine.step()
    follower.poll()
    assert follower.view.state == "running"
    store.request("stop")
    engine.step()
    follower.poll()
    assert follower.view.state == "stopped"
    assert follower.view.active is False


def test_failed_and_crashed_runs_carry_their_error() -> None:
    store = fake_store()
    engine = FakeEngine(store)
    engine.run(6)
    engine.fail("CUDA out of memory")
    follower = Follower(store)
    follower.poll()
    assert follower.view.state == "failed"
    assert follower.view.error == "CUDA out of memory"

    crashed = fake_store()
    engine = FakeEngine(crashed)
    engine.run(6)
    engine.crash()
    follower = Follower(crashed)
    follower.poll()
    assert follower.view.state == "crashed"
    assert last_error_lines(crashed.log_path)[-1] == "Killed"


def test_log_tail_reads_only_new_complete_lines(tmp_path) -> None:
    path = tmp_path / "engine.log"
    tail = LogTail(path)
    assert tail.read() == []  # no file yet
    path.write_text("one\ntwo\nthr", encoding="utf-8")
    assert tail.read() == ["one", "two"]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("ee\nfour\n")
    assert tail.read() == ["three", "four"]
    assert tail.read() == []
    path.write_text("new\n", encoding="utf-8")  # truncated and rewritten
    assert tail.read() == ["new"]
    with open(path, "a", encoding="utf-8") as fh:  # a progress bar redrawn with \r, as tqdm does
        fh.write("  0%|   | 0/8\r100%|███| 8/8\r\nnext\r\n")
    assert tail.read() == ["100%|███| 8/8", "next"]


def test_log_tail_is_bounded_on_first_read() -> None:
    store = fake_store()
    lines = [f"line {i:05d}" for i in range(20000)]
    write_log(store, lines)
    tail = LogTail(store.log_path, first_bytes=1024)
    got = tail.read()
    assert got[-1] == "line 19999"
    assert 0 < len(got) < 100
    assert all(line.startswith("line ") and len(line) == 10 for line in got)


def test_screening_and_replayed_evaluations_count_once() -> None:
    """A screening pass promoted to a full evaluation is one genome of the budget, and a resumed
    engine replaying a generation from the memo does not count its genomes again."""
    store = fake_store()
    started = RunStarted(
        model="demo",
        n_layers=30,
        protect=2,
        prune=4,
        population=8,
        generations=3,
        tasks=["hellaswag_offline"],
        max_evaluations=32,
    )
    store.add_event(started)
    genome = [3, 7, 9, 20]
    kept = [i for i in range(30) if i not in genome]
    store.add_event(
        EvaluationStarted(generation=1, index=0, dropped=genome, kept=kept, fidelity="screen:5")
    )
    follower = Follower(store)
    follower.poll()
    assert follower.view.evaluating.fidelity == "screen:5"
    scores = {"hellaswag_offline": {"acc_norm": 0.4}}
    store.add_evaluation(Evaluation(1, genome, kept, 0.2, scores, 1.0, False, "screen:5"))
    follower.poll()
    assert follower.view.best_fitness is None  # screening scores never make the best
    assert follower.view.fitness_of(genome) == 0.2
    store.add_event(EvaluationStarted(generation=1, index=0, dropped=genome, kept=kept))
    store.add_evaluation(Evaluation(1, genome, kept, 0.16, scores, 4.0, False))
    follower.poll()
    assert follower.view.evaluations_done == 1
    assert follower.view.generation_done == 1
    assert follower.view.fitness_of(genome) == 0.16  # the full evaluation wins
    assert follower.view.best_fitness == 0.16
    store.add_event(replace(started, resumed=True))
    store.add_evaluation(Evaluation(1, genome, kept, 0.16, scores, 0.0, True))
    follower.poll()
    assert follower.view.evaluations_done == 1
    assert follower.view.state == "created"  # the store's state is the truth, not the events


def test_read_returns_the_events_it_folded_and_poll_reports_changes() -> None:
    """The CLI prints from ``read()``; the screens repaint on ``poll()``: one fold serves both."""
    store, engine, follower = following()
    assert follower.poll() is True  # the first poll always draws
    assert follower.poll() is False
    engine.run(4)
    events = follower.read()
    assert [e.kind for e in events][:2] == ["run_started", "log"]
    assert isinstance(events[0], RunStarted) and events[0].max_evaluations == 32
    assert follower.view.last_seq == events[-1].seq
    assert follower.view.state is RunState.RUNNING
    assert follower.read() == []
