"""The real CLI in a child process, as a user runs it, for the CLI and end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from gaprune_tui.core.store import RunStore


def cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None, threads: int | None = 1
) -> subprocess.CompletedProcess[str]:
    """``python -m gaprune_tui ARGS`` with this interpreter, output captured as text. ``env`` adds
    to this process's environment; ``threads`` caps the engine's torch threads (GAPRUNE_THREADS)
    so that tests sharing a small machine do not oversubscribe it (None: the engine's default)."""
    extra = {"GAPRUNE_THREADS": str(threads)} if threads is not None else {}
    return subprocess.run(
        [sys.executable, "-m", "gaprune_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **extra, **(env or {})},
    )


def run_in_home(
    home: Path, model: Path, *args: str, timeout: float = 300
) -> tuple[dict[str, Any], RunStore]:
    """A run to its end in its own GAPRUNE_HOME (its own memo): result.json and its store."""
    env = {"GAPRUNE_HOME": str(home)}
    proc = cli("run", "--model", str(model), *args, "--json", env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (home / "data" / "runs").iterdir()
    return json.loads(proc.stdout), RunStore(run_dir)


def copy_run(source: Path, dest: Path) -> None:
    """Copy a run folder the way SQLite allows while this process may hold connections to it.

    A plain file copy of run.db opens and closes the database (and its -shm) outside SQLite, and
    POSIX drops every lock this process holds on a file when any descriptor of it closes: a
    connection of ours then holds no read mark, another process may reset the WAL under it, and
    this process keeps reading a stale index (missed writes, then "database disk image is
    malformed"). So the database goes through SQLite's backup API and everything else is copied.
    """
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("run.db", "run.db-*"))
    src = sqlite3.connect(source / "run.db")
    dst = sqlite3.connect(dest / "run.db")
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
