"""``gaprune-tui``: the command line (the TUI by default, and a headless CLI over the run store)."""

from gaprune_tui.cli.main import main

__all__ = ["main"]
