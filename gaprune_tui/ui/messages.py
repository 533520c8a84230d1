"""Messages that the UI's thread workers post back to their screens.

Workers never touch widgets: they compute in a thread and post one of these, and the screen
applies it on the event loop. Each carries what the request was for, so a late answer to an old
request (the user kept typing) is recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from gaprune_tui.core.estimate import TimingSample
from gaprune_tui.core.modelinfo import ModelInfo


@dataclass
class ModelInspected(Message):
    """The model field's spec was inspected: ``info`` (a ``modelinfo.ModelInfo``) or ``error``."""

    spec: str
    info: ModelInfo | None = None
    error: str | None = None


@dataclass
class CacheScanned(Message):
    """Models found in the Hugging Face cache (``modelinfo.ModelInfo`` objects)."""

    models: list[ModelInfo] = field(default_factory=list)
    error: str | None = None


@dataclass
class TimingsMeasured(Message):
    """Seconds per scored item measured in past runs of ``model`` (for the cost preview)."""

    model: str
    samples: list[TimingSample] = field(default_factory=list)
