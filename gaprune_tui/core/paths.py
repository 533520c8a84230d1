"""Where gaprune-tui keeps its files.

``GAPRUNE_HOME`` (used by tests) puts everything under one folder; otherwise the platform's data,
cache and config dirs are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP_NAME = "gaprune-tui"


def _home() -> Path | None:
    value = os.environ.get("GAPRUNE_HOME")
    return Path(value).expanduser() if value else None


def _app_dir(under_home: str, platform_dir: Callable[[str], str]) -> Path:
    """``GAPRUNE_HOME/<under_home>`` when GAPRUNE_HOME is set (tests, benchmarks), else the
    platform's own folder of that kind for the app."""
    home = _home()
    return home / under_home if home else Path(platform_dir(APP_NAME))


def data_dir() -> Path:
    return _app_dir("data", platformdirs.user_data_dir)


def cache_dir() -> Path:
    """Converted models and other derived files. ``GAPRUNE_CACHE_DIR`` overrides (tests share it)."""
    override = os.environ.get("GAPRUNE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return _app_dir("cache", platformdirs.user_cache_dir)


def config_dir() -> Path:
    return _app_dir("config", platformdirs.user_config_dir)


def runs_dir() -> Path:
    return data_dir() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def memo_path() -> Path:
    """The fitness memo shared by all runs."""
    return data_dir() / "memo.db"


def user_themes_dir() -> Path:
    return config_dir() / "themes"
