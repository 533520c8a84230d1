"""Themes: the shipped files, user themes, broken files, and switching from the command palette."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_wait import key, opened

from gaprune_tui.core import paths
from gaprune_tui.ui.app import GapruneApp
from gaprune_tui.ui.screens.setup import SetupScreen
from gaprune_tui.ui.themes import (
    BITMAP_VARIABLES,
    DEFAULT_THEME,
    builtin_themes_dir,
    load_theme_file,
    load_themes,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cpu_only")]

REPO_THEMES = Path(__file__).resolve().parent.parent / "themes"

USER_THEME = """
name = "my-theme"
dark = true
primary = "#88C0D0"
background = "#2E3440"

[variables]
bitmap-kept = "#A3BE8C"
bitmap-dropped = "#BF616A"
bitmap-protected = "#4C566A"
bitmap-best = "#EBCB8B"
"""


def test_builtin_themes_are_complete_dark_and_light() -> None:
    found = load_themes()
    assert found.problems == []
    assert {"gaprune-dark", "gaprune-light"} <= set(found.themes)
    assert found.themes["gaprune-dark"].dark is True
    assert found.themes["gaprune-light"].dark is False
    for theme in found.themes.values():
        for field in ("primary", "secondary", "accent", "background", "surface", "panel"):
            assert getattr(theme, field), f"{theme.name} lacks {field}"
        for field in ("foreground", "success", "warning", "error"):
            assert getattr(theme, field), f"{theme.name} lacks {field}"
        assert set(BITMAP_VARIABLES) <= set(theme.variables)


def test_repo_theme_files_equal_the_packaged_copies() -> None:
    """The repo's themes/ is what users read; the package ships the same bytes."""
    repo = {p.name: p.read_bytes() for p in REPO_THEMES.glob("*.toml")}
    packaged = {p.name: p.read_bytes() for p in builtin_themes_dir().glob("*.toml")}
    assert len(repo) >= 2
    assert repo == packaged


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name = 'x'\nprimary = \n", "not valid TOML"),
        ("name = 'x'\nprimary = 'not-a-colour'\n", "is not a colour"),
        ("name = 'x'\n", "missing primary"),
        ("primary = '#ffffff'\n", "missing name"),
        ("name = 'x'\nprimary = '#fff'\ncolour = 'red'\n", "unknown key 'colour'"),
        ("name = 'x'\nprimary = '#fff'\n[variables]\nbitmap-kept = 'nope'\n", "bitmap-kept"),
        ("name = 'x'\nprimary = '#fff'\ndark = 'yes'\n", "dark must be true or false"),
    ],
)
def test_broken_theme_files_are_reported_not_raised(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    found = load_themes(tmp_path)
    assert len(found.problems) == 1
    assert needle in found.problems[0]
    assert "bad.toml" in found.problems[0]
    assert DEFAULT_THEME in found.themes  # the built-ins still load


def test_user_theme_loads_and_can_override_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(USER_THEME)
    (tmp_path / "override.toml").write_text(
        (builtin_themes_dir() / "gaprune-light.toml")
        .read_text()
        .replace('primary = "#1F6FB2"', 'primary = "#123456"')
    )
    found = load_themes(tmp_path)
    assert found.problems == []
    assert found.themes["my-theme"].variables["bitmap-best"] == "#EBCB8B"
    assert found.themes["gaprune-light"].primary == "#123456"
    assert load_theme_file(tmp_path / "mine.toml").background == "#2E3440"


def user_themes(**files: str) -> Path:
    """The user's theme folder, made here, holding ``<name>.toml`` for each ``name=text``."""
    user_dir = paths.user_themes_dir()
    user_dir.mkdir(parents=True)
    for name, text in files.items():
        (user_dir / f"{name}.toml").write_text(text)
    return user_dir


async def pick(pilot: Any, name: str) -> None:
    """Type ``name`` into the open picker, let it filter, and choose the first match."""
    await pilot.press(*name)
    await pilot.pause(0.3)
    await pilot.press("enter")
    await pilot.pause(0.3)


async def test_app_registers_themes_and_warns_about_a_broken_user_theme() -> None:
    user_themes(mine=USER_THEME, broken="name = 'broken'\nprimary = 'purple-ish'\n")
    app = GapruneApp()
    async with opened(app, SetupScreen, "setup") as (pilot, _):
        assert app.theme == DEFAULT_THEME
        assert "my-theme" in app.available_themes
        assert "broken" not in app.available_themes
        notes = [n for n in app._notifications if n.severity == "warning"]
        assert any("broken.toml" in n.message for n in notes)
        variables = app.get_css_variables()
        assert variables["bitmap-kept"] == "#4FA3E0"
        # A Textual theme without bitmap colours still gets them (the defaults).
        app.theme = "textual-light"
        await pilot.pause()
        assert all(name in app.get_css_variables() for name in BITMAP_VARIABLES)


async def test_theme_picker_key_switches_to_a_user_theme() -> None:
    user_themes(mine=USER_THEME)
    app = GapruneApp()
    async with opened(app, SetupScreen, "setup") as (pilot, _):
        await key(pilot, "f9")
        await pick(pilot, "my-theme")
        assert app.theme == "my-theme"
        assert app.get_css_variables()["bitmap-dropped"] == "#BF616A"


async def test_command_palette_switches_theme() -> None:
    """ctrl+p, the "Theme" system command, then the theme's name: Textual's own picker."""
    async with opened(GapruneApp(), SetupScreen, "setup") as (pilot, _):
        await key(pilot, "ctrl+p")
        await pick(pilot, "theme")
        await pick(pilot, "gaprune-light")
        assert pilot.app.theme == "gaprune-light"
