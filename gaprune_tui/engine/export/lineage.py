"""What the run says about an export: its genome, its scores, its config, its base model.

``plan_export`` reads the run store (read-only, so it works while the search is still running) and
fixes the ``ExportPlan``; ``build_lineage`` gathers everything the card and ``gaprune.json`` tell a
reader about where the pruned model came from and how to make it again.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gaprune_tui import __version__
from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format, stats
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ExportError, StoreError
from gaprune_tui.core.modelspec import (
    DEMO_SPEC,
    EMBEDDED_LICENSE,
    EXPORT_DTYPES,
    canonical_dtype,
    checkpoint_dtype,
    display_name,
    hub_id_of,
    read_config,
    resolve_spec,
)
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.core.units import describe, kv_cache, split
from gaprune_tui.engine.export.evidence import (
    Evidence,
    Ranking,
    confirmation_dict,
    ranking,
    read_evidence,
)
from gaprune_tui.engine.export.install import check_target
from gaprune_tui.engine.export.mergekit import MERGEKIT_FILE, contiguous_runs
from gaprune_tui.engine.export.plan import BaseScores, ExportPlan, Progress, SearchDtype
from gaprune_tui.engine.export.sublayer import MODELING_FILE, model_type, plan_layout
from gaprune_tui.engine.export.verify import Verification

LINEAGE_FILE = "gaprune.json"
RUN_CONFIG_FILE = "gaprune-run-config.toml"


def export_dtype(dtype: str | None, config: dict[str, Any], search: str | None = None) -> str:
    """The dtype to write: the one asked for (aliases allowed), else the one the search ran in
    (``search``, so that verification re-scores exactly what was searched), else the checkpoint's
    own."""
    if dtype is None:
        return search if search in EXPORT_DTYPES else checkpoint_dtype(config)
    value = canonical_dtype(dtype)
    if value not in EXPORT_DTYPES:
        raise ExportError(f"unknown export dtype {dtype!r}: use {', '.join(EXPORT_DTYPES)}")
    return value


def search_dtype(store: RunStore) -> SearchDtype:
    """What the engine recorded when it loaded the model: ``meta`` from the run's start (so a
    running or crashed run has it), else result.json (a run store from before the meta field)."""
    for source in (store.meta(), store.result() or {}):
        dtype = source.get("dtype")
        if isinstance(dtype, str) and dtype:
            reason = source.get("dtype_reason")
            return SearchDtype(dtype, reason if isinstance(reason, str) and reason else None)
    return SearchDtype()


def open_run(run: str | Path) -> RunStore:
    try:
        return RunStore.open(run)
    except StoreError as exc:
        raise ExportError(str(exc)) from None


def base_scores(store: RunStore) -> BaseScores:
    """The run's last ``base_scores`` event, or empty scores when the run has none."""
    found: dict[str, Any] | None = None
    for ev in store.events():
        if ev.kind == "base_scores":
            found = ev.payload
    if not found:
        return BaseScores()
    return BaseScores(found.get("scores"), found.get("fitness"))


def default_out(
    run_path: Path, rank: int, dropped: Sequence[int], granularity: str = "layer"
) -> Path:
    """``exports/rank1-drop-2-4`` (layers), or for sub-blocks ``rank1-drop-layer4-attn2-mlp1``."""
    if granularity == "sublayer":
        whole, attention, mlp = split(dropped, granularity)
        parts = [f"layer{i}" for i in whole] + [f"attn{i}" for i in attention]
        name = "-".join(parts + [f"mlp{i}" for i in mlp])
    else:
        name = "-".join(map(str, dropped))
    return Path(run_path) / "exports" / f"rank{rank}-drop-{name or 'none'}"


def _position(order: Ranking, dropped: Sequence[int] | None) -> int | None:
    """1-based position of the genome dropping ``dropped`` in ``order``; None if absent."""
    if dropped is None:
        return None
    want = sorted(int(i) for i in dropped)
    return next((i + 1 for i, e in enumerate(order.genomes) if e.dropped == want), None)


def _ranked_genome(
    store: RunStore, rank: int | None, evidence: Evidence, dropped: Sequence[int] | None = None
) -> tuple[Evaluation, int, Ranking]:
    """The genome at ``rank`` in the run's export order, or the one dropping ``dropped``; neither:
    result.json's pick (else rank 1)."""
    ranked = store.best_evaluations()
    if not ranked:
        raise ExportError(
            f"run {store.id} has no fully evaluated genome yet: wait for its first evaluation"
        )
    order = ranking(ranked, evidence)
    if dropped is not None:
        if rank is not None:
            raise ExportError("--rank and --drop both name a genome: pass only one of them")
        rank = _position(order, dropped)
        if rank is None:
            raise ExportError(
                f"run {store.id} has no fully evaluated genome dropping layers "
                f"{sorted(dropped)}: pick one that `gaprune-tui show {store.id}` lists"
            )
    if rank is None:
        rank = _position(order, evidence.default_dropped) or 1
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(ranked):
        raise ExportError(
            f"run {store.id} has only {len(ranked)} evaluated genomes: use --rank 1..{len(ranked)}"
        )
    return order.genomes[rank - 1], rank, order


def _source_dir(config: RunConfig) -> Path:
    """The local folder of the base model, without loading its weights (a GGUF converted once)."""
    from gaprune_tui.engine.model import local_folder

    return local_folder(resolve_spec(config.model))


def plan_export(
    store: RunStore,
    *,
    rank: int | None,
    dropped: Sequence[int] | None = None,
    out: Path | str | None,
    dtype: str | None,
    verify: bool,
    force: bool,
    progress: Progress,
    healed: str | None = None,
) -> ExportPlan:
    """Pick the genome and check the target before any work; then find the base model's folder.

    ``rank`` None is the run's recommended genome (result.json's ``dropped_layers``: the confirmed
    best when confirmation ran); ``rank`` N counts in the confirmed order when the run has
    confirmed finalists (see ``evidence``)."""
    evidence = read_evidence(store)
    heal = None
    if healed is not None:
        from gaprune_tui.engine.export.healed import heal_record

        if rank is not None or dropped is not None:
            raise ExportError("--healed names the genome already: drop --rank/--drop/--k")
        heal = heal_record(store, healed)
        dropped = heal["dropped"]
    default_pick = rank is None and dropped is None
    genome, rank, order = _ranked_genome(store, rank, evidence, dropped)
    note = order.describe(rank)
    if heal is not None:
        from gaprune_tui.engine.export.healed import healed_genome

        genome = healed_genome(genome, heal)
        note += f", healed ({heal['method']} / {heal['objective']}, {heal['tokens']:,} tokens)"
        if out is None:
            out = store.path / "exports" / f"healed-{heal['id']}"
    if default_pick:
        note += f", the run's pick ({evidence.picked_by or order.order} best)"
    config = store.config()
    granularity = config.granularity
    target = (
        Path(out).expanduser()
        if out
        else default_out(store.path, rank, genome.dropped, granularity)
    )
    target = target.resolve()
    check_target(target, force, protect=[store.path])
    if dtype is not None:
        export_dtype(dtype, {})
    drop = describe(genome.dropped, granularity) if granularity == "sublayer" else genome.dropped
    progress(
        "select",
        f"run {store.id}: {note}, drop {drop}, "
        f"fitness {format.score(genome.fitness, _fitness_stderr(genome, store))}",
    )
    source = _source_dir(config)
    source_config = read_config(source, ExportError)
    searched = search_dtype(store)
    return ExportPlan(
        run_id=store.id,
        run_path=store.path,
        run_state=store.state,
        config=config,
        rank=rank,
        ranking=order,
        genome=genome,
        source=source,
        source_config=source_config,
        out=target,
        verify=verify,
        force=force,
        dtype=export_dtype(dtype, source_config, searched.dtype),
        requested_dtype=dtype,
        searched=searched,
        order_note=note,
        default_pick=default_pick,
        evidence=evidence,
        heal=heal,
    )


def _fitness_stderr(genome: Evaluation, store: RunStore) -> float | None:
    return fitness_kinds.fitness_stderr(genome.scores, store.config().fitness)


def _kv_cache(plan: ExportPlan) -> dict[str, Any] | None:
    """The KV cache the genome keeps (``engine/speed.kv_cache``): the share of attention kept."""
    try:
        return kv_cache(plan.kept, plan.n_layers)
    except ValueError:
        return None


def _speed(plan: ExportPlan) -> dict[str, Any] | None:
    """The speed the engine measured when the run ended (result.json's ``speed``), where the
    exported genome is the one it timed (the run's pick); None otherwise."""
    try:
        result = json.loads((plan.run_path / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("dropped_layers") != list(plan.dropped):
        return None
    speed = result.get("speed")
    return speed if isinstance(speed, dict) else None


def build_lineage(
    plan: ExportPlan,
    base: BaseScores,
    sizes: dict[str, int | None],
    verification: Verification | None,
) -> dict[str, Any]:
    """Everything the card and ``gaprune.json`` say; ``sizes`` holds params_before/after, size_bytes."""
    config, genome = plan.config, plan.genome
    return {
        "gaprune_version": __version__,
        "base_model": {
            "spec": config.model,
            "name": display_name(config.model, plan.source),
            "path": str(plan.source),
            "hub_id": hub_id_of(config.model),
            "license": EMBEDDED_LICENSE if config.model == DEMO_SPEC else None,
            "model_type": plan.source_config.get("model_type"),
            "n_layers": plan.n_layers,
        },
        # The genome as the run stores it: layers, or sub-block units and path codes
        # (``granularity`` sublayer, see core/units.py); ``dropped_split`` in base layers.
        "granularity": plan.granularity,
        "dropped_layers": genome.dropped,
        "kept_layers": genome.kept,
        "dropped_text": describe(genome.dropped, plan.granularity),
        "dropped_split": dict(
            zip(
                ("layers", "attention", "mlp"), split(genome.dropped, plan.granularity), strict=True
            )
        ),
        "dtype": plan.dtype,
        "search_dtype": plan.searched.dtype,
        "search_dtype_reason": plan.searched.reason,
        "params_before": sizes["params_before"],
        "params_after": sizes["params_after"],
        "kv_cache": _kv_cache(plan),
        "speed": _speed(plan),
        "size_bytes": sizes["size_bytes"],
        "scores": {"pruned": genome.scores, "base": base.scores},
        "fitness": fitness_lineage(config.fitness, genome, base),
        "confirmation": confirmation_lineage(plan),
        "baselines": baselines_lineage(plan, base),
        "run": {
            "id": plan.run_id,
            "path": str(plan.run_path),
            "rank": plan.rank,
            "order": plan.ranking.order,
            "order_note": plan.order_note,
            "default_pick": plan.default_pick,
            "picked_by": plan.evidence.picked_by,
            "evaluated_genomes": len(plan.ranking.genomes),
            "generation": genome.generation,
            "state": plan.run_state,
        },
        "config": config.to_dict(),
        "config_toml": config.to_toml(),
        "verification": asdict(verification) if verification else None,
        "verified": verification.passed if verification else None,
        "reproduce": reproduce_commands(
            config, None if plan.default_pick else plan.rank, plan.requested_dtype
        ),
        "mergekit": None
        if plan.sub_blocks
        else {"config": MERGEKIT_FILE, "slices": contiguous_runs(genome.kept)},
        "sub_blocks": sub_block_lineage(plan) if plan.sub_blocks else None,
        "heal": _heal_part(plan),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# Where a sub-block export loads, and where it does not (the card says why).
SUB_BLOCK_LOADS_WITH = ["transformers (AutoModelForCausalLM, trust_remote_code=True)"]
SUB_BLOCK_FAILS_WITH = [
    "transformers without trust_remote_code",
    "vLLM",
    "TGI",
    "llama.cpp / GGUF conversion",
    "MergeKit",
]


def sub_block_lineage(plan: ExportPlan) -> dict[str, Any]:
    """What a sub-block export removed (base layers), how its config names it (export layers)
    and which runtimes load it."""
    layout = plan_layout(plan.source_config, plan.kept, plan.source / "config.json")
    return {
        "model_type": model_type(layout.family),
        "modeling_file": MODELING_FILE,
        "removed_layers": layout.removed_layers,
        "removed_attention": layout.removed_attention,
        "removed_mlp": layout.removed_mlp,
        "kept_base_layers": [i for i, _ in layout.layers],
        "gaprune_dropped_attention": layout.dropped_attention,
        "gaprune_dropped_mlp": layout.dropped_mlp,
        "loads_with": SUB_BLOCK_LOADS_WITH,
        "does_not_load_with": SUB_BLOCK_FAILS_WITH,
    }


def _heal_part(plan: ExportPlan) -> dict[str, Any] | None:
    if plan.heal is None:
        return None
    from gaprune_tui.engine.export.healed import heal_lineage

    return heal_lineage(plan.heal)


def _verdict(
    value: float | None,
    stderr: float | None,
    base: float | None,
    base_stderr: float | None,
    kind: str,
) -> dict[str, Any]:
    """``vs_base`` (``core.fitness.verdict``: two standard errors), the difference and its
    standard error; ``vs_base`` None when either value is missing."""
    if value is None or base is None:
        return {"vs_base": None, "diff": None, "diff_stderr": None}
    se = None if stderr is None or base_stderr is None else stats.diff_stderr(stderr, base_stderr)
    return {
        "vs_base": fitness_kinds.verdict(value, stderr, base, base_stderr, kind),
        "diff": value - base,
        "diff_stderr": se,
    }


def fitness_lineage(kind: str, genome: Evaluation, base: BaseScores) -> dict[str, Any]:
    """The search's fitness of the genome and of the base model, with standard errors and the
    verdict against the base model."""
    se = fitness_kinds.fitness_stderr(genome.scores, kind)
    base_se = None if base.scores is None else fitness_kinds.fitness_stderr(base.scores, kind)
    return {
        "kind": kind,
        "label": fitness_kinds.label(kind),
        "higher_is_better": fitness_kinds.higher_is_better(kind),
        "pruned": genome.fitness,
        "pruned_stderr": se,
        "base": base.fitness,
        "base_stderr": base_se,
        **_verdict(genome.fitness, se, base.fitness, base_se, kind),
    }


def with_verdicts(row: dict[str, Any] | None, base: dict[str, Any] | None) -> dict[str, Any] | None:
    """A confirmation row with ``confirmed_vs_base`` / ``holdout_vs_base`` (and differences):
    confirmation scores tasks, so higher is better whatever the search's fitness."""
    if row is None:
        return None
    out = dict(row)
    for key in ("confirmed", "holdout"):
        b = base or {}
        judged = _verdict(
            row[key], row[f"{key}_stderr"], b.get(key), b.get(f"{key}_stderr"), "mean"
        )
        out.update({f"{key}_{name}": value for name, value in judged.items()})
    return out


def confirmation_lineage(plan: ExportPlan) -> dict[str, Any] | None:
    """The latest confirmation: its settings, the exported genome's and the base model's
    confirmed and held-out scores; None when the run confirmed neither."""
    evidence = plan.evidence
    mine = evidence.confirmation_of(plan.dropped, "finalist") or evidence.confirmation_of(
        plan.dropped, "any"
    )
    base = confirmation_dict(evidence.base)
    if mine is None and base is None:
        return None
    settings = dict((evidence.result or {}).get("confirmation") or {})
    if evidence.started is not None:
        settings.update(
            limit=evidence.started.confirm_limit,
            tasks=evidence.started.tasks,
            holdout_tasks=evidence.started.holdout_tasks,
        )
    return {
        "limit": settings.get("limit"),
        "tasks": settings.get("tasks", [t.name for t in plan.config.tasks]),
        "holdout_tasks": settings.get("holdout_tasks", []),
        "noise_z": settings.get("noise_z", stats.NOISE_Z),
        "kind": fitness_kinds.task_kind(plan.config.fitness),
        "pruned": with_verdicts(confirmation_dict(mine), base),
        "base": base,
    }


def baselines_lineage(plan: ExportPlan, base: BaseScores) -> list[dict[str, Any]]:
    """The one-shot baselines as reference rows: the search's fitness and the confirmation."""
    kind, evidence = plan.config.fitness, plan.evidence
    base_conf = confirmation_dict(evidence.base)
    rows = []
    for ref in evidence.references:
        genome = Evaluation(0, list(ref.dropped), [], ref.fitness, ref.scores, 0.0, False)
        fit = fitness_lineage(kind, genome, base)
        conf = with_verdicts(
            confirmation_dict(evidence.confirmation_of(ref.dropped, "baseline")), base_conf
        )
        rows.append(
            {
                "name": ref.name,
                "signal": ref.signal,
                "dropped_layers": list(ref.dropped),
                "fitness": ref.fitness,
                "fitness_stderr": fit["pruned_stderr"],
                "fitness_vs_base": fit["vs_base"],
                "scores": ref.scores,
                "confirmation": conf,
            }
        )
    return rows


def reproduce_commands(config: RunConfig, rank: int | None, dtype: str | None) -> list[str]:
    """The ``gaprune-tui run`` flags of the config (or the shipped TOML) and the export command
    (``rank`` None: the run's own pick, no ``--rank``).

    The flags that define the search are always spelled out, so the line still reproduces the run
    if a default changes; the rest only when they differ from the default.
    """
    default = RunConfig()
    always: tuple[str, ...] = ("model", "limit", "num_fewshot", "prune", "protect")
    always += ("population", "generations", "seed", "fitness", "algorithm", "init")
    expressible = all(t.num_fewshot is None and t.limit is None for t in config.tasks)
    if expressible:
        tasks = ",".join(t.name + (f":{t.metric}" if t.metric else "") for t in config.tasks)
        parts = [
            "gaprune-tui run",
            f"--model {shlex.quote(config.model)}",
            f"--tasks {shlex.quote(tasks)}",
        ]
        for key, value in config.to_dict().items():
            if key in ("model", "tasks", "include_path", "trust_remote_code", "prefix_cache"):
                continue
            if key in always or value != getattr(default, key):
                text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
                parts.append(f"--{key.replace('_', '-')} {shlex.quote(text or 'none')}")
        parts.extend(f"--include-path {shlex.quote(p)}" for p in config.include_path)
        if config.trust_remote_code:
            parts.append("--trust-remote-code")
        if not config.prefix_cache:
            parts.append("--no-prefix-cache")
        run_cmd = " ".join(parts)
    else:
        run_cmd = f"gaprune-tui run --config {RUN_CONFIG_FILE}"
    export_cmd = "gaprune-tui export RUN_ID" + (f" --rank {rank}" if rank is not None else "")
    if dtype:
        export_cmd += f" --dtype {dtype}"
    return [run_cmd, export_cmd]
