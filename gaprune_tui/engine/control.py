"""The engine's one stop signal, in a module light enough for the worker to import at start."""

from __future__ import annotations


class StopRequested(Exception):
    """A stop request was honoured: raised between evaluations (the worker's control check) or
    between scoring batches (``should_stop()`` in the scorer); the worker marks the run stopped."""
