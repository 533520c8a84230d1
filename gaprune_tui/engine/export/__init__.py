"""Export a genome as a standalone Hugging Face model through MergeKit: verified, atomic, documented.

One module per job around one ``ExportPlan`` (``plan``): ``mergekit`` (passthrough configuration
and the per-layer config adapter), ``install`` (target checks, partial folder, atomic rename,
failed marker), ``verify`` (logits, generate, re-score against the layer view), ``card`` (the model
card), ``lineage`` (what the run says), ``evidence`` (confirmations, baselines and the order
``--rank`` counts in: confirmed finalists first), ``genome`` (``export_genome``: merge + install),
``sublayer`` (``write_sublayer``/``export_sublayer``: a genome that removes attention or MLP
sub-blocks alone, written without MergeKit with the ``modeling_gaprune.py`` it ships) and ``run``
(``export_run``: a run's pick or its N-th genome, verified and documented). Progress is
one protocol, ``Progress(stage, message)``.
"""

from __future__ import annotations

from gaprune_tui.core.modelspec import EXPORT_DTYPES
from gaprune_tui.engine.export.card import CARD_FILE, render_card
from gaprune_tui.engine.export.evidence import (
    CONFIRMED_ORDER,
    SEARCH_ORDER,
    Evidence,
    Ranking,
    ranking,
    read_evidence,
)
from gaprune_tui.engine.export.genome import export_genome
from gaprune_tui.engine.export.install import FAILED_FILE, check_target, folder_size, partial_dir
from gaprune_tui.engine.export.lineage import (
    LINEAGE_FILE,
    RUN_CONFIG_FILE,
    default_out,
    reproduce_commands,
)
from gaprune_tui.engine.export.mergekit import (
    MERGEKIT_FILE,
    PER_LAYER_CONFIG_FIELDS,
    contiguous_runs,
    mergekit_config,
    per_layer_config_adapter,
    slice_per_layer_fields,
)
from gaprune_tui.engine.export.plan import BaseScores, ExportPlan, Progress
from gaprune_tui.engine.export.run import ExportResult, export_run
from gaprune_tui.engine.export.sublayer import MODELING_FILE, export_sublayer, write_sublayer
from gaprune_tui.engine.export.verify import Verification, fitness_of, scores_equal

__all__ = [
    "CARD_FILE",
    "CONFIRMED_ORDER",
    "EXPORT_DTYPES",
    "FAILED_FILE",
    "LINEAGE_FILE",
    "MERGEKIT_FILE",
    "MODELING_FILE",
    "PER_LAYER_CONFIG_FIELDS",
    "RUN_CONFIG_FILE",
    "SEARCH_ORDER",
    "BaseScores",
    "Evidence",
    "ExportPlan",
    "ExportResult",
    "Progress",
    "Ranking",
    "Verification",
    "check_target",
    "contiguous_runs",
    "default_out",
    "export_genome",
    "export_run",
    "export_sublayer",
    "fitness_of",
    "folder_size",
    "mergekit_config",
    "partial_dir",
    "per_layer_config_adapter",
    "ranking",
    "read_evidence",
    "reproduce_commands",
    "render_card",
    "scores_equal",
    "slice_per_layer_fields",
    "write_sublayer",
]
