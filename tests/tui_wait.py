"""Opening the app in UI tests, and waiting for a condition (in UI and CLI tests), not for a fixed
time.

A fixed ``pilot.pause(0.6)`` against a 0.25 s poll passes on an idle machine and flakes on a loaded
one; ``until`` polls the condition every 50 ms and fails, naming what it waited for, only after a
generous timeout. ``opened`` is the one way the screen tests start the app: at the size the
screens are designed for, on the screen they test, checked to be that screen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from textual.app import App
from textual.screen import Screen

SIZE = (100, 30)
S = TypeVar("S", bound=Screen)


def _polls(condition: Callable[[], object], what: str, timeout: float) -> Iterator[None]:
    """Yield until ``condition()`` is true; fail the test, naming ``what``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        yield


async def until(
    pilot: Any, condition: Callable[[], object], what: str, timeout: float = 30.0
) -> None:
    """Let the app run until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    for _ in _polls(condition, what, timeout):
        await pilot.pause(0.05)


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = 300.0, every: float = 0.05
) -> None:
    """The same outside an app (a CLI or engine child process): poll every ``every`` seconds."""
    for _ in _polls(condition, what, timeout):
        time.sleep(every)


async def settle(pilot: Any) -> None:
    """Let the screen's thread workers (model inspection, cache scan, task names) answer."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def key(pilot: Any, name: str) -> None:
    """Press the key ``name`` and let the app answer it (one frame)."""
    await pilot.press(name)
    await pilot.pause()


def screen_of(app: App, kind: type[S], ident: str) -> S:
    """The app's current screen, checked to be a ``kind`` whose id is ``ident``."""
    screen = app.screen
    assert isinstance(screen, kind)
    assert screen.id == ident
    return screen


@asynccontextmanager
async def opened(
    app: App, kind: type[S], ident: str, *, settled: bool = False, **run_test: Any
) -> AsyncIterator[tuple[Any, S]]:
    """Run ``app`` (at ``SIZE`` unless ``size`` is given) and hand over its pilot and its current
    screen, checked as ``screen_of`` does, after one frame; ``settled`` also waits for the
    screen's thread workers."""
    run_test.setdefault("size", SIZE)
    async with app.run_test(**run_test) as pilot:
        await (settle(pilot) if settled else pilot.pause())
        yield pilot, screen_of(app, kind, ident)
