"""``result.json``: what a finished run found, with the numbers that say how far to trust it.

Every score carries its standard error (per task ``{metric: v, metric_stderr: se, n: items}``,
fitnesses as ``fitness`` / ``fitness_stderr``), and each finalist and baseline says whether its
difference from the base model is beyond noise (two standard errors of the difference) on the
search's fitness, on the confirmation and on the held-out tasks.

Every genome the run evaluated is ranked together, the baselines included (their rows are stored
as generation -1): the finalists are the best of them down to the best baseline and no further, and
the recommended genome (``dropped_layers``) is the confirmed best finalist when confirmation ran
(ranked by the confirmed task score, on more items than the search saw), else the best on the
fitness. So the recommendation is never worse on the run's fitness than a baseline the run scored;
``headline`` says how it compares with the best baseline at its k (or that the search found nothing
better), and ``budget`` what the run spent in one unit for every method.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format, pareto, stats
from gaprune_tui.core.events import (
    BaseScores,
    ConfirmationStarted,
    GenomeConfirmed,
    ReferenceScored,
)
from gaprune_tui.core.store import BASELINE_GENERATION, Evaluation, RunStore
from gaprune_tui.core.units import describe, kept_path, kv_cache, split
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
            "source": sources(p.dropped, references) or ["search"],
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
    return vs_best_baseline(
        point.dropped, point.fitness, point.extra.get("scores", {}), references, kind
    )


def best_reference(references: list[ReferenceScored], k: int, kind: str) -> ReferenceScored | None:
    """The best baseline dropping ``k`` layers on the run's fitness (ties: the smaller genome)."""
    same = [r for r in references if len(r.dropped) == k]
    if not same:
        return None
    return min(same, key=lambda r: (fitness_kinds.rank_key(r.fitness, kind), r.dropped))


def sources(dropped: list[int], references: list[ReferenceScored]) -> list[str]:
    """The baselines whose pick is exactly this genome (their names without " k=N")."""
    return sorted({r.name.split(" k=")[0] for r in references if list(r.dropped) == dropped})


VS_BASELINE_KEYS = (
    "best_baseline",
    "best_baseline_dropped",
    "best_baseline_fitness",
    "best_baseline_fitness_stderr",
    "vs_best_baseline",
)


def vs_best_baseline(
    dropped: list[int],
    fitness: float,
    scores: dict[str, Any],
    references: list[ReferenceScored],
    kind: str,
) -> dict[str, Any]:
    """A genome against the best baseline at its k on the run's fitness: ``vs_best_baseline``
    is ``better``/``within noise``/``worse`` (two standard errors of the difference, paired over
    the calibration sequences where the scores carry them), or ``same genome`` when the genome is
    that baseline's pick."""
    best = best_reference(references, len(dropped), kind)
    if best is None:
        # The same keys, empty: result.json has one shape whatever the run scored.
        return dict.fromkeys(VS_BASELINE_KEYS)
    best_se = fitness_kinds.fitness_stderr(best.scores, kind)
    same = list(best.dropped) == list(dropped)
    return {
        "best_baseline": best.name,
        "best_baseline_dropped": list(best.dropped),
        "best_baseline_fitness": best.fitness,
        "best_baseline_fitness_stderr": best_se,
        "vs_best_baseline": (
            "same genome"
            if same
            else fitness_kinds.genome_verdict(fitness, scores, best.fitness, best.scores, kind)
        ),
    }


def finalists(
    store: RunStore, config: RunConfig, references: list[ReferenceScored]
) -> list[Evaluation]:
    """The genomes confirmation re-scores: the best ``finalists`` of every genome the run
    evaluated (baselines included), down to the best baseline and no further, so the confirmed
    pick is never worse on the run's fitness than a baseline the run scored."""
    ranked = store.best_evaluations(config.finalists)
    best = best_reference(references, config.prune, config.fitness)
    if best is None:
        return ranked
    floor = fitness_kinds.rank_key(best.fitness, config.fitness)
    return [e for e in ranked if fitness_kinds.rank_key(e.fitness, config.fitness) <= floor]


def headline(pick: dict[str, Any], kind: str, found_by: list[str] | None = None) -> str:
    """One sentence: the pick against the best baseline at its k, honest about noise.
    ``found_by``: the baselines whose pick the genome is (the search's own: ``["search"]``)."""
    name = pick.get("best_baseline")
    if not name:
        return "no baseline was scored at this k: nothing to compare the pick with"
    name = str(name).split(" k=")[0]
    label = fitness_kinds.short_label(kind).split(" ")[0]
    ours = format.score(pick["fitness"], pick.get("fitness_stderr"))
    theirs = format.score(pick["best_baseline_fitness"], pick.get("best_baseline_fitness_stderr"))
    verdict = pick.get("vs_best_baseline")
    if verdict == "same genome":
        names = [n for n in (found_by or [name]) if n != "search"] or [name]
        who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"the search found nothing better than {who}'s pick ({label} {ours})"
    if verdict == "better":
        return f"beats the best baseline, {name}, beyond noise: {label} {ours} vs {theirs}"
    if verdict == "worse":
        return f"worse than the best baseline, {name}: {label} {ours} vs {theirs}"
    return f"within noise of the best baseline, {name}: {label} {ours} vs {theirs}"


def _confirmed_vs_baseline(
    pick: list[int], best: list[int] | None, confirmations: list[GenomeConfirmed]
) -> dict[str, Any]:
    """The pick against the best baseline on the confirmation and the held-out tasks, where
    both were confirmed (task scores: higher is better)."""
    out: dict[str, Any] = {"confirmed_vs_best_baseline": None, "holdout_vs_best_baseline": None}
    if not best or list(best) == list(pick):
        return out
    mine = next((c for c in reversed(confirmations) if list(c.dropped) == list(pick)), None)
    theirs = next((c for c in reversed(confirmations) if list(c.dropped) == list(best)), None)
    if mine is None or theirs is None:
        return out
    for key in ("confirmed", "holdout"):
        a, a_se = getattr(mine, key), getattr(mine, f"{key}_stderr")
        b, b_se = getattr(theirs, key), getattr(theirs, f"{key}_stderr")
        if a is not None and b is not None:
            out[f"{key}_vs_best_baseline"] = fitness_kinds.verdict(a, a_se, b, b_se, "mean")
    return out


def budget(store: RunStore, config: RunConfig, references: list[ReferenceScored]) -> dict[str, Any]:
    """What the run spent, in one unit for every method: fresh evaluations by fidelity, their
    cost in full-fidelity evaluations (``fidelity_cost``), the calibration tokens forwarded
    (KL and perplexity), and the scoring seconds; the baselines' share apart."""
    from gaprune_tui.engine.evaluator import fidelity_cost

    fresh = [
        e
        for e in store.evaluations()
        if not e.from_memo and e.fidelity != "invalid" and e.generation != BASELINE_GENERATION
    ]
    by_fidelity: dict[str, int] = {}
    for e in fresh:
        by_fidelity[e.fidelity] = by_fidelity.get(e.fidelity, 0) + 1
    search_cost = sum(fidelity_cost(e.fidelity, config) for e in fresh)
    baseline_evals = sum(r.cost or r.evaluations for r in references)
    total = search_cost + baseline_evals
    calibration = fitness_kinds.is_calibration(config.fitness)
    return {
        "unit": "full-fidelity evaluations",
        "search_evaluations": by_fidelity,
        "search_cost": round(search_cost, 3),
        "baseline_evaluations": round(baseline_evals, 3),
        "total_cost": round(total, 3),
        "tokens": int(total * config.calibration_tokens) if calibration else None,
        "search_seconds": round(sum(e.seconds for e in fresh), 3),
        "baseline_seconds": round(sum(r.seconds for r in references), 3),
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
    timer: Callable[[list[int]], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """result.json of a finished search (see the module docstring). ``timer(path)`` measures
    the pick's speed (``engine/speed.measure_or_none``); None records none."""
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
    granularity = config.granularity
    path = kept_path(best.dropped, loaded.n_layers, granularity)
    whole, attention, mlp = split(best.dropped, granularity)
    finalist_rows, baseline_rows = _reference_rows(ranked, references, confirmations, judge)
    versus = vs_best_baseline(best.dropped, best.fitness, best.scores, references, kind)
    picked = {**judge.genome(best.dropped, best.fitness, best.scores), **versus}
    return {
        "run_id": store.id,
        **_setup_part(setup),
        **pareto_part,
        "algorithm": config.search_algorithm,
        "init": config.init,
        "picked_by": picked_by,
        "pick_source": sources(best.dropped, references) or ["search"],
        "headline": headline(picked, kind, sources(best.dropped, references)),
        "search_best": ranked[0].dropped,
        **picked,
        **_confirmed_vs_baseline(best.dropped, versus.get("best_baseline_dropped"), confirmations),
        "budget": budget(store, config, references),
        "granularity": granularity,
        "dropped_text": describe(best.dropped, granularity),
        "dropped_split": {"layers": whole, "attention": attention, "mlp": mlp},
        "kept_layers": path,
        "kv_cache": kv_cache(path, loaded.n_layers),
        "speed": timer(path) if timer is not None else None,
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
