"""The CLI's entry into the TUI: ``run_tui()`` opens the app on the screen the command asks for.

Kept apart from ``app.py`` so the CLI can resolve a run id (and fail with a one-line error and
exit 2, before any terminal setup) without knowing the app's internals.
"""

from __future__ import annotations

from gaprune_tui.core.store import resolve_run


def run_tui(initial: str = "setup", run: str | None = None) -> int:
    """Run the app until it exits and return its exit code.

    ``initial`` is "setup" (no arguments), "history", or "run" with ``run`` set (``attach RUN``:
    the Run screen, or the Results screen when that run has already ended). An unknown run raises
    ``StoreError`` before the terminal is touched, so the CLI prints it like any other error.
    """
    from gaprune_tui.ui.app import GapruneApp

    run_path = str(resolve_run(run)) if run is not None else None
    app = GapruneApp(initial=initial, run=run_path)
    app.run()
    return app.return_code or 0
