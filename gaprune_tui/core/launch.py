"""Start the engine process for a run, detached from the terminal.

Used by the CLI and the TUI alike. The engine must not inherit the caller's stdio: inside a running
Textual app ``sys.stdout.fileno()`` is -1 and the spawn would fail, and an SSH hang-up must not reach
the engine. So it gets /dev/null for stdin, the run's ``engine.log`` for stdout and stderr, and a new
session of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from gaprune_tui.core import preflight
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.follow import last_error_lines
from gaprune_tui.core.store import RunState, RunStore

LaunchPhase = Literal["starting", "started", "rejected"]


class Process(Protocol):
    """What a launch needs of the engine process: ``subprocess.Popen`` or a test's stand-in."""

    def poll(self) -> int | None: ...


@dataclass(frozen=True)
class LaunchStatus:
    """Where a freshly started engine stands: still loading, past setup, or rejected (``error``
    says why, in the engine's words or from the end of engine.log)."""

    phase: LaunchPhase
    error: str | None = None


def spawn_engine(
    store: RunStore, *, resume: bool = False, confirm: bool = False, heal: str | None = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gaprune_tui.engine.worker", str(store.path)]
    if resume:
        cmd.append("--resume")
    if confirm:
        cmd.append("--confirm")
    if heal is not None:
        cmd += ["--heal", heal]
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TQDM_DISABLE", "1")  # lm-eval's per-call progress bars would flood engine.log
    with open(store.log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    store.set_meta(pid=proc.pid)
    return proc


def start_run(config: RunConfig) -> tuple[RunStore, subprocess.Popen[bytes]]:
    """Validate, create the run folder and start its engine. The engine then reports through the store:
    state "running" once the model and tasks are loaded, or "invalid" (with meta "error") when setup
    failed on bad input, in which case the caller shows the error and calls ``store.discard()``.
    Every task and device the run names is checked first (``core.preflight``): a typo or a missing
    GPU is a ``GapruneError`` here, and no run folder is created.
    """
    config.validate()
    preflight.check_run(config)
    store = RunStore.create(config)
    return store, spawn_engine(store)


def resume_run(store: RunStore) -> subprocess.Popen[bytes]:
    """Continue a stopped or crashed run from its last generation boundary."""
    return spawn_engine(store, resume=True)


def launch_status(store: RunStore, proc: Process | None) -> LaunchStatus:
    """One look, without blocking, at a run whose engine was just started (the CLI waits on it,
    the Setup screen polls it from a timer). A run the engine marked "invalid" (bad model, task or
    layer count) is discarded here, so it never looks like a real run; an engine that died before
    setting a state is reported with the end of its log."""
    exited = proc is not None and proc.poll() is not None  # before reading the state: no race
    state = store.state
    if state == RunState.INVALID:
        error = store.meta().get("error") or "the engine rejected this setup (see engine.log)"
        store.discard()
        return LaunchStatus("rejected", str(error))
    if state != RunState.CREATED:
        return LaunchStatus("started")
    if exited:
        tail = last_error_lines(store.log_path, 1)
        reason = tail[-1].strip() if tail else "see engine.log"
        return LaunchStatus("rejected", f"the engine exited before starting: {reason}")
    return LaunchStatus("starting")


def wait_started(store: RunStore, proc: Process | None, poll_seconds: float = 0.2) -> None:
    """Block until the engine has loaded the model and tasks; ``GapruneError`` if it did not."""
    status = launch_status(store, proc)
    while status.phase == "starting":
        time.sleep(poll_seconds)
        status = launch_status(store, proc)
    if status.phase == "rejected":
        raise GapruneError(status.error or "the engine rejected the run")


def confirm_run(store: RunStore) -> subprocess.Popen[bytes]:
    """Confirm a finished (or stopped) run's finalists now: re-score them, the baselines and the
    base model on more items and on held-out tasks, and rewrite its result.json."""
    return spawn_engine(store, confirm=True)


def heal_run(store: RunStore, heal_id: str) -> subprocess.Popen[bytes]:
    """Run (or continue from its checkpoint) the heal ``heals/ID`` of a finished or stopped run:
    the request was written by ``core.heal.write_request``."""
    return spawn_engine(store, heal=heal_id)
