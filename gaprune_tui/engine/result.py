"""``result.json``: what a finished run found, with the numbers that say how far to trust it.

Every score carries its standard error (per task ``{metric: v, metric_stderr: se, n: items}``,
fitnesses as ``fitness`` / ``fitness_stderr``), and each finalist and baseline says whether its
difference from the base model is beyond noise (two standard errors of the difference) on the
search's fitness, on the confirmation and on the held-out tasks.

The recommended genome (``dropped_layers``) is the confirmed best finalist when confirmation ran
(ranked by the confirmed task score, on more items than the search saw), else the search's best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import pareto, stats
from gaprune_tui.core.events import (
    BaseScores,
    ConfirmationStarted,
    GenomeConfirmed,
    ReferenceScored,
)
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.engine.backends import backend_result as _backend_result

if TYPE_CHECKING:
    from gaprune_tui.core.config import RunConfig
    from gaprune_tui.engine.setup import Setup


def _confirmation(c: GenomeConfirmed | None, base: GenomeConfirmed | None) -> dict[str, Any]:
    """The confirmed and held-out numbers of one genome, with verdicts against the base model."""
    if c is None:
        return {}
    out = c.numbers()
    if base is not None and c.role != "base":
        for key in ("confirmed", "holdout"):
            value, se = getattr(c, key), getattr(c, f"{key}_stderr")
            base_value, base_se = getattr(base, key), getattr(base, f"{key}_stderr")
            if value is not None and base_value is not None:
                # Confirmation scores tasks: higher is better whatever the search's fitness.
                out[f"{key}_vs_base"] = fitness_kinds.verdict(
                    value, se, base_value, base_se, "mean"
                )
    return out


@dataclass
class _Judge:
    """What every genome row of result.json is judged with: the fitness kind, the base model's
    search scores and its confirmation, and the parameter count of each layer."""

    kind: str
    base: BaseScores
    base_conf: GenomeConfirmed | None
    per_layer: list[int]

    def genome(self, dropped: list[int], fitness: float, scores: dict[str, Any]) -> dict[str, Any]:
        """A genome's search numbers, with its verdict against the base model."""
        kind, base = self.kind, self.base
        se = fitness_kinds.fitness_stderr(scores, kind)
        base_se = fitness_kinds.fitness_stderr(base.scores, kind)
        return {
            "dropped_layers": dropped,
            "fitness": fitness,
            "fitness_stderr": se,
            "fitness_vs_base": fitness_kinds.verdict(fitness, se, base.fitness, base_se, kind),
            "scores": scores,
            "params_removed": sum(self.per_layer[i] for i in dropped),
        }

    def confirmation(self, c: GenomeConfirmed | None) -> dict[str, Any]:
        return _confirmation(c, self.base_conf)


def _by_genome(confirmations: list[GenomeConfirmed], role: str) -> dict[tuple[int, ...], Any]:
    return {tuple(c.dropped): c for c in confirmations if c.role == role}


def pareto_front(store: RunStore, config: RunConfig) -> list[pareto.FrontPoint]:
    """A Pareto run's front from its stored full evaluations, each point's scores in
    ``extra["scores"]``: the same front its generations announced (the best genome per k)."""
    full = [e for e in store.evaluations() if e.fidelity == "full"]
    front = pareto.per_k_best([(e.dropped, e.fitness) for e in full], config.fitness, config.ks)
    scores = {tuple(e.dropped): e.scores for e in full}
    for point in front:
        point.extra["scores"] = scores[tuple(point.dropped)]
    return front


def _front_rows(
    front: list[pareto.FrontPoint],
    knee: pareto.FrontPoint | None,
    confirmations: list[GenomeConfirmed],
    references: list[ReferenceScored],
    judge: _Judge,
) -> list[dict[str, Any]]:
    """result.json's ``front``: one row per k, with its standard error, its verdict against the
    base model, its confirmation where that ran, and the best one-shot baseline at the same k
    with the member's verdict against it (a search that lost to a one-pass heuristic says so)."""
    confirmed = _by_genome(confirmations, "finalist")
    return [
        {
            "k": p.k,
            **judge.genome(p.dropped, p.fitness, p.extra.get("scores", {})),
            "dominated": p.dominated,
            "knee": knee is not None and p.k == knee.k,
            **judge.confirmation(confirmed.get(tuple(p.dropped))),
            **_best_baseline(p, references, judge.kind),
        }
        for p in front
    ]


def _best_baseline(
    point: pareto.FrontPoint, references: list[ReferenceScored], kind: str
) -> dict[str, Any]:
    """The best baseline dropping as many layers as ``point``, and the verdict of the point
    against it on the search's fitness (``better`` means the front member is better)."""
    same = [r for r in references if len(r.dropped) == point.k]
    if not same:
        return {}
    best = min(same, key=lambda r: fitness_kinds.rank_key(r.fitness, kind))
    se = fitness_kinds.fitness_stderr(point.extra.get("scores", {}), kind)
    best_se = fitness_kinds.fitness_stderr(best.scores, kind)
    return {
        "best_baseline": best.name,
        "best_baseline_fitness": best.fitness,
        "best_baseline_fitness_stderr": best_se,
        "vs_best_baseline": fitness_kinds.verdict(point.fitness, se, best.fitness, best_se, kind),
    }


def _setup_part(setup: Setup) -> dict[str, Any]:
    """What the run scored with: the model, its dtype and device, the tasks, the fitness kind and
    the calibration text."""
    loaded, kind = setup.loaded, setup.config.fitness
    return {
        "model": loaded.name,
        "model_source": str(loaded.source),
        "n_layers": loaded.n_layers,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "dtype_reason": loaded.dtype_reason,
        "device": loaded.device.type,
        "tasks": [
            {"name": t.name, "metric": t.metric, "num_fewshot": t.num_fewshot, "limit": t.limit}
            for t in setup.taskset.tasks
        ],
        "fitness_kind": kind,
        "fitness_function": kind,
        "higher_is_better": fitness_kinds.higher_is_better(kind),
        "calibration": {
            "spec": setup.calibration.spec,
            "description": setup.calibration.description,
            "tokens": int(setup.calibration.input_ids.numel()),
        },
    }


def _pareto_result(
    store: RunStore,
    config: RunConfig,
    references: list[ReferenceScored],
    confirmations: list[GenomeConfirmed],
    judge: _Judge,
) -> tuple[pareto.FrontPoint | None, dict[str, Any]]:
    """A Pareto run's knee (its recommendation; every k stays exportable with ``--k``) and its
    result.json keys: objective, range, knee_k and the front's rows."""
    front = pareto_front(store, config)
    knee = pareto.knee(front, config.fitness)
    rows = _front_rows(front, knee, confirmations, references, judge)
    return knee, {
        "objective": config.objective,
        "prune_range": config.prune_range,
        "knee_k": knee.k if knee is not None else None,
        "front": rows,
    }


def recommended(
    ranked: list[Evaluation], confirmations: list[GenomeConfirmed]
) -> tuple[list[int], str]:
    """The genome to export by default and why: the confirmed best finalist, else the search's."""
    order = fitness_kinds.confirmed_order(confirmations)
    if order and order[0].confirmed is not None:
        return list(order[0].dropped), "confirmed"
    return list(ranked[0].dropped), "search"


def build_result(
    store: RunStore,
    setup: Setup,
    base: BaseScores,
    references: list[ReferenceScored],
    confirmations: list[GenomeConfirmed],
    per_layer: list[int],
    run_started: float,
) -> dict[str, Any]:
    """result.json of a finished search (see the module docstring)."""
    config, loaded = setup.config, setup.loaded
    kind = config.fitness
    started = [e for e in store.events() if isinstance(e, ConfirmationStarted)]
    offsets = started[-1].offsets if started else {}
    evaluations = store.evaluations()
    ranked = store.best_evaluations()
    pick, picked_by = recommended(ranked, confirmations)
    base_conf = next((c for c in confirmations if c.role == "base"), None)
    judge = _Judge(kind, base, base_conf, per_layer)
    pareto_part: dict[str, Any] = {"objective": config.objective}
    if config.pareto:
        knee, pareto_part = _pareto_result(store, config, references, confirmations, judge)
        if knee is not None:
            pick, picked_by = knee.dropped, "knee"
    best = next((e for e in ranked if e.dropped == pick), ranked[0])
    finalist_rows, baseline_rows = _reference_rows(ranked, references, confirmations, judge)
    return {
        "run_id": store.id,
        **_setup_part(setup),
        **pareto_part,
        "picked_by": picked_by,
        "search_best": ranked[0].dropped,
        **judge.genome(best.dropped, best.fitness, best.scores),
        "kept_layers": [i for i in range(loaded.n_layers) if i not in set(best.dropped)],
        "base_scores": base.scores,
        "base_fitness": base.fitness,
        "base_fitness_stderr": fitness_kinds.fitness_stderr(base.scores, kind),
        "base_confirmation": _confirmation(base_conf, None),
        "confirmation": {
            "limit": config.confirm_limit,
            # Per task, the first item scored: confirmation skips the items the search saw.
            "first_item": offsets,
            "tasks": [t.name for t in config.tasks],
            "holdout_tasks": config.holdout,
            "noise_z": stats.NOISE_Z,
        },
        "finalists": finalist_rows,
        "baselines": baseline_rows,
        "hall_of_fame": [
            {
                "dropped": e.dropped,
                "fitness": e.fitness,
                "fitness_stderr": fitness_kinds.fitness_stderr(e.scores, kind),
                "scores": e.scores,
            }
            for e in ranked[:10]
        ],
        "evaluations": sum(1 for e in evaluations if not e.from_memo and e.fidelity != "invalid"),
        "cache_hits": sum(1 for e in evaluations if e.from_memo),
        "generations": config.generations,
        "population": config.population,
        "scorer": config.scorer,
        "eval_seconds": round(sum(e.seconds for e in evaluations if not e.from_memo), 3),
        "confirm_seconds": round(sum(c.seconds for c in confirmations), 3),
        "wall_seconds": round(time.time() - float(store.meta().get("created", run_started)), 3),
        "params_total": sum(p.numel() for p in loaded.model.parameters()),
        **_backend_result(store, config),  # "backend" and "worker_evaluations"
    }


def _reference_rows(
    ranked: list[Evaluation],
    references: list[ReferenceScored],
    confirmations: list[GenomeConfirmed],
    judge: _Judge,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finalists (confirmed order) and the baselines, each with its search fitness and its
    confirmation, judged against the base model's."""
    finalists = _by_genome(confirmations, "finalist")
    baselines = _by_genome(confirmations, "baseline")
    finalist_rows = [
        {
            "label": c.label,
            **judge.genome(c.dropped, c.fitness, _scores_of(ranked, c.dropped)),
            **judge.confirmation(c),
        }
        for c in fitness_kinds.confirmed_order(list(finalists.values()))
    ]
    baseline_rows = [
        {
            "name": r.name,
            "signal": r.signal,
            **judge.genome(r.dropped, r.fitness, r.scores),
            **judge.confirmation(baselines.get(tuple(r.dropped))),
        }
        for r in references
    ]
    return finalist_rows, baseline_rows


def _scores_of(ranked: list[Evaluation], dropped: list[int]) -> dict[str, Any]:
    return next((e.scores for e in ranked if e.dropped == list(dropped)), {})
