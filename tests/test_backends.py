"""Several workers score a generation (issue 12): the same answer as in-process, one writer.

The fast tests drive the search with a backend whose "workers" finish in a shuffled order over a
deterministic objective: the events, fitnesses and checkpoints must be the in-process ones. The
slow tests run the real engine through the CLI on a tiny model: ``--workers 2`` (and Ray actors)
against the in-process backend, a worker killed mid-run, pause/stop, and kill -9 of the driver.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cli_run import cli, run_in_home
from test_cli import fresh_evaluations, kill_engine, pause_unpause_stop, start_detached_args
from tui_wait import wait_until

from gaprune_tui.core import events
from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.store import RunStore, pid_alive
from gaprune_tui.engine.backends import Backend, Dispatched, Done, Job, Scheduler
from gaprune_tui.engine.search import Outcome, Search, fitness_of

N = 16


# ---- the driver's half, with stand-in workers ------------------------------------------------
class MemoObjective:
    """An ``Evaluator`` stand-in: a pure objective behind a memo (lookup/record/__call__)."""

    kind = "squared_mean"

    def __init__(self) -> None:
        self.memo: dict[tuple[tuple[int, ...], int | None], dict[str, Any]] = {}
        self.planned: list[list[list[int]]] = []
        self.limits: list[int | None] = []  # the limit of each genome scored here, not sent out

    @staticmethod
    def scores(dropped: Sequence[int], limit: int | None = None) -> dict[str, Any]:
        # Coarse on purpose: many genomes tie, as task fitness does at a small limit; a
        # screening pass (``limit``) reads a little lower, as fewer items would.
        value = round(sum(dropped) / (len(dropped) * N), 1)
        return {"t": {"acc": value if limit is None else value * 0.9}}

    def plan(self, dropped_lists: list[list[int]]) -> None:
        self.planned.append(dropped_lists)

    def lookup(self, dropped: list[int], limit: int | None = None) -> Outcome | None:
        hit = self.memo.get((tuple(dropped), limit))
        fidelity = "full" if limit is None else f"screen:{limit}"
        return (
            None if hit is None else Outcome(hit, fitness_of(hit, self.kind), 0.0, True, fidelity)
        )

    def record(self, dropped: list[int], limit: int | None, scores: Any, seconds: float) -> Outcome:
        self.memo[(tuple(dropped), limit)] = scores
        fidelity = "full" if limit is None else f"screen:{limit}"
        return Outcome(scores, fitness_of(scores, self.kind), seconds, False, fidelity)

    def __call__(self, dropped: list[int], limit: int | None = None) -> Outcome:
        hit = self.lookup(dropped, limit)
        if hit is not None:
            return hit
        self.limits.append(limit)
        return self.record(dropped, limit, self.scores(dropped, limit), 0.0)


class ShuffledWorkers(Backend):
    """Two "workers" that take every job at once and finish them in a random order."""

    remote = True

    def __init__(self, config: RunConfig, seed: int) -> None:
        super().__init__(config)
        self.order = random.Random(seed)  # not the search's RNG: workers must not touch it
        self.dispatched = 0
        self.batches: list[list[Job]] = []  # the jobs of each run() call: one per generation

    def run(self, jobs: Sequence[Job]) -> Iterator[Dispatched | Done | events.RunEvent]:
        self.batches.append(list(jobs))
        for i, job in enumerate(jobs):
            self.dispatched += 1
            yield Dispatched(job, f"w{i % 2}")
        done = list(jobs)
        self.order.shuffle(done)
        for job in done:
            yield Done(job.key, MemoObjective.scores(job.dropped, job.limit), 0.0, "w0")
            yield events.LogMessage(message=f"job {job.key} done")


def cfg(**kw: Any) -> RunConfig:
    base = dict(prune=3, protect=2, population=8, generations=3, seed=7, fitness="squared_mean")
    base.update(kw)
    return RunConfig(**base).validate()


def search_events(config: RunConfig, evaluator: MemoObjective, backend: Any) -> list[Any]:
    search = Search(config, N, evaluator, backend=backend)
    out = []
    for e in search.run():
        e = vars(e).copy() if not isinstance(e, events.LogMessage) else None
        if e is not None:
            e.pop("checkpoint", None)
            e.pop("seconds", None)
            out.append(e)
    return out


def finished_of(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in evs if "from_memo" in e and "kept" in e and "fitness" in e]


@pytest.mark.parametrize("invalid", ["repair", "zero"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_workers_give_the_in_process_events(invalid: str, seed: int) -> None:
    config = cfg(invalid=invalid)
    expected = search_events(config, MemoObjective(), None)
    evaluator = MemoObjective()
    backend = ShuffledWorkers(config, seed)
    got = search_events(config, evaluator, backend)
    # Finished events, generation events and the summary: the same, in the same order.
    assert [e for e in got if "index" not in e] == [e for e in expected if "index" not in e]
    assert backend.dispatched > 0
    # The search planned each generation on the driver, as in-process.
    assert len(evaluator.planned) == config.generations + 1


def test_screening_stays_in_the_engine_with_workers() -> None:
    """``--screen`` with several workers: generation 0 (no parents to screen against) goes to
    the workers, every later generation, screening passes and full evaluations alike, is scored
    in the engine, with the in-process run's events."""
    config = cfg(screen=5, generations=3)
    expected = search_events(config, MemoObjective(), None)
    evaluator = MemoObjective()
    backend = ShuffledWorkers(config, 0)
    got = search_events(config, evaluator, backend)
    assert [e for e in got if "index" not in e] == [e for e in expected if "index" not in e]
    gen0 = [e for e in finished_of(got) if e["generation"] == 0 and not e["from_memo"]]
    assert len(backend.batches) == 1 and len(backend.batches[0]) == len(gen0) > 0
    assert all(job.limit is None for job in backend.batches[0])
    later = [e for e in finished_of(got) if e["generation"] > 0 and not e["from_memo"]]
    screened = [e for e in later if e["fidelity"] == "screen:5"]
    assert screened and len(screened) < len(later)  # some promising ones went on to full
    assert evaluator.limits == [5 if e["fidelity"] == "screen:5" else None for e in later]


def test_memo_hits_are_not_dispatched_and_keep_their_place() -> None:
    config = cfg()
    evaluator = MemoObjective()
    first = search_events(config, evaluator, ShuffledWorkers(config, 0))
    again = ShuffledWorkers(config, 1)
    second = search_events(config, evaluator, again)
    assert again.dispatched == 0  # everything came from the driver's memo
    assert [e["dropped"] for e in finished_of(second)] == [e["dropped"] for e in finished_of(first)]
    assert all(e["from_memo"] for e in finished_of(second))


def test_scheduler_keeps_neighbours_together_and_steals_half() -> None:
    jobs = [Job(i, [i], [i]) for i in range(10)]
    s = Scheduler(jobs, ["a", "b"])
    assert s.planned("a") == [[i] for i in range(5)] and s.planned("b") == [
        [i] for i in range(5, 10)
    ]
    taken_a = [s.next_for("a")[0].key for _ in range(5)]
    assert taken_a == [0, 1, 2, 3, 4]
    job, plan = s.next_for("a")  # a's segment is empty: it steals the back half of b's
    assert job.key == 7 and plan == [[7], [8], [9]]
    assert s.next_for("b")[0].key == 5
    s.requeue(Job(99, [1], [1]))
    assert s.next_for("b")[0].key == 99  # a dead worker's genome is handed out first
    s.drop_worker("b")
    assert s.next_for("a")[0].key == 6  # b's rest went to the queue
    assert [s.next_for("a")[0].key for _ in range(2)] == [8, 9]
    assert s.next_for("a") == (None, None) and s.left() == 0


def test_backend_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        RunConfig(workers=0).validate()
    with pytest.raises(ConfigError, match="devices must be all or a list like cuda:0,cuda:1"):
        RunConfig(devices="gpu0").validate()
    with pytest.raises(ConfigError, match="give one"):
        RunConfig(devices="all", workers=2).validate()
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:9"):
        RunConfig(ray="127.0.0.1:9").validate()
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        RunConfig(ray="somewhere").validate()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConfigError, match="--ray auto found no Ray cluster on this machine"):
        RunConfig(ray="auto").validate()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'--ray needs Ray: pip install "gaprune-tui\[ray\]"'):
        RunConfig(ray="local").validate()
    assert backend_label(RunConfig()) == "in-process"
    assert backend_label(RunConfig(workers=2)) == "2 local workers"
    assert backend_label(RunConfig(ray="local", workers=2)) == "ray local (2 actors)"
    assert RunConfig.from_dict(RunConfig(workers=3).to_dict()).workers == 3


def test_cli_rejects_a_ray_address_that_does_not_answer() -> None:
    proc = cli("run", "--model", "demo", "--ray", "127.0.0.1:9")
    assert proc.returncode == 2 and "no Ray cluster answers at 127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- the real engine, through the CLI ---------------------------------------------------------
SMALL = ["--prune", "3", "--protect", "1", "--population", "6", "--generations", "2"]
SMALL += ["--finalists", "0"]  # confirmation runs in the driver alike for every backend
TASK = ["--fitness", "squared_mean", "--tasks", "hellaswag_offline", "--limit", "8"]
# result.json keys that must not depend on the backend.
SAME_KEYS = ("dropped_layers", "fitness", "evaluations", "cache_hits", "hall_of_fame", "baselines")


def rows(store: RunStore) -> list[tuple[Any, ...]]:
    """The evaluation rows as the store ranks and shows them, in the order they were written."""
    return [
        (e.generation, e.dropped, e.fitness, e.from_memo, e.fidelity) for e in store.evaluations()
    ]


def assert_same_run(a: tuple[dict[str, Any], RunStore], b: tuple[dict[str, Any], RunStore]) -> None:
    for key in SAME_KEYS:
        assert a[0][key] == b[0][key], key
    assert rows(a[1]) == rows(b[1])
    assert [g.population for g in a[1].generations()] == [g.population for g in b[1].generations()]


Reference = tuple[dict[str, Any], RunStore]


@pytest.fixture(scope="module")
def in_process(tiny12: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Reference]:
    """The in-process run of ``SMALL`` plus the given flags on ``tiny12``: the reference a
    several-worker run must match, run once per module and flags."""
    done: dict[tuple[str, ...], Reference] = {}

    def run(*flags: str) -> Reference:
        if flags not in done:
            home = tmp_path_factory.mktemp("inproc")
            done[flags] = run_in_home(home, tiny12, *SMALL, *flags)
        return done[flags]

    return run


@pytest.fixture
def in_process_task(in_process: Callable[..., Reference]) -> Reference:
    return in_process(*TASK)


@pytest.fixture
def in_process_kl(in_process: Callable[..., Reference]) -> Reference:
    """The default fitness (KL): continuous values, so any drift between backends would show."""
    return in_process()


@pytest.mark.slow
def test_two_workers_kl_same_result_as_in_process(
    tiny12: Path, tmp_path: Path, in_process_kl: tuple[dict[str, Any], RunStore]
) -> None:
    two = run_in_home(tmp_path, tiny12, *SMALL, "--workers", "2")
    assert_same_run(in_process_kl, two)
    assert (
        in_process_kl[0]["backend"] == "in-process" and in_process_kl[0]["worker_evaluations"] == {}
    )
    assert two[0]["backend"] == "2 local workers"
    counts = two[0]["worker_evaluations"]
    assert set(counts) <= {"worker-1", "worker-2"}
    assert sum(counts.values()) == worker_scored(two[1]) > 0
    statuses = [e for e in two[1].events() if isinstance(e, events.WorkerStatus)]
    assert {e.state for e in statuses} >= {"idle", "busy"}
    shown = cli("show", two[1].id, env={"GAPRUNE_HOME": str(tmp_path)})
    assert "scored on 2 local workers (worker-" in shown.stdout, shown.stdout
    listing = cli("runs", env={"GAPRUNE_HOME": str(tmp_path), "COLUMNS": "200"})
    assert "2 local workers" in listing.stdout


def worker_scored(store: RunStore) -> int:
    """What the workers score: the search's fresh full-fidelity evaluations. The engine itself
    scores the baselines (rows of generation -1), greedy's steps and every screening pass."""
    return sum(
        1
        for e in store.evaluations()
        if e.generation >= 0 and e.fidelity == "full" and not e.from_memo
    )


def worker_pids(store: RunStore) -> dict[str, int]:
    return {e.name: e.pid for e in store.events() if isinstance(e, events.WorkerStatus) and e.pid}


def busy_worker(store: RunStore, gen: int) -> str | None:
    """A worker with a genome of generation ``gen`` (or later) in flight, if any."""
    evs = store.events()
    started = [e for e in evs if isinstance(e, events.EvaluationStarted)]
    if not started or started[-1].generation < gen:
        return None
    last = {e.name: e for e in evs if isinstance(e, events.WorkerStatus)}
    busy = sorted(name for name, e in last.items() if e.state == "busy" and e.pid)
    return busy[0] if busy else None


def still_holds(store: RunStore, name: str, mark: int) -> bool | None:
    """After ``name`` was frozen (the store's last event then: ``mark``): False once the driver
    read its answer, True once it provably never will (the driver read two answers of other
    workers after the freeze and then handed out another genome: the wait that read the second
    one began after the freeze, so an answer already on its way would have been read with it),
    None while it cannot tell yet."""
    after = [e for e in store.events() if isinstance(e, events.WorkerStatus) and e.seq > mark]
    if any(e.name == name for e in after):
        return False
    scored = [i for i, e in enumerate(after) if e.scored is not None]
    if len(scored) >= 2 and any(e.state == "busy" for e in after[scored[1] + 1 :]):
        return True
    return None


def kill_holding_worker(store: RunStore) -> tuple[str, list[int]]:
    """SIGKILL a worker (process or Ray actor) while it holds a genome; its name and that genome.

    A worker the store shows busy is frozen (SIGSTOP) first, as it may be answering just then;
    it is killed once ``still_holds`` proves its answer never reached the driver, else thawed
    and the next busy worker tried (also when the others run out of work meanwhile)."""
    for _ in range(10):
        wait_until(lambda: busy_worker(store, 0) is not None, "a busy worker")
        name = busy_worker(store, 0)
        assert name is not None
        pid = worker_pids(store)[name]
        os.kill(pid, signal.SIGSTOP)
        evs = store.events()
        mark = evs[-1].seq
        last = [e for e in evs if isinstance(e, events.WorkerStatus) and e.name == name][-1]
        verdict = None
        deadline = time.monotonic() + 30
        while last.state == "busy" and verdict is None and time.monotonic() < deadline:
            assert store.alive(), store.meta().get("error")
            time.sleep(0.05)
            verdict = still_holds(store, name, mark)
        if verdict:
            assert last.dropped is not None
            os.kill(pid, signal.SIGKILL)
            return name, last.dropped
        os.kill(pid, signal.SIGCONT)
    pytest.fail("no worker could be caught holding a genome")


def detached_run(model: Path, home: Path, *flags: str) -> RunStore:
    """Start a small task run with ``flags`` in its own GAPRUNE_HOME and return its store."""
    start = cli(
        "run",
        "--model",
        str(model),
        *SMALL,
        *TASK,
        *flags,
        "--detach",
        env={"GAPRUNE_HOME": str(home)},
    )
    assert start.returncode == 0, start.stderr
    (run_dir,) = (home / "data" / "runs").iterdir()
    return RunStore(run_dir)


def kill_one_mid_run(
    model: Path, tmp_path: Path, reference: tuple[dict[str, Any], RunStore], kind: str, *flags: str
) -> tuple[dict[str, Any], RunStore]:
    """A detached run with ``flags`` whose worker is killed while it holds a genome: the run
    finishes with ``reference``'s result and rows, says the genome went to another worker
    (``kind``: what the backend calls one), and that genome was scored once, by another worker.
    Returns result.json and the store."""
    store = detached_run(model, tmp_path / "home", *flags)
    killed, genome = kill_holding_worker(store)
    wait_until(lambda: not store.alive(), "the run to end")
    assert store.state == "finished", store.meta().get("error")
    result = json.loads(store.result_path.read_text())
    assert_same_run(reference, (result, store))
    logs = [e.message for e in store.events() if isinstance(e, events.LogMessage)]
    died = [m for m in logs if m.startswith(f"{killed} (cpu) died")]
    assert died and died[0].endswith(f": genome {genome} goes to another {kind}"), logs
    assert died[0] in store.log_path.read_text()
    statuses = [e for e in store.events() if isinstance(e, events.WorkerStatus)]
    assert [e.state for e in statuses if e.name == killed][-1] == "lost"
    # Re-queued and scored exactly once, by a worker that is still alive; one fresh row for it.
    scorers = [e.name for e in statuses if e.scored == genome]
    assert len(scorers) == 1 and scorers[0] != killed, scorers
    rows = [e for e in store.evaluations() if e.generation >= 0]  # not the baselines' rows
    fresh = [e for e in rows if e.dropped == genome and not e.from_memo]
    assert len(fresh) == 1
    # Every fresh genome was scored once: the workers' counts add up to the fresh evaluations.
    assert sum(result["worker_evaluations"].values()) == worker_scored(store)
    return result, store


@pytest.mark.slow
def test_worker_killed_holding_a_genome_loses_nothing(
    tiny12: Path, tmp_path: Path, in_process_task: tuple[dict[str, Any], RunStore]
) -> None:
    kill_one_mid_run(tiny12, tmp_path, in_process_task, "worker", "--workers", "2")


@pytest.mark.slow
def test_ray_actor_killed_holding_a_genome_loses_nothing(
    tiny12: Path, tmp_path: Path, in_process_task: tuple[dict[str, Any], RunStore]
) -> None:
    """``--ray local`` with 2 actors, one killed mid-genome: the in-process result and rows."""
    flags = ["--ray", "local", "--workers", "2"]
    result, _ = kill_one_mid_run(tiny12, tmp_path, in_process_task, "actor", *flags)
    assert result["backend"] == "ray local (2 actors)"


@pytest.mark.slow
def test_pause_and_stop_reach_every_worker(tiny12: Path) -> None:
    args = [*SMALL, *TASK, "--generations", "200", "--workers", "2"]
    run_id, store = start_detached_args(tiny12, args)
    wait_until(lambda: len(worker_pids(store)) == 2 and len(store.evaluations()) > 0, "2 workers")
    pause_unpause_stop(run_id, store, workers=True)
    pids = worker_pids(store).values()
    wait_until(lambda: not any(pid_alive(p) for p in pids), "every worker process to end", 30)


@pytest.mark.slow
def test_driver_killed_with_workers_busy_resumes_from_its_checkpoint(
    tiny12: Path, tmp_path: Path, in_process_task: tuple[dict[str, Any], RunStore]
) -> None:
    """kill -9 of the driver while its workers score generation 1 or later: the workers end,
    ``resume`` continues after the last checkpointed generation (not from generation 0, which
    a deterministic run would also bring to the same result) and reaches the in-process result."""
    home = tmp_path / "home"
    store = detached_run(tiny12, home, "--workers", "2")
    wait_until(lambda: busy_worker(store, 1) is not None, "a busy worker in generation 1")
    pids = list(worker_pids(store).values())
    kill_engine(store)
    checkpoint = store.last_checkpoint()
    assert checkpoint is not None
    g = checkpoint[0]
    assert g + 1 <= 2 and any(
        e.generation == g + 1 for e in store.events() if isinstance(e, events.EvaluationStarted)
    ), "the kill must land inside a generation"
    # Orphaned workers notice their driver is gone and end.
    wait_until(lambda: not any(pid_alive(p) for p in pids), "the orphaned workers to end", 30)
    first_session = len(store.events())
    resumed = cli("resume", store.id, "--json", env={"GAPRUNE_HOME": str(home)})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    for key in ("dropped_layers", "fitness", "hall_of_fame"):
        assert result[key] == in_process_task[0][key], key
    assert [g.population for g in store.generations()] == [
        g.population for g in in_process_task[1].generations()
    ]
    started = [e for e in store.events() if isinstance(e, events.RunStarted)]
    assert [e.resumed for e in started] == [False, True]
    assert f"resuming after generation {g}" in store.log_path.read_text()
    # The second session starts at generation g + 1: each generation closed once, and it
    # evaluated (fresh or from the memo) fewer genomes than a restart from generation 0 would.
    second = store.events()[first_session:]
    finished = [e for e in second if isinstance(e, events.EvaluationFinished)]
    assert min(e.generation for e in finished) == g + 1
    closed = [e.generation for e in store.events() if isinstance(e, events.GenerationFinished)]
    assert closed == [0, 1, 2]
    whole = [e for e in in_process_task[1].events() if isinstance(e, events.EvaluationFinished)]
    assert len(finished) < len(whole)
    # Fresh evaluations over both sessions: the uninterrupted run's, plus at most the two
    # genomes the workers held when the driver died.
    assert fresh_evaluations(store) <= fresh_evaluations(in_process_task[1]) + 2


# ---- the Run screen's worker table -------------------------------------------------------------
@pytest.mark.anyio
async def test_run_screen_shows_a_row_per_worker_only_with_several() -> None:
    from fake_engine import FakeEngine, fake_store
    from textual.widgets import DataTable

    from gaprune_tui.ui.app import GapruneApp
    from gaprune_tui.ui.screens.run import RunScreen
    from gaprune_tui.ui.widgets.worker_table import WorkerTable

    store = fake_store()
    FakeEngine(store).run(4)
    store.add_event(events.WorkerStatus(name="worker-1", device="cpu", state="idle"))
    app = GapruneApp(initial="run", run=str(store.path))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert not screen.query(WorkerTable)  # one worker: the screen is unchanged
        store.add_event(
            events.WorkerStatus(name="worker-2", device="cpu", state="busy", dropped=[3, 5, 7])
        )
        store.add_event(
            events.WorkerStatus(
                name="worker-1", device="cpu", state="idle", scored=[2, 4, 6], evaluations=1
            )
        )
        screen.poll()
        await pilot.pause()
        table = screen.query_one(WorkerTable)
        assert isinstance(table, DataTable) and table.row_count == 2
        assert table.get_row("worker-2")[:5] == ["worker-2", "cpu", "busy", "[3,5,7]", "0"]
        assert table.get_row("worker-1")[2:5] == ["idle", "-", "1"]
        assert set(screen.view.workers) == {"worker-1", "worker-2"}


def test_every_worker_gone_ends_the_generation_with_workers_gone() -> None:
    """Both worker processes killed before they loaded anything: each loss is reported (event
    and log line), the genome is not dropped silently, and the run ends with ``WorkersGone``
    (the engine marks it failed; ``resume`` continues it)."""
    from gaprune_tui.engine.backends import WorkersGone
    from gaprune_tui.engine.backends.local import LocalWorkers

    backend = LocalWorkers(RunConfig(fitness="squared_mean").validate(), ["cpu", "cpu"])
    try:
        for p in backend.workers:
            os.kill(p.process.pid, signal.SIGKILL)
        seen: list[Any] = []
        with pytest.raises(WorkersGone, match="every worker is gone"):
            for item in backend.run([Job(0, [3, 4], [0, 1, 2, 5])]):
                seen.append(item)
        lost = [e for e in seen if isinstance(e, events.WorkerStatus) and e.state == "lost"]
        assert sorted(e.name for e in lost) == ["worker-1", "worker-2"]
        logs = [e.message for e in seen if isinstance(e, events.LogMessage)]
        assert len(logs) == 2 and all("died (exit code -9)" in m for m in logs), logs
        assert not any(isinstance(e, Done) for e in seen)
    finally:
        backend.close()


@pytest.mark.slow
def test_two_workers_pareto_same_front_as_in_process(tiny12: Path, tmp_path: Path) -> None:
    """A Pareto run (NSGA-II, genomes of every size in the range) on two workers: the same
    evaluation rows, generations, front and knee as in-process."""
    pareto_run = [
        *("--objective", "pareto", "--prune-range", "2:4", "--protect", "1"),
        *("--population", "6", "--generations", "2", "--finalists", "0"),
    ]
    one = run_in_home(tmp_path / "one", tiny12, *pareto_run)
    two = run_in_home(tmp_path / "two", tiny12, *pareto_run, "--workers", "2")
    assert rows(one[1]) == rows(two[1])
    assert [g.population for g in one[1].generations()] == [
        g.population for g in two[1].generations()
    ]
    for key in ("front", "knee_k", "dropped_layers", "fitness", "evaluations"):
        assert one[0][key] == two[0][key], key
    assert two[0]["backend"] == "2 local workers"


@pytest.mark.slow
def test_two_workers_on_the_embedded_model_same_result(tmp_path: Path) -> None:
    """The embedded model (30 layers, the default KL fitness): two worker processes, each with
    half the cores, give the in-process run's genomes, fitnesses and result to the last bit.
    Greedy removal is left out of the baselines: the engine runs it (106 KL evaluations at
    k = 4, 85 s here) before the workers score anything, alike in both runs."""
    small = [
        *("--prune", "4", "--population", "4", "--generations", "1", "--finalists", "0"),
        *("--calibration-tokens", "256", "--seed", "5", "--offspring", "8"),
        *("--baselines", "shortgpt,angular,last_k"),
    ]
    one = run_in_home(tmp_path / "one", Path("demo"), *small)
    two = run_in_home(tmp_path / "two", Path("demo"), *small, "--workers", "2")
    assert_same_run(one, two)
    assert sum(two[0]["worker_evaluations"].values()) == worker_scored(two[1]) > 0
