"""Save SVG screenshots of every screen in every bundled theme, for the README.

    python scripts/screenshots.py RUN            # a real run: id, id prefix or run folder
    python scripts/screenshots.py --fake         # a made-up run from tests/fake_engine.py

The app is driven headless with Pilot (no terminal needed) and each screen is saved with
``app.save_screenshot`` as ``screenshots/<screen>-<theme>.svg``: setup, run, run-scores (the
per-task scores dialog), results and history. Deterministic mode is on (no ETA, no cursor blink),
so rerunning on the same run gives the same pictures. ``--fake`` writes into a temporary
GAPRUNE_HOME and never touches the user's runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _fake_runs() -> Path:
    """A finished run (the one shown) plus a crashed and a failed one for the history screen."""
    home = Path(tempfile.mkdtemp(prefix="gaprune-screenshots-"))
    os.environ["GAPRUNE_HOME"] = str(home)
    sys.path.insert(0, str(REPO / "tests"))
    from fake_engine import FakeEngine, fake_store, populate

    ended = [
        ("20260101-090000-c0de", 1, 25, FakeEngine.crash),
        ("20260101-100000-f00d", 2, 8, FakeEngine.fail),
    ]
    for run_id, seed, steps, end in ended:
        engine = FakeEngine(fake_store(run_id=run_id), seed=seed)
        engine.run(steps)
        end(engine)
    shown = fake_store(run_id="20260101-120000-demo")
    populate(shown)
    return shown.path


async def _shoot(
    run_path: Path,
    theme: str,
    screen: str,
    out: Path,
    size: tuple[int, int],
) -> Path:
    from gaprune_tui.core.store import RunStore
    from gaprune_tui.ui.app import GapruneApp

    app = GapruneApp(initial="setup")
    store = RunStore(run_path)
    openers: dict[str, Callable[[], None]] = {
        "setup": lambda: None,
        "run": lambda: app.open_run(store),
        "run-scores": lambda: app.open_run(store),
        "results": lambda: app.open_results(store),
        "history": app.open_history,
    }
    path = out / f"{screen}-{theme}.svg"
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        await pilot.pause()
        openers[screen]()
        await _settle(pilot.pause)
        if screen == "run-scores":
            await pilot.press("enter")  # the best-so-far row of the bitmap
            await _settle(pilot.pause)
        app.save_screenshot(filename=path.name, path=str(out))
    store.close()
    return path


async def _settle(pause: Callable[..., Awaitable[None]]) -> None:
    """Let mounts, first polls and quick workers (cache scan, history refresh) finish."""
    for _ in range(3):
        await pause(0.2)


async def _main(run_path: Path, out: Path, themes: list[str], size: tuple[int, int]) -> list[Path]:
    saved = []
    for theme in themes:
        for screen in ("setup", "run", "run-scores", "results", "history"):
            saved.append(await _shoot(run_path, theme, screen, out, size))
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run id, id prefix or run folder")
    parser.add_argument("--fake", action="store_true", help="use a made-up run (fake engine)")
    parser.add_argument("--out", type=Path, default=REPO / "screenshots")
    parser.add_argument("--theme", action="append", help="only these themes (repeatable)")
    parser.add_argument("--size", default="100x30", help="terminal WIDTHxHEIGHT (default 100x30)")
    args = parser.parse_args(argv)
    if bool(args.run) == args.fake:
        parser.error("give a RUN or --fake (not both)")
    os.environ["GAPRUNE_TUI_DETERMINISTIC"] = "1"
    width, _, height = args.size.partition("x")
    size = (int(width), int(height))

    from gaprune_tui.core.store import resolve_run
    from gaprune_tui.ui.themes import load_themes

    run_path = _fake_runs() if args.fake else resolve_run(args.run)
    themes = args.theme or sorted(load_themes().themes)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = asyncio.run(_main(run_path, args.out, themes, size))
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
