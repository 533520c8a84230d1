"""The run store: where the engine writes and the UI and CLI read.

One folder per run under ``paths.runs_dir()`` holds ``config.toml``, ``run.db`` (SQLite, WAL),
``engine.log`` and, at the end, ``result.json``. The engine appends events, evaluations, generation
summaries and checkpoints; the UI and CLI read them and append control requests (pause, unpause,
stop) that the engine honours. SQLite in WAL mode lets one writer and many readers work at once
across processes, and every finished evaluation is committed before the next starts, so a crash or
a kill -9 loses at most the evaluation in flight.

The fitness memo shared by all runs lives in ``paths.memo_path()`` (``Memo``).

Stdlib only (plus our config): the TUI imports this on its start path.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import paths
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import DamagedRunError, GapruneError, StoreError
from gaprune_tui.core.events import EvaluationFinished, GenerationFinished, RunEvent, parse

SCHEMA_VERSION = 1


class RunState(StrEnum):
    """A run's state as the store writes it (the text is the stored value), plus ``CRASHED``:
    never stored, derived by ``RunStore.display_state`` for an active run whose engine died, and
    ``DAMAGED``: never stored, a run whose files cannot be read (``RunStore.damage``).
    ``INVALID`` marks a run whose setup failed on bad input: it is discarded, never listed."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    INVALID = "invalid"
    CRASHED = "crashed"
    # Never stored either: a run whose folder cannot be read (``RunStore.damage``).
    DAMAGED = "damaged"

    @property
    def active(self) -> bool:
        """An engine is (or should be) working on the run."""
        return self in (RunState.CREATED, RunState.RUNNING, RunState.PAUSED)

    @property
    def resumable(self) -> bool:
        """``gaprune-tui resume`` may continue it from its last generation boundary."""
        return self in (RunState.STOPPED, RunState.FAILED, RunState.CRASHED)

    @property
    def deletable(self) -> bool:
        """No engine will write to it again, so its folder may go."""
        return self in (
            RunState.FINISHED,
            RunState.STOPPED,
            RunState.FAILED,
            RunState.CRASHED,
            RunState.DAMAGED,
        )

    @property
    def has_result(self) -> bool:
        """Its evaluations are complete enough to browse as results (a stopped run's so far)."""
        return self in (RunState.FINISHED, RunState.STOPPED)


def can_resume(state: str, alive: bool) -> bool:
    """Whether a run can be resumed now: the one rule the CLI and every screen use.

    A stopped, failed or crashed run whose engine is gone. A ``created`` run whose engine died
    before loading shows as crashed (see ``display_state``) and so resumes; a live one does not.
    """
    return not alive and RunState(state).resumable


class ControlAction(StrEnum):
    """What the UI and CLI may ask of a live engine (the text is what the control table holds)."""

    PAUSE = "pause"
    UNPAUSE = "resume"  # stored as "resume" so engines of earlier versions still understand it
    STOP = "stop"


@dataclass
class ControlRequest:
    id: int
    action: ControlAction


_RUN_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    generation INTEGER NOT NULL,
    dropped TEXT NOT NULL,
    kept TEXT NOT NULL,
    fitness REAL NOT NULL,
    scores TEXT NOT NULL,
    seconds REAL NOT NULL,
    from_memo INTEGER NOT NULL,
    fidelity TEXT NOT NULL DEFAULT 'full'
);
CREATE INDEX IF NOT EXISTS evaluations_dropped ON evaluations (dropped);
CREATE TABLE IF NOT EXISTS generations (
    gen INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    evaluated INTEGER NOT NULL,
    from_memo INTEGER NOT NULL,
    min REAL NOT NULL,
    mean REAL NOT NULL,
    max REAL NOT NULL,
    best_dropped TEXT NOT NULL,
    best_fitness REAL NOT NULL,
    seconds REAL NOT NULL,
    population TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (gen INTEGER PRIMARY KEY, ts REAL NOT NULL, blob BLOB);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    handled REAL
);
"""


# The generation of a baseline's evaluation row: scored before the search, ranked with its genomes.
BASELINE_GENERATION = -1


@dataclass
class Evaluation:
    """One scored genome. ``dropped``/``kept`` are sorted layer indices of the base model."""

    generation: int
    dropped: list[int]
    kept: list[int]
    fitness: float
    scores: dict[str, dict[str, float]]
    seconds: float
    from_memo: bool
    fidelity: str = "full"
    ts: float = field(default_factory=time.time)

    @classmethod
    def from_event(cls, event: EvaluationFinished) -> Evaluation:
        return cls(**{name: getattr(event, name) for name in _EVALUATION_FIELDS})

    def event(self) -> EvaluationFinished:
        """The ``evaluation_finished`` event that announces this row."""
        return EvaluationFinished(ts=self.ts, **{n: getattr(self, n) for n in _EVALUATION_FIELDS})


# The fields a row shares with its event (the row adds ``ts``; a generation row says ``gen``).
_EVALUATION_FIELDS = [f.name for f in fields(EvaluationFinished) if not f.kw_only]
_GENERATION_FIELDS = [
    f.name
    for f in fields(GenerationFinished)
    if not (f.kw_only or f.metadata or f.name == "generation")
]


@dataclass
class Generation:
    gen: int
    evaluated: int
    from_memo: int
    min: float
    mean: float
    max: float
    best_dropped: list[int]
    best_fitness: float
    seconds: float
    population: list[list[int]]
    ts: float = field(default_factory=time.time)

    @classmethod
    def from_event(cls, event: GenerationFinished) -> Generation:
        """The row of a ``generation_finished`` event (the table keeps its column name ``gen``)."""
        values = {name: getattr(event, name) for name in _GENERATION_FIELDS}
        return cls(gen=event.generation, **values)

    def event(self) -> GenerationFinished:
        values = {name: getattr(self, name) for name in _GENERATION_FIELDS}
        return GenerationFinished(generation=self.gen, **values)


@dataclass
class RunSummary:
    id: str
    path: Path
    state: RunState
    model: str
    best_fitness: float | None
    best_dropped: list[int] | None
    started: float
    alive: bool
    error: str | None

    @property
    def can_resume(self) -> bool:
        return can_resume(self.state, self.alive)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def new_run_id() -> str:
    """Sortable by start time, unique, short enough to type."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class RunStore:
    """A run's folder and database. Thread-safe; cheap to open from several processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.id = self.path.name
        self.db_path = self.path / "run.db"
        self._lock = threading.RLock()
        try:
            self._conn = _connect(self.db_path)
            self._conn.executescript(_RUN_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise self._damaged_db(exc) from None

    # ---- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, run_id: str | None = None) -> RunStore:
        run_id = run_id or new_run_id()
        folder = paths.run_dir(run_id)
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise StoreError(f"run {run_id!r} already exists: pick another run id") from None
        except OSError as exc:
            raise StoreError(
                f"cannot create the run folder in {str(paths.runs_dir())!r} ({exc.strerror}): "
                "make it writable or set GAPRUNE_HOME to a writable folder"
            ) from None
        try:
            config.save(folder / "config.toml")
            store = cls(folder)
            now = time.time()
            meta = {"schema": SCHEMA_VERSION, "state": RunState.CREATED, "model": config.model}
            store.set_meta(**meta, created=now, updated=now)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise StoreError(f"cannot write the run store in {str(folder)!r}: {exc}") from None
        return store

    @classmethod
    def open(cls, run: str | Path) -> RunStore:
        """Open by run id, unique id prefix or folder path; ``DamagedRunError`` (one line: what
        is wrong and what can be done) for a run whose files cannot be read."""
        folder = resolve_run(run)
        store = cls(folder)
        problem = store.damage()
        if problem is not None:
            store.close()
            raise DamagedRunError(damaged_message(folder, problem), problem)
        return store

    # ---- damage ------------------------------------------------------------------------------
    def damage(self) -> str | None:
        """What makes this run unreadable, or None: a run.db that is not a run's database (or
        is cut short), a config.toml that is missing or unreadable, a result.json that is not
        JSON. Cheap: one query and two small files."""
        try:
            meta = self.meta()
        except DamagedRunError as exc:
            return exc.problem
        if "schema" not in meta:
            return "run.db holds no run (it is empty or was cut short)"
        try:
            self.config()
        except GapruneError as exc:
            missing = not (self.path / "config.toml").is_file()
            return "config.toml is missing" if missing else f"config.toml cannot be read ({exc})"
        if self.result_path.exists():
            try:
                result = json.loads(self.result_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return f"result.json cannot be read ({type(exc).__name__}: {exc})"
            if not isinstance(result, dict):
                return "result.json holds no result (not a JSON object)"
        return None

    def _damaged_db(self, exc: sqlite3.DatabaseError) -> StoreError:
        """A SQLite error reading run.db: a busy database is not damage, anything else is."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return StoreError(f"run {self.id}'s run.db is busy ({exc}): try again in a moment")
        problem = f"run.db is not a readable database ({exc})"
        return DamagedRunError(damaged_message(self.path, problem), problem)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A query's rows, read under the lock (the engine's threads share one connection)."""
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._damaged_db(exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ---- config, meta and state ---------------------------------------------------------------
    def config(self) -> RunConfig:
        return RunConfig.load(self.path / "config.toml")

    def set_meta(self, **values: Any) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        rows = self._rows("SELECT key, value FROM meta")
        return {row["key"]: json.loads(row["value"]) for row in rows}

    @property
    def state(self) -> RunState:
        """The stored state (never ``CRASHED``: see ``display_state``)."""
        return RunState(self.meta().get("state", RunState.CREATED))

    def set_state(self, state: RunState, *, error: str | None = None) -> None:
        values: dict[str, Any] = {"state": state, "updated": time.time()}
        if error is not None:
            values["error"] = error
        self.set_meta(**values)

    def alive(self) -> bool:
        """Whether an engine process is working on this run right now."""
        meta = self.meta()
        state = RunState(meta.get("state", RunState.CREATED))
        return state.active and pid_alive(meta.get("pid"))

    def display_state(self) -> RunState:
        """The state as a user should read it: an active run whose engine died has crashed."""
        meta = self.meta()
        state = RunState(meta.get("state", RunState.CREATED))
        if state.active and meta.get("pid") and not pid_alive(meta.get("pid")):
            return RunState.CRASHED
        return state

    # ---- events ----------------------------------------------------------------------------
    def add_event(self, event: RunEvent | str, **payload: Any) -> int:
        """Append an event; its sequence number. ``add_event("kind", field=...)`` still works for
        writers not yet moved to the event classes (it is parsed, so the fields are checked)."""
        if isinstance(event, str):
            event = parse(event, payload)
        elif payload:
            raise TypeError("add_event(event) takes no payload keywords: set the event's fields")
        with self.transaction() as conn:
            return self._insert_event(conn, event, time.time())

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, event: RunEvent, ts: float) -> int:
        cur = conn.execute(
            "INSERT INTO events (ts, kind, payload) VALUES (?, ?, ?)",
            (ts, event.kind, json.dumps(event.to_payload())),
        )
        return int(cur.lastrowid or 0)

    def events(self, after: int = 0, limit: int | None = None) -> list[RunEvent]:
        """Events after sequence number ``after``, oldest first, as their classes (``parse``)."""
        sql = "SELECT seq, ts, kind, payload FROM events WHERE seq > ? ORDER BY seq"
        args: tuple[Any, ...] = (after,)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        rows = self._rows(sql, args)
        return [
            parse(row["kind"], json.loads(row["payload"]), seq=row["seq"], ts=row["ts"])
            for row in rows
        ]

    # ---- evaluations and generations -----------------------------------------------------------
    def add_evaluation(self, ev: Evaluation, *, event: bool = True) -> None:
        """Commit one scored genome (and its event) in one transaction."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO evaluations (ts, generation, dropped, kept, fitness, scores, seconds,"
                " from_memo, fidelity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.ts,
                    ev.generation,
                    json.dumps(ev.dropped),
                    json.dumps(ev.kept),
                    ev.fitness,
                    json.dumps(ev.scores),
                    ev.seconds,
                    int(ev.from_memo),
                    ev.fidelity,
                ),
            )
            if event:
                self._insert_event(conn, ev.event(), ev.ts)

    def evaluations(self) -> list[Evaluation]:
        rows = self._rows(
            "SELECT generation, dropped, kept, fitness, scores, seconds, from_memo, fidelity, ts"
            " FROM evaluations ORDER BY id"
        )
        return [
            Evaluation(
                generation=row["generation"],
                dropped=json.loads(row["dropped"]),
                kept=json.loads(row["kept"]),
                fitness=row["fitness"],
                scores=json.loads(row["scores"]),
                seconds=row["seconds"],
                from_memo=bool(row["from_memo"]),
                fidelity=row["fidelity"],
                ts=row["ts"],
            )
            for row in rows
        ]

    def best_evaluations(
        self, n: int | None = None, fidelity: str = "full", kind: str | None = None
    ) -> list[Evaluation]:
        """Distinct genomes, best first for the fitness ``kind`` (the run's own by default: higher
        task fitness, lower KL or perplexity); ties go to the lexicographically smaller genome."""
        kind = kind or self.config().fitness
        best: dict[str, Evaluation] = {}
        for ev in self.evaluations():
            if ev.fidelity != fidelity:
                continue
            key = json.dumps(ev.dropped)
            if key not in best or fitness_kinds.better(ev.fitness, best[key].fitness, kind):
                best[key] = ev
        ranked = sorted(
            best.values(), key=lambda e: (fitness_kinds.rank_key(e.fitness, kind), e.dropped)
        )
        return ranked if n is None else ranked[:n]

    def add_generation(self, gen: Generation) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO generations (gen, ts, evaluated, from_memo, min, mean, max,"
                " best_dropped, best_fitness, seconds, population)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    gen.gen,
                    gen.ts,
                    gen.evaluated,
                    gen.from_memo,
                    gen.min,
                    gen.mean,
                    gen.max,
                    json.dumps(gen.best_dropped),
                    gen.best_fitness,
                    gen.seconds,
                    json.dumps(gen.population),
                ),
            )

    def generations(self) -> list[Generation]:
        rows = self._rows(
            "SELECT gen, evaluated, from_memo, min, mean, max, best_dropped, best_fitness,"
            " seconds, population, ts FROM generations ORDER BY gen"
        )
        return [
            Generation(
                gen=row["gen"],
                evaluated=row["evaluated"],
                from_memo=row["from_memo"],
                min=row["min"],
                mean=row["mean"],
                max=row["max"],
                best_dropped=json.loads(row["best_dropped"]),
                best_fitness=row["best_fitness"],
                seconds=row["seconds"],
                population=json.loads(row["population"]),
                ts=row["ts"],
            )
            for row in rows
        ]

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, gen: int, blob: bytes) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (gen, ts, blob) VALUES (?, ?, ?)",
                (gen, time.time(), blob),
            )

    def last_checkpoint(self) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT gen, blob FROM checkpoints ORDER BY gen DESC LIMIT 1"
            ).fetchone()
        return (int(row["gen"]), bytes(row["blob"])) if row else None

    # ---- control requests ------------------------------------------------------------------------
    def request(self, action: ControlAction | str) -> int:
        try:
            action = ControlAction(action)
        except ValueError:
            names = ", ".join(a.value for a in ControlAction)
            raise StoreError(f"unknown control action {action!r}: use one of {names}") from None
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO control (ts, action) VALUES (?, ?)", (time.time(), action.value)
            )
            return int(cur.lastrowid or 0)

    def pending_requests(self) -> list[ControlRequest]:
        """Requests the engine has not handled yet, oldest first (unknown actions skipped)."""
        rows = self._rows("SELECT id, action FROM control WHERE handled IS NULL ORDER BY id")
        known = {a.value for a in ControlAction}
        return [
            ControlRequest(int(row["id"]), ControlAction(row["action"]))
            for row in rows
            if row["action"] in known
        ]

    def mark_handled(self, request_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE control SET handled = ? WHERE id = ?", (time.time(), request_id))

    # ---- result ------------------------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def log_path(self) -> Path:
        return self.path / "engine.log"

    def write_result(self, result: dict[str, Any]) -> None:
        tmp = self.result_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.result_path)

    def result(self) -> dict[str, Any] | None:
        """result.json, or None while there is none (``damage`` says when it cannot be read)."""
        try:
            result = json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None

    def summary(self) -> RunSummary:
        meta = self.meta()
        best = meta.get("best_dropped")
        return RunSummary(
            id=self.id,
            path=self.path,
            state=self.display_state(),
            model=meta.get("model", "?"),
            best_fitness=meta.get("best_fitness"),
            best_dropped=best,
            started=meta.get("created", 0.0),
            alive=self.alive(),
            error=meta.get("error"),
        )

    def summary_or_damage(self) -> RunSummary:
        """``summary``, or for a damaged run one that says so (state ``damaged``, ``error`` the
        one line of what is wrong and what can be done)."""
        problem = self.damage()
        if problem is None:
            return self.summary()
        return damaged_summary(self.path, problem)

    def discard(self) -> None:
        """Remove a run whose setup failed on bad input, so it never looks like a real run."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def damaged_message(folder: Path, problem: str) -> str:
    """The one line for a damaged run: what is wrong and what can still be done."""
    keep = " (its exports stay)" if (folder / "exports").is_dir() else ""
    return (
        f"run {folder.name} is damaged: {problem}; nothing can be shown or resumed from it: "
        f"delete it{keep} with `gaprune-tui delete {folder.name}` or d in the History screen"
    )


def damaged_summary(folder: Path, problem: str) -> RunSummary:
    """How ``runs`` and the History screen list a run whose files cannot be read."""
    try:
        started = (folder / "run.db").stat().st_mtime
    except OSError:
        started = 0.0
    return RunSummary(
        id=folder.name,
        path=folder,
        state=RunState.DAMAGED,
        model="?",
        best_fitness=None,
        best_dropped=None,
        started=started,
        alive=False,
        error=damaged_message(folder, problem),
    )


def delete_run(folder: Path) -> None:
    """Remove a run's files. Its ``exports`` folder stays (models someone may be using), so a run
    folder that holds exports remains with only them, and is no longer listed as a run."""
    folder = Path(folder)
    if not (folder / "exports").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if entry.name == "exports":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def resolve_run(run: str | Path) -> Path:
    """A run folder from an id, a unique id prefix, or a path; ``StoreError`` otherwise."""
    candidate = Path(run).expanduser()
    if (candidate / "run.db").is_file():
        return candidate
    root = paths.runs_dir()
    exact = root / str(run)
    if (exact / "run.db").is_file():
        return exact
    matches = (
        sorted(p for p in root.glob(f"{run}*") if (p / "run.db").is_file()) if root.is_dir() else []
    )
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(p.name for p in matches[:5])
        raise StoreError(f"run {str(run)!r} is ambiguous ({ids}): give more of the id")
    raise StoreError(f"no run {str(run)!r} in {str(root)!r}: see `gaprune-tui runs` for run ids")


def list_runs() -> list[RunSummary]:
    """All runs, newest first; a run whose files cannot be read is listed as damaged."""
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir(), reverse=True):
        if not (folder / "run.db").is_file():
            continue
        try:
            store = RunStore(folder)
        except DamagedRunError as exc:
            out.append(damaged_summary(folder, exc.problem))
            continue
        except StoreError:
            continue  # busy: listed next time
        try:
            summary = store.summary_or_damage()
        except DamagedRunError as exc:
            summary = damaged_summary(folder, exc.problem)
        except StoreError:
            continue
        finally:
            store.close()
        if summary.state != RunState.INVALID:
            out.append(summary)
    return out


class Memo:
    """The fitness memo shared by all runs: per-task scores of a kept-layer set in a context.

    The context string names everything that decides a score besides the kept layers: the model
    fingerprint, each task with its metric, few-shot count and limit, and the scorer version. The
    fitness is derived from the scores, so changing the fitness function reuses the memo.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else paths.memo_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = _connect(self.path)
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS memo (
                context TEXT NOT NULL,
                kept TEXT NOT NULL,
                scores TEXT NOT NULL,
                seconds REAL NOT NULL,
                ts REAL NOT NULL,
                PRIMARY KEY (context, kept)
            );
            """
        )

    def get(
        self, context: str, kept: list[int]
    ) -> tuple[dict[str, dict[str, float]], float] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT scores, seconds FROM memo WHERE context = ? AND kept = ?",
                (context, json.dumps(sorted(kept))),
            ).fetchone()
        return (json.loads(row["scores"]), float(row["seconds"])) if row else None

    def put(
        self, context: str, kept: list[int], scores: dict[str, dict[str, float]], seconds: float
    ) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO memo (context, kept, scores, seconds, ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (context, json.dumps(sorted(kept)), json.dumps(scores), seconds, time.time()),
            )

    def count(self, context: str | None = None) -> int:
        with self._lock:
            if context is None:
                row = self._conn.execute("SELECT COUNT(*) AS n FROM memo").fetchone()
            else:
                row = self._conn.execute(
                    "SELECT COUNT(*) AS n FROM memo WHERE context = ?", (context,)
                ).fetchone()
        return int(row["n"])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
