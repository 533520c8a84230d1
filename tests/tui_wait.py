"""Waiting in UI tests for a condition, not for a fixed time.

A fixed ``pilot.pause(0.6)`` against a 0.25 s poll passes on an idle machine and flakes on a loaded
one; ``until`` polls the condition every 50 ms and fails, naming what it waited for, only after a
generous timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


async def until(
    pilot: Any, condition: Callable[[], object], what: str, timeout: float = 30.0
) -> None:
    """Let the app run until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)
