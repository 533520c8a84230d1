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

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.store import RunStore


def spawn_engine(
    store: RunStore, *, resume: bool = False, confirm: bool = False
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gaprune_tui.engine.worker", str(store.path)]
    if resume:
        cmd.append("--resume")
    if confirm:
        cmd.append("--confirm")
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
    """
    config.validate()
    store = RunStore.create(config)
    return store, spawn_engine(store)


def resume_run(store: RunStore) -> subprocess.Popen[bytes]:
    """Continue a stopped or crashed run from its last generation boundary."""
    return spawn_engine(store, resume=True)


def confirm_run(store: RunStore) -> subprocess.Popen[bytes]:
    """Confirm a finished (or stopped) run's finalists now: re-score them, the baselines and the
    base model on more items and on held-out tasks, and rewrite its result.json."""
    return spawn_engine(store, confirm=True)
