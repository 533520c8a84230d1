"""The Textual app: themes, global keys and the moves between screens.

Screens talk to each other only through the app's ``open_*`` methods, so any screen can send the
user to a run, its results, the history or a new setup without knowing how the others are built.
The Run and Results screens are imported when first opened: the setup screen, which most sessions
start on, paints without loading them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.themes import BITMAP_DEFAULTS, DEFAULT_THEME, load_themes

INITIAL_SCREENS = ("setup", "history", "run", "results")


def deterministic_mode() -> bool:
    """``GAPRUNE_TUI_DETERMINISTIC=1``: no clocks, no ETA, no cursor blink (snapshot tests)."""
    return os.environ.get("GAPRUNE_TUI_DETERMINISTIC", "") not in ("", "0")


class GapruneApp(App[int]):
    """gaprune-tui. ``initial`` picks the first screen; ``run`` is a run id or folder for
    "run"/"results"; ``config`` pre-fills the setup form."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "gaprune-tui"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "toggle_help", "Help"),
        Binding("question_mark", "toggle_help", "Help", show=False),
        Binding("f9", "change_theme", "Theme"),
        Binding("q", "quit_app", "Quit", show=False),
        Binding("f10", "quit_app", "Quit"),
    ]

    def __init__(
        self, initial: str = "setup", run: str | None = None, config: RunConfig | None = None
    ) -> None:
        if initial not in INITIAL_SCREENS:
            raise ValueError(f"initial screen must be one of {INITIAL_SCREENS}, got {initial!r}")
        if initial in ("run", "results") and run is None:
            raise ValueError(f"the {initial!r} screen needs a run")
        super().__init__()
        self.deterministic = deterministic_mode()
        self.initial = initial
        self.run_ref = run
        self.initial_config = config
        found = load_themes()
        for theme in found.themes.values():
            self.register_theme(theme)
        self.theme_problems = found.problems
        if DEFAULT_THEME in self.available_themes:
            self.theme = DEFAULT_THEME  # before the first frame: no restyle after mount

    # ---- theme ---------------------------------------------------------------------------------
    def get_theme_variable_defaults(self) -> dict[str, str]:
        """Bitmap colours for themes that do not set them (Textual's own themes)."""
        return dict(BITMAP_DEFAULTS)

    def on_mount(self) -> None:
        for problem in self.theme_problems:
            self.notify(f"theme skipped: {problem}", severity="warning", timeout=10)
        self._open_initial()

    def _open_initial(self) -> None:
        if self.initial == "setup":
            self.open_setup(self.initial_config)
        elif self.initial == "history":
            self.open_history()
        else:
            assert self.run_ref is not None
            store = RunStore.open(self.run_ref)
            if self.initial == "results" or store.display_state().has_result:
                self.open_results(store)
            else:
                self.open_run(store)

    # ---- moving between screens ----------------------------------------------------------------
    def open_setup(self, config: RunConfig | None = None) -> None:
        """Back to the setup screen if it is on the stack, else a new one (optionally pre-filled)."""
        from gaprune_tui.ui.screens.setup import SetupScreen

        if config is None and self._pop_to(SetupScreen):
            return
        self.push_screen(SetupScreen(config))

    def open_history(self) -> None:
        from gaprune_tui.ui.screens.history import HistoryScreen

        if not self._pop_to(HistoryScreen):
            self.push_screen(HistoryScreen())

    def open_run(self, store: RunStore) -> None:
        """The live view of a run (attach): the engine keeps running whatever happens here. A run
        that is healing (or whose heal's engine died) opens on its results, where the heal is
        followed and resumed."""
        from gaprune_tui.ui.screens.run import RunScreen

        if store.meta().get("healing"):
            self.open_results(store)
            return
        self.push_screen(RunScreen(store))

    def open_results(self, store: RunStore) -> None:
        from gaprune_tui.ui.screens.results import ResultsScreen

        self.push_screen(ResultsScreen(store))

    def _pop_to(self, kind: type[Screen]) -> bool:
        """Pop screens until one of ``kind`` is on top; False (nothing popped) if none is stacked."""
        if not any(isinstance(s, kind) for s in self.screen_stack):
            return False
        while not isinstance(self.screen, kind):
            self.pop_screen()
        return True

    # ---- actions ---------------------------------------------------------------------------------
    def action_toggle_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_quit_app(self) -> None:
        """Quit at once, except on a screen that must ask first (the Run screen, whose search
        may still be running: it offers to leave it running detached or to stop it)."""
        ask = getattr(self.screen, "action_quit_run", None)
        if callable(ask):
            ask()
        else:
            self.exit(0)

    async def action_quit(self) -> None:
        """ctrl+q and the palette's Quit go through the same question as ``q``/F10."""
        self.action_quit_app()
