"""The one object an export is built around: which genome of which run goes where, and how.

``ExportPlan`` is decided before any work (the genome, the target folder checked, the source folder
resolved, the dtype named), so every later step reads the same facts instead of passing eight
positional parameters. Progress is one protocol, ``Progress(stage, message)``, always given the
stage, so the CLI's JSON mode and its human mode take the same callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.store import Evaluation
from gaprune_tui.core.units import split, whole_layers
from gaprune_tui.engine.export.evidence import Evidence, Ranking

Progress = Callable[[str, str], None]
"""``progress(stage, message)``: stage is select, load, base, reference, merge, verify, rescore,
card or done; message is one line for a person."""


def silent(stage: str, message: str) -> None:
    """The progress callback of an export nobody watches."""


def is_sub_block_export(granularity: str, dropped: Sequence[int]) -> bool:
    """Whether a genome needs a sub-block export (``sublayer.py``): a ``sublayer`` genome that
    drops some layer's attention or MLP alone. One of whole layers only goes through MergeKit."""
    return granularity == "sublayer" and whole_layers(dropped, "sublayer") is None


@dataclass(frozen=True)
class SearchDtype:
    """The dtype the run's search computed in and why (the engine's ``meta``, else result.json);
    both ``None`` for a run that never loaded its model."""

    dtype: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ExportPlan:
    """The genome to export and everything fixed about the export before it starts."""

    run_id: str
    run_path: Path
    run_state: str
    config: RunConfig
    rank: int
    # The genomes ``rank`` counts through (the run's fully evaluated ones) and in which order.
    ranking: Ranking
    genome: Evaluation
    source: Path
    source_config: dict[str, Any]
    out: Path
    dtype: str
    requested_dtype: str | None
    verify: bool
    force: bool
    # ``rank`` said as a person reads it, whether the genome is the run's default pick (no
    # --rank), and the confirmation evidence for the card.
    order_note: str = ""
    default_pick: bool = False
    evidence: Evidence = field(default_factory=Evidence)
    # The dtype the search computed in and its reason, as the engine recorded them: the export's
    # default dtype, and the one whose scores verification must reproduce.
    searched: SearchDtype = field(default_factory=SearchDtype)
    # A healed export (``export --healed ID``): the heal's record (``heals/ID/heal.json``); the
    # genome's fitness and scores are then the healed model's.
    heal: dict[str, Any] | None = None

    @property
    def kept(self) -> list[int]:
        return self.genome.kept

    @property
    def dropped(self) -> list[int]:
        return self.genome.dropped

    @property
    def granularity(self) -> str:
        return self.config.granularity

    @property
    def n_layers(self) -> int:
        """The base model's layer count: every layer is either on the kept path (whole or with
        one sub-block) or dropped whole."""
        whole, _, _ = split(self.genome.dropped, self.granularity)
        return len(self.genome.kept) + len(whole)

    @property
    def sub_blocks(self) -> bool:
        """Whether the genome drops some layer's attention or MLP alone: written by
        ``sublayer.export_sublayer`` and loaded with ``trust_remote_code=True``, not MergeKit's
        passthrough (a ``sublayer`` genome of whole layers only goes through MergeKit)."""
        return is_sub_block_export(self.granularity, self.genome.dropped)


@dataclass(frozen=True)
class BaseScores:
    """The unpruned model's scores and fitness, from the run's ``base_scores`` event or re-scored."""

    scores: dict[str, dict[str, float | None]] | None = None
    fitness: float | None = None
