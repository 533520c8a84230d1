"""Themes from TOML files: the built-in ones shipped in the package, plus the user's own.

A theme file holds the fields of a Textual ``Theme`` and a ``[variables]`` table; the layer bitmap
reads its colours from the variables ``bitmap-kept``, ``bitmap-dropped``, ``bitmap-protected`` and
``bitmap-best``. User themes live in ``paths.user_themes_dir()`` and may override a built-in by name.
A broken file is reported as a problem string and skipped, never raised: a typo in a theme must not
keep anyone from their search. No textual import beyond ``Theme`` and ``Color``: cheap on start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

from gaprune_tui.core import paths
from gaprune_tui.core.config import check_keys

DEFAULT_THEME = "gaprune-dark"
BITMAP_VARIABLES = ("bitmap-kept", "bitmap-dropped", "bitmap-protected", "bitmap-best")
# Used when the active theme (e.g. one of Textual's own) does not define the bitmap colours.
BITMAP_DEFAULTS = {
    "bitmap-kept": "#4FA3E0",
    "bitmap-dropped": "#E0565B",
    "bitmap-protected": "#8A96A3",
    "bitmap-best": "#F2C14E",
}
_COLOR_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)
_FLOAT_FIELDS = ("luminosity_spread", "text_alpha")
_KNOWN_KEYS = {"name", "dark", "variables", *_COLOR_FIELDS, *_FLOAT_FIELDS}


class ThemeFileError(ValueError):
    """A theme file that cannot be used; the message names the file and the fix."""


@dataclass
class ThemeSet:
    """What ``load_themes`` found: usable themes by name and one line per skipped file."""

    themes: dict[str, Theme] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def builtin_themes_dir() -> Path:
    """The themes shipped inside the package (copies of the repo's ``themes/`` folder)."""
    return Path(__file__).resolve().parent / "theme_files"


def theme_from_dict(data: dict[str, Any], source: str) -> Theme:
    """Build a ``Theme`` from a parsed file, checking every colour so errors name the field."""
    check_keys(data, _KNOWN_KEYS, source, ThemeFileError)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeFileError(f'{source}: missing name: add name = "my-theme"')
    if "primary" not in data:
        raise ThemeFileError(f'{source}: missing primary colour: add primary = "#4FA3E0"')
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeFileError(f"{source}: dark must be true or false, got {dark!r}")
    kwargs: dict[str, Any] = {"name": name.strip(), "dark": dark}
    for key in _COLOR_FIELDS:
        if key in data:
            kwargs[key] = _color(data[key], f"{source}: {key}")
    for key in _FLOAT_FIELDS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ThemeFileError(f"{source}: {key} must be a number, got {value!r}")
            kwargs[key] = float(value)
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{source}: variables must be a table: use [variables]")
    checked: dict[str, str] = {}
    for key, value in variables.items():
        if not isinstance(value, str):
            raise ThemeFileError(f"{source}: variable {key!r} must be a string, got {value!r}")
        checked[key] = _color(value, f"{source}: {key}") if key in BITMAP_VARIABLES else value
    kwargs["variables"] = checked
    theme = Theme(**kwargs)
    try:
        theme.to_color_system().generate()
    except Exception as exc:  # Textual's own checks; any failure means the file is unusable.
        raise ThemeFileError(f"{source}: Textual rejects this theme ({exc})") from None
    return theme


def load_theme_file(path: Path) -> Theme:
    """Parse one theme file; ``ThemeFileError`` with a one-line reason otherwise."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{path}: not valid TOML ({exc}): fix the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path}: cannot be read ({exc})") from None
    return theme_from_dict(data, str(path))


def load_themes(user_dir: Path | None = None) -> ThemeSet:
    """The built-in themes, then the user's (``*.toml``, sorted), later ones overriding by name."""
    found = ThemeSet()
    folders = [builtin_themes_dir(), paths.user_themes_dir() if user_dir is None else user_dir]
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeFileError as exc:
                found.problems.append(str(exc))
                continue
            found.themes[theme.name] = theme
    return found


def _color(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f'{where} must be a colour string like "#4FA3E0", got {value!r}')
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(
            f'{where}: {value!r} is not a colour: use "#RRGGBB", "rgb(r,g,b)" or a colour name'
        ) from None
    return value
