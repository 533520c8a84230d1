"""A search's events, and those of one kind among them, for the tests that drive ``Search``."""

from __future__ import annotations

from gaprune_tui.core.events import EvaluationFinished, GenerationFinished, RunEvent
from gaprune_tui.engine.search import Search


def run_search(search: Search) -> list[RunEvent]:
    """Run ``search`` to its end; every event it yielded, in order."""
    return list(search.run())


def finished(evs: list[RunEvent]) -> list[EvaluationFinished]:
    return [e for e in evs if isinstance(e, EvaluationFinished)]


def generations(evs: list[RunEvent]) -> list[GenerationFinished]:
    return [e for e in evs if isinstance(e, GenerationFinished)]
