"""``export_run``: the N-th best genome of a run, exported, verified and documented.

The steps, each a function: plan (pick the genome, check the target, find the base model), prepare
the verification (base model loaded once, its reference kept), merge and install through
``export_genome`` (MergeKit; a genome that drops attention or MLP sub-blocks alone:
``sublayer.export_sublayer``) with a ``Finalizer`` that verifies and writes the card into the
partial folder, and record ``export_finished`` (or ``export_failed``) in the run store.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.modelspec import first_line, safetensors_params
from gaprune_tui.core.store import RunStore
from gaprune_tui.engine.export.card import CARD_FILE, render_card
from gaprune_tui.engine.export.genome import export_genome
from gaprune_tui.engine.export.install import folder_size
from gaprune_tui.engine.export.lineage import (
    LINEAGE_FILE,
    RUN_CONFIG_FILE,
    base_scores,
    build_lineage,
    open_run,
    plan_export,
)
from gaprune_tui.engine.export.plan import BaseScores, ExportPlan, Progress, silent
from gaprune_tui.engine.export.sublayer import export_sublayer, plan_layout
from gaprune_tui.engine.export.verify import Prepared, Verification, prepare, verify


@dataclass
class ExportResult:
    """What ``export_run`` produced; also written to ``gaprune.json`` (with more lineage).

    Which genome, its rank, order and dtype are the ``plan``'s; the rest is what the export found.
    """

    plan: ExportPlan
    path: Path
    params_before: int | None
    params_after: int | None
    size_bytes: int
    verification: Verification | None
    seconds: float
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool | None:
        """The verification's verdict; None when the export was not verified."""
        return self.verification.passed if self.verification else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "run_id": self.plan.run_id,
            "rank": self.plan.rank,
            "order": self.plan.ranking.order,
            "dropped": self.plan.dropped,
            "kept": self.plan.kept,
            "dtype": self.plan.dtype,
            "fitness": self.plan.genome.fitness,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "size_bytes": self.size_bytes,
            "verified": self.verified,
            "verification": asdict(self.verification) if self.verification else None,
            "seconds": round(self.seconds, 2),
        }


def stored_params(folder: Path) -> int | None:
    """Parameters in a folder's safetensors headers (no weights read); None without safetensors."""
    files = sorted(Path(folder).glob("*.safetensors"))
    return safetensors_params(files) if files else None


@dataclass
class Finalizer:
    """Runs on the finished partial folder: verify (if planned), then write the card and lineage.

    An object rather than a closure so what it found (the verification, the lineage) is read back
    as attributes once ``export_genome`` returns.
    """

    plan: ExportPlan
    base: BaseScores
    params_before: int | None
    prepared: Prepared | None
    progress: Progress
    verification: Verification | None = None
    lineage: dict[str, Any] = field(default_factory=dict)

    def __call__(self, folder: Path) -> None:
        if self.plan.heal is not None:
            from gaprune_tui.engine.export.healed import apply_healed, load_tensors

            tensors = load_tensors(self.plan.run_path, self.plan.heal["id"])
            self.progress("heal", f"writing {len(tensors)} healed tensors over the pruned model")
            apply_healed(folder, tensors, self.plan.dtype)
        if self.prepared is not None:
            self.verification = verify(
                folder, self.prepared, self.plan.config, self.plan.genome, self.progress
            )
            if not self.verification.passed:
                raise ExportError(f"verification failed: {self.verification.summary()}")
        self.progress("card", "writing the model card and gaprune.json")
        sizes = {
            "params_before": self.params_before,
            "params_after": stored_params(folder),
            "size_bytes": folder_size(folder),
        }
        self.lineage = build_lineage(self.plan, self.base, sizes, self.verification)
        config = self.plan.config
        (folder / RUN_CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
        text = json.dumps(self.lineage, indent=2) + "\n"
        (folder / LINEAGE_FILE).write_text(text, encoding="utf-8")
        (folder / CARD_FILE).write_text(render_card(self.lineage), encoding="utf-8")


def export_run(
    run: str | Path,
    *,
    rank: int | None = None,
    dropped: Sequence[int] | None = None,
    out: Path | str | None = None,
    dtype: str | None = None,
    verify: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    healed: str | None = None,
) -> ExportResult:
    """Export the ``rank``-th distinct genome of ``run`` (full fidelity) and verify it.

    ``rank`` None exports the run's pick (result.json's ``dropped_layers``: the confirmed best when
    confirmation ran, else the search's best); ``rank`` N counts in the confirmed order when the
    run has confirmed finalists, else in the search's ranking (``evidence.ranking``); ``dropped``
    names the genome by its dropped layers instead (what a screen that lists genomes passes, so
    it cannot depend on the order)."""
    started = time.perf_counter()
    report = progress or silent
    store = open_run(run)
    plan: ExportPlan | None = None
    try:
        plan = plan_export(
            store,
            rank=rank,
            dropped=dropped,
            out=out,
            dtype=dtype,
            verify=verify,
            force=force,
            progress=report,
            healed=healed,
        )
        return _execute(store, plan, report, started)
    except BaseException as exc:
        failed_rank = plan.rank if plan is not None else rank if rank is not None else 1
        with contextlib.suppress(Exception):
            store.add_event("export_failed", rank=failed_rank, error=first_line(exc))
        raise
    finally:
        store.close()


def _execute(store: RunStore, plan: ExportPlan, progress: Progress, started: float) -> ExportResult:
    if plan.sub_blocks:  # refuse an unsupported family or path before loading any model
        plan_layout(plan.source_config, plan.kept, plan.source / "config.json")
    base = base_scores(store)
    params_before = stored_params(plan.source)
    prepared = None
    if plan.verify:
        prepared = prepare(plan, base, params_before, progress)
        base, params_before = prepared.base, prepared.params_before
    finalizer = Finalizer(plan, base, params_before, prepared, progress)
    if plan.sub_blocks:
        # MergeKit keeps or drops whole layers only: a genome that drops some layer's attention
        # or MLP alone is written by the sub-block writer, through the same install flow.
        path = export_sublayer(
            plan.source,
            plan.kept,
            plan.out,
            dtype=plan.dtype,
            force=plan.force,
            progress=progress,
            finalize=finalizer,
        )
    else:
        path = export_genome(
            plan.source,
            plan.kept,
            plan.out,
            dtype=plan.dtype,
            force=plan.force,
            progress=progress,
            trust_remote_code=plan.config.trust_remote_code,
            finalize=finalizer,
            spec=plan.config.model,
        )
    result = ExportResult(
        plan=plan,
        path=path,
        params_before=params_before,
        params_after=finalizer.lineage["params_after"],
        size_bytes=folder_size(path),
        verification=finalizer.verification,
        seconds=time.perf_counter() - started,
        lineage=finalizer.lineage,
    )
    _record_finished(store, result)
    return result


def _record_finished(store: RunStore, result: ExportResult) -> None:
    plan, ver = result.plan, result.verification
    store.add_event(
        "export_finished",
        path=str(result.path),
        rank=plan.rank,
        dropped=plan.dropped,
        kept=plan.kept,
        dtype=plan.dtype,
        fitness=plan.genome.fitness,
        verified=result.verified,
        summary=ver.summary() if ver else "not verified (--no-verify)",
        params_before=result.params_before,
        params_after=result.params_after,
        size_bytes=result.size_bytes,
    )
