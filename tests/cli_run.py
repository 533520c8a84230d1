"""The real CLI in a child process, as a user runs it, for the CLI and end-to-end tests."""

from __future__ import annotations

import json
import os
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
