"""What a search will cost on this machine, from past runs of the same model in the run store.

The Setup screen previews it before Start; it lives here, below the screens, because it reads the
store and does arithmetic, neither of which is drawing. Stdlib only.

A forward pass costs about one kept layer's time per layer kept, so a Pareto run (genomes of every
size in its range) is estimated at the range's mean k: each measured evaluation is scaled from the
layers it kept to the layers a mean-k genome keeps. A single-objective estimate is not scaled (its
past runs mostly share its k; it reads exactly as before).

Several workers (``workers``, ``devices``, ``ray``) are named on the line but never shrink the
estimate: the measurements are one process's, and what N workers gain depends on what they run on.
On N devices a generation can go up to N times faster (less the idle tail of each generation:
docs/clusters.md); N workers on one CPU split its cores and were measured at
about the one-process rate. The line says so instead of dividing by N.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import statistics
from dataclasses import dataclass

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format as fmt
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.store import RunState, RunStore, list_runs
from gaprune_tui.core.units import units_per_layer, whole_layers


@dataclass(frozen=True)
class TimingSample:
    """Seconds one scored item took in a past run, and the tasks that run used."""

    tasks: frozenset[str]
    seconds_per_item: float
    # The measured genome's kept layers and the model's layer count (0: not known).
    kept: int = 0
    n_layers: int = 0
    # The dtype the run scored in (its store's meta; "": not recorded).
    dtype: str = ""

    def scaled_to(self, k: float) -> float:
        """Seconds per item for a genome of the same model dropping ``k`` layers."""
        if not self.kept or not self.n_layers:
            return self.seconds_per_item
        return self.seconds_per_item * max(0.0, self.n_layers - k) / self.kept


@dataclass(frozen=True)
class CostEstimate:
    """The worst case of a search: its evaluation budget and, once measured, a duration."""

    max_evaluations: int
    seconds: float | None  # None: no measurement of this model with similar tasks yet
    samples: int
    reason: str = ""
    # The finalist confirmation after the search: genomes and items each (0 when off).
    confirm_genomes: int = 0
    confirm_items: int | None = 0
    confirm_seconds: float | None = None
    # A Pareto run: the mean k its per-evaluation cost is taken at.
    mean_k: float | None = None
    # Several workers: what they may gain (``workers_note``); empty for one process.
    workers: str = ""
    # The search and baselines in the budget unit every method shares (``search_budget``).
    budget: str = ""
    # The dtype the measurements were taken in ("" when not narrowed to one).
    dtype: str = ""

    def text(self) -> str:
        """One line for a preview: the budget, then the duration or why there is none."""
        line = f"at most {fmt.plural(self.max_evaluations, 'evaluation')}"
        if self.budget:
            line = f"{line} ({self.budget})"
        if self.seconds is None:
            line = f"{line}; duration: {self.reason}"
        else:
            line = (
                f"{line}; estimated ≤ {fmt.duration(self.seconds)} "
                f"(estimate from {fmt.plural(self.samples, 'measured evaluation')}"
                + (f" in {self.dtype}" if self.dtype else "")
                + " on this machine"
                + ("" if self.mean_k is None else f", each at the range's mean k {self.mean_k:g}")
                + ")"
            )
        if self.confirm_genomes:
            items = "all items" if self.confirm_items is None else f"{self.confirm_items} items"
            line += f"; then confirming {self.confirm_genomes} genomes on {items} each"
            if self.confirm_seconds is not None:
                line += f" (≤ {fmt.duration(self.confirm_seconds)})"
        if self.workers:
            line += f"; {self.workers}"
        return line


def workers_note(config: RunConfig, gpus: int = 0) -> str:
    """What the run's workers may gain, honestly (see the module docstring); "" for one process.
    The duration on the line stays one process's.

    ``gpus`` is the GPUs found here (``devices.gpu_count``), for ``devices = "all"``.
    """
    if config.ray:
        if config.workers > 1:
            n = config.workers
            return f"{n} Ray actors: up to {n}x faster on {n} GPUs, not when they share one CPU"
        return "a Ray actor per GPU of the cluster: up to that many times faster"
    if config.devices:
        n = gpus if config.devices == "all" else len(config.devices.split(","))
        if n < 1:
            return "a worker per GPU (none found here): up to that many times faster"
        return f"{fmt.plural(n, 'worker')} on {fmt.plural(n, 'device')}: up to {n}x faster"
    if config.workers > 1:
        return (
            f"{config.workers} workers share one device ({config.device}): about one process's rate"
        )
    return ""


def items_per_evaluation(config: RunConfig) -> int | None:
    """Items scored per genome (limit x tasks); None when a task has no limit (size unknown here)."""
    total = 0
    for spec in config.tasks:
        limit = config.task_limit(spec)
        if limit is None:
            return None
        total += limit
    return total


def measure_timings(model: str) -> list[TimingSample]:
    """Per-item seconds of every evaluation that was really computed (not memo hits, not the
    screening pass) in stored runs of ``model``. Reads the run store only; runs that cannot be
    read are skipped."""
    samples: list[TimingSample] = []
    for summary in list_runs():
        if summary.model != model or summary.state == RunState.DAMAGED:
            continue
        try:
            store = RunStore(summary.path)
        except (sqlite3.Error, GapruneError):
            continue
        try:
            config = store.config()
            evaluations = store.evaluations()
            dtype = str(store.meta().get("dtype") or "")
        except (GapruneError, sqlite3.Error):
            continue
        finally:
            store.close()
        items = items_per_evaluation(config)
        if not items:
            continue
        names = frozenset(t.name for t in config.tasks)
        # A sub-block genome's cost is not its kept layers' (a layer may run half): whole-layer
        # genomes only, read as layers (a sub-block run's drops two units per layer).
        upl = units_per_layer(config.granularity)
        samples.extend(
            TimingSample(
                names,
                ev.seconds / items,
                len(ev.kept),
                len(ev.kept) + len(ev.dropped) // upl,
                dtype,
            )
            for ev in evaluations
            if not ev.from_memo
            and ev.fidelity == "full"
            and ev.seconds > 0
            and whole_layers(ev.dropped, config.granularity) is not None
        )
    return samples


def search_budget(config: RunConfig, n_layers: int | None = None) -> tuple[float, str]:
    """The search's worst-case cost in full-fidelity evaluations (a screened child on T of C
    calibration tokens costs T / C) and a line saying how it adds up, with the greedy baseline's
    cost where the config asks for it (``n_layers`` known: its exact count)."""
    if config.evopress:
        limit = config.screen_limit
        if limit is not None and fitness_kinds.is_calibration(config.fitness):
            share = min(1.0, limit / config.calibration_tokens)
            per_gen = config.offspring * share + config.survivors
            cost = config.population * share + config.generations * per_gen
            text = (
                f"evopress: {config.population} starts and {config.generations} x "
                f"{config.offspring} children on {limit} tokens, the best {config.survivors} "
                f"on all: ≈ {cost:.0f} full evaluations"
            )
        else:
            cost = float(config.max_evaluations)
            text = f"evopress: {config.generations} x {config.offspring} children"
    else:
        cost = float(config.max_evaluations)
        text = f"{config.search_algorithm}: {config.population} x {config.generations + 1}"
    if "greedy" in config.baselines:
        k = max(config.ks)
        limit = config.screen_limit
        if n_layers:
            droppable = (n_layers - config.protect) * units_per_layer(config.granularity)
            greedy = sum(droppable - step for step in range(k))
            if limit is not None and fitness_kinds.is_calibration(config.fitness):
                share = min(1.0, limit / config.calibration_tokens)
                full = greedy * share + k * config.survivors
                text += (
                    f"; greedy baseline: {greedy} candidates on {limit} tokens, "
                    f"≈ {full:.0f} full evaluations to k = {k}"
                )
            else:
                text += f"; greedy baseline: {greedy} more evaluations to k = {k}"
        else:
            text += f"; greedy baseline: about k x droppable layers more evaluations (k = {k})"
    return cost, text


def estimate_cost(
    config: RunConfig,
    samples: list[TimingSample],
    *,
    gpus: int = 0,
    n_layers: int | None = None,
    dtype: str = "",
) -> CostEstimate:
    """Worst-case duration: max evaluations x items per evaluation x median seconds per item,
    measured on runs of the same model that share at least one task with this config (a Pareto
    run's scaled to the range's mean k, see the module docstring). Several workers are named,
    never divided by (``workers_note``; ``gpus``: the GPUs found here).

    ``dtype`` is what the run will score in (``devices.expected_dtype``): runs measured in another
    dtype are left out (bfloat16 and float32 differ several-fold in speed); ``""`` or ``"auto"``
    (not known before loading) keeps them all."""
    known = dtype not in ("", "auto")
    if known:
        samples = [s for s in samples if not s.dtype or s.dtype == dtype]
    estimate = _estimate(config, samples)
    _, budget = search_budget(config, n_layers)
    return dataclasses.replace(
        estimate, workers=workers_note(config, gpus), budget=budget, dtype=dtype if known else ""
    )


def _estimate(config: RunConfig, samples: list[TimingSample]) -> CostEstimate:
    names = {t.name for t in config.tasks}
    mean_k = statistics.mean(config.ks) if config.pareto else None
    similar = [
        s.seconds_per_item if mean_k is None else s.scaled_to(mean_k)
        for s in samples
        if s.tasks & names
    ]
    items = items_per_evaluation(config)
    confirm = _confirmation(config, statistics.median(similar) if similar else None)
    if not similar:
        return CostEstimate(config.max_evaluations, None, 0, "no measurement yet", *confirm)
    if items is None:
        return CostEstimate(
            config.max_evaluations, None, len(similar), "set a limit to estimate", *confirm
        )
    if config.fitness in ("kl", "ppl"):
        # KL and perplexity are measured on calibration text, not task items: no estimate from
        # task timings (they are far cheaper than a task evaluation of the same model).
        return CostEstimate(
            config.max_evaluations, None, len(similar), "KL timing not measured yet", *confirm
        )
    per_eval = statistics.median(similar) * items
    return CostEstimate(
        config.max_evaluations,
        per_eval * config.max_evaluations,
        len(similar),
        "",
        *confirm,
        mean_k=mean_k,
    )


def _confirmation(
    config: RunConfig, seconds_per_item: float | None
) -> tuple[int, int | None, float | None]:
    """(genomes, items per genome, seconds) of the confirmation: the finalists, the baselines
    and the base model, each on the run's tasks and the held-out tasks at ``confirm_limit``. A
    Pareto run confirms one front member per k and the base model."""
    if config.finalists <= 0:
        return 0, 0, None
    # A Pareto run confirms one front member per k and the base model, not the baselines.
    per_k = len(config.ks) if config.pareto else None
    genomes = per_k + 1 if per_k is not None else config.finalists + 1 + len(config.baselines)
    limit = config.confirm_limit
    items = None if limit is None else limit * (len(config.tasks) + len(config.holdout))
    seconds = None
    if items is not None and seconds_per_item is not None:
        seconds = genomes * items * seconds_per_item
    return genomes, items, seconds


def sub_block_line(config: RunConfig, n_layers: int | None) -> str | None:
    """What a sub-block run's pick can save, said before it runs (None for a layer run): the KV
    cache goes with the attention sub-blocks dropped, so its range follows from k, the quota and
    the droppable layers; the pick's exact parameters and measured speed come with its result."""
    if config.granularity != "sublayer":
        return None
    k, quota = config.prune, config.attention_drops
    line = f"drops {k} sub-blocks" + (f" ({quota} attention)" if quota is not None else "")
    if n_layers:
        droppable = n_layers - config.protect
        # An attention sub-block removes one layer's share of the KV cache; whole layers count too.
        low = quota if quota is not None else max(0, k - droppable)
        high = quota if quota is not None else min(k, droppable)
        kv = (
            f"−{low / n_layers:.0%}"
            if low == high
            else f"−{low / n_layers:.0%} to −{high / n_layers:.0%}"
        )
        line += f": KV cache {kv} of {n_layers} layers'"
    return line + "; the pick's parameters removed and measured speed are on Results"
