"""The key under (or above) a chart drawn as rich ``Text``: the layer bitmap's and the fitness
chart's, written the same way."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text


def append_legend(text: Text, *keys: tuple[str, Style, str]) -> None:
    """Append a chart's key to ``text``: each glyph in its style, then what it stands for, two
    spaces between keys. The glyphs differ in shape, so the key reads without colour as well."""
    for i, (glyph, style, meaning) in enumerate(keys):
        text.append(glyph, style)
        text.append(f" {meaning}" + ("  " if i < len(keys) - 1 else ""))
