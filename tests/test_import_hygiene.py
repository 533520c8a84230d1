"""The UI side stays light: no module under ui/, core/ or cli/ pulls in the heavy stack on import.

import-linter checks the imports written in the source; this checks what really lands in
``sys.modules`` (a dependency of a dependency, a plugin, a lazy import run at module level), each
module in a fresh interpreter so one module's imports cannot hide another's. The modules are found
by walking the package, so a new module is covered without touching this file.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gaprune_tui

HEAVY = ("torch", "transformers", "lm_eval", "mergekit", "deap", "ray")
LIGHT_PACKAGES = ("gaprune_tui.ui", "gaprune_tui.core", "gaprune_tui.cli")
ROOT = Path(gaprune_tui.__file__).resolve().parent.parent


def light_modules() -> list[str]:
    """Every module (and package) below the light packages, found on disk."""
    names: list[str] = []
    for package in LIGHT_PACKAGES:
        path = ROOT / package.replace(".", "/")
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages([str(path)], prefix=f"{package}.")]
    return sorted(names)


def test_the_walk_finds_the_modules() -> None:
    modules = light_modules()
    for expected in ("gaprune_tui.ui.app", "gaprune_tui.core.store", "gaprune_tui.cli.main"):
        assert expected in modules
    assert "gaprune_tui.ui.screens.setup" in modules  # subpackages are walked too


@pytest.mark.parametrize("module", light_modules())
def test_module_imports_nothing_heavy(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loaded {', '.join(loaded)}"
