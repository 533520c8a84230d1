"""Where gaprune-tui keeps its files.

``GAPRUNE_HOME`` (used by tests) puts everything under one folder; otherwise the platform's data,
cache and config dirs are used.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "gaprune-tui"


def _home() -> Path | None:
    value = os.environ.get("GAPRUNE_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Converted models and other derived files. ``GAPRUNE_CACHE_DIR`` overrides (tests share it)."""
    override = os.environ.get("GAPRUNE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def runs_dir() -> Path:
    return data_dir() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def memo_path() -> Path:
    """The fitness memo shared by all runs."""
    return data_dir() / "memo.db"


def user_themes_dir() -> Path:
    return config_dir() / "themes"
