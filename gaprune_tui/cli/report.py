"""``gaprune-tui show RUN``: a finished run's result as a person reads it, noise included.

Every score is printed with its standard error, and every comparison with the base model says
"better", "worse" or "within noise" (two standard errors of the difference): a gap inside the
noise is never printed as a gain. The finalists and the one-shot baselines are listed with their
confirmed and held-out scores, so the recommendation can be checked at a glance.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format, stats
from gaprune_tui.core.units import describe


def _task_rows(result: dict[str, Any]) -> Table:
    table = Table(title=f"run {result['run_id']}: recommended genome of {result['model']}")
    for col, justify in (("task", "left"), ("metric", "left"), ("base", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("pruned", justify="right")
    table.add_column("vs base")
    base_scores = result.get("base_scores", {})
    for task, metrics in result["scores"].items():
        base_metrics = base_scores.get(task)
        base = {m: v for m, _, v in _measures(task, base_metrics)} if base_metrics else {}
        for metric, kind, (value, se) in _measures(task, metrics):
            if metric in base:
                b, b_se = base[metric]
                verdict = fitness_kinds.verdict(value, se, b, b_se, kind)
                base_text = format.score(b, b_se)
            else:
                verdict, base_text = "", "-"
            table.add_row(task, metric, base_text, format.score(value, se), verdict)
    return table


def _measures(
    task: str, metrics: dict[str, Any]
) -> list[tuple[str, str, tuple[float, float | None]]]:
    """(metric, fitness kind that judges it, (value, stderr)) of one task's result: its metric,
    or both KL and perplexity for calibration (a ppl run must not show only its KL)."""
    if task == fitness_kinds.CALIBRATION:
        return [
            (name, name, (float(metrics[name]), metrics.get(f"{name}_stderr")))
            for name in fitness_kinds.CALIBRATION_KINDS
            if metrics.get(name) is not None
        ]
    return [(next(iter(metrics)), "mean", stats.task_score(metrics))]


def _confirmation_table(result: dict[str, Any]) -> Table | None:
    finalists, baselines = result.get("finalists") or [], result.get("baselines") or []
    if not finalists and not baselines:
        return None
    conf = result.get("confirmation", {})
    limit = conf.get("limit") or "all"
    held = ", ".join(conf.get("holdout_tasks") or []) or "none"
    firsts = sorted(set((conf.get("first_item") or {}).values()))
    fresh = (
        f" after the first {firsts[0]} (those the search scored)"
        if len(firsts) == 1 and firsts[0]
        else " (items past those the search scored, where any were left)"
        if any(firsts)
        else ""
    )
    table = Table(
        title=f"confirmation: {limit} items per task{fresh}; held out: {held}",
        caption="± one standard error; 'vs base' needs a gap beyond two standard errors",
    )
    for col in (
        "genome",
        "dropped",
        "search fitness",
        "confirmed",
        "vs base",
        "held-out",
        "vs base",
    ):
        table.add_column(col, justify="left" if col in ("genome", "dropped") else "right")
    base = result.get("base_confirmation") or {}
    table.add_row(
        "base model",
        "-",
        format.score(result.get("base_fitness"), result.get("base_fitness_stderr")),
        format.score(base.get("confirmed"), base.get("confirmed_stderr")),
        "",
        format.score(base.get("holdout"), base.get("holdout_stderr")),
        "",
    )
    granularity = result.get("granularity", "layer")
    for row in finalists:
        table.add_row(row["label"], *_genome_cells(row, granularity))
    for row in baselines:
        table.add_row(f"baseline: {row['name']}", *_genome_cells(row, granularity))
    return table


def _genome_cells(row: dict[str, Any], granularity: str = "layer") -> list[str]:
    dropped = row["dropped_layers"]
    return [
        describe(dropped, granularity) if granularity == "sublayer" else str(dropped),
        format.score(row.get("fitness"), row.get("fitness_stderr")),
        format.score(row.get("confirmed"), row.get("confirmed_stderr")),
        row.get("confirmed_vs_base", ""),
        format.score(row.get("holdout"), row.get("holdout_stderr")),
        row.get("holdout_vs_base", ""),
    ]


def _front_table(result: dict[str, Any]) -> Table | None:
    """A Pareto run's front: one row per k, its fitness and confirmation with standard errors."""
    rows = result.get("front")
    if not rows:
        return None
    kind = result.get("fitness_kind", "kl")
    total = max(1, result.get("params_total", 1))
    table = Table(
        title=f"Pareto front: the best genome per k ({fitness_kinds.label(kind)})",
        caption="* dominated: a genome dropping more layers is at least as good; "
        "knee: the recommended trade-off",
    )
    columns = ("k", "dropped", "fitness", "vs base", "best baseline", "front vs it")
    for col in (*columns, "confirmed", "held-out", "params"):
        table.add_column(col, justify="left" if col == "dropped" else "right")
    for row in rows:
        mark = " knee" if row.get("knee") else " *" if row.get("dominated") else ""
        table.add_row(
            f"{row['k']}{mark}",
            str(row["dropped_layers"]),
            format.score(row.get("fitness"), row.get("fitness_stderr")),
            row.get("fitness_vs_base", ""),
            _baseline_cell(row),
            row.get("vs_best_baseline") or "",
            format.score(row.get("confirmed"), row.get("confirmed_stderr")),
            format.score(row.get("holdout"), row.get("holdout_stderr")),
            f"-{row.get('params_removed', 0) / total:.1%}",
        )
    return table


def _baseline_cell(row: dict[str, Any]) -> str:
    """``shortgpt 0.21 ± 0.01``: the best one-shot baseline at the row's k (name without k)."""
    if not row.get("best_baseline"):
        return "-"
    name = str(row["best_baseline"]).split(" k=")[0]
    value = format.score(row.get("best_baseline_fitness"), row.get("best_baseline_fitness_stderr"))
    return f"{name} {value}"


def _dtype_note(result: dict[str, Any]) -> str:
    """`` in float32 (reason)`` for the time line; results written before the reason have none."""
    dtype = result.get("dtype")
    if not dtype:
        return ""
    reason = result.get("dtype_reason")
    return f" in {dtype}" + (f" ({reason.partition(': ')[2]})" if reason else "")


def _summary(result: dict[str, Any], run_id: str) -> str:
    kind = result.get("fitness_kind") or result.get("fitness_function", "squared_mean")
    removed = result.get("params_removed", 0) / max(1, result.get("params_total", 1))
    how = {
        "confirmed": "the confirmed best finalist",
        "knee": "the knee of the Pareto front",
    }.get(result.get("picked_by", ""), "the search's best (not confirmed)")
    verdict = result.get("fitness_vs_base")
    finalists = result.get("finalists") or []
    if len(finalists) > 1 and result.get("picked_by") == "confirmed":
        a, b = finalists[0], finalists[1]
        if None not in (
            a.get("confirmed_stderr"),
            b.get("confirmed_stderr"),
        ) and stats.within_noise(
            a["confirmed"], a["confirmed_stderr"], b["confirmed"], b["confirmed_stderr"]
        ):
            how += ", within noise of the next one"
    lines = [
        *_versus_lines(result),
        f"recommended: drop {_drop_text(result)} ({how}); kept "
        f"{len(result['kept_layers'])} of {result['n_layers']} layers{_kept_units(result)}, "
        f"{removed:.1%} of parameters removed" + _savings(result),
        f"fitness {format.score(result['fitness'], result.get('fitness_stderr'))} "
        f"({fitness_kinds.label(kind)}); base "
        f"{format.score(result['base_fitness'], result.get('base_fitness_stderr'))}"
        + (f" — {verdict}" if verdict else ""),
        *_budget_lines(result),
        f"{result['evaluations']} new evaluations, {result['cache_hits']} from the memo"
        + (" — nothing new to evaluate" if result["evaluations"] == 0 else "")
        + f"; {result['eval_seconds']:.1f} s evaluating, {result['wall_seconds']:.1f} s in all"
        + _dtype_note(result),
        f"export it with: gaprune-tui export {run_id}"
        + (
            f" (another k: --k {' or '.join(str(r['k']) for r in result['front'])})"
            if result.get("front")
            else ""
        ),
    ]
    if result.get("backend") and result["backend"] != "in-process":
        counts = result.get("worker_evaluations") or {}
        each = ", ".join(f"{name} {n}" for name, n in counts.items())
        lines.insert(-1, f"scored on {result['backend']}" + (f" ({each})" if each else ""))
    return "\n".join(lines)


def _drop_text(result: dict[str, Any]) -> str:
    """The pick's drops: its layer list, or a sub-block run's ``layers … · attn … · mlp …``."""
    if result.get("granularity") == "sublayer" and result.get("dropped_text"):
        return str(result["dropped_text"])
    return str(result["dropped_layers"])


def _kept_units(result: dict[str, Any]) -> str:
    """`` (52 of 60 sub-blocks)`` for a sub-block run's pick, else nothing."""
    if result.get("granularity") != "sublayer":
        return ""
    n_units = 2 * int(result["n_layers"])
    return f" ({n_units - len(result['dropped_layers'])} of {n_units} sub-blocks)"


def _savings(result: dict[str, Any]) -> str:
    """``; KV cache -25%; measured here: prompt 1.31x, generation 1.18x`` where result.json has
    them (older runs do not)."""
    out = ""
    kv = result.get("kv_cache")
    if kv:
        out += f"; KV cache {-kv['reduction']:.0%}"
    speed = result.get("speed")
    if speed:
        out += (
            f"; measured on this {speed['device']} "
            f"({format.plural(speed['threads'], 'thread')}, median of "
            f"{speed['repeats']}): prompt {speed['prompt_speedup']:.2f}x, generation "
            f"{speed['generate_speedup']:.2f}x the base model's speed"
        )
    return out


def _versus_lines(result: dict[str, Any]) -> list[str]:
    """The pick against the best baseline at its k, first: on the search's fitness (the
    headline), then on the confirmation and the held-out tasks where both were confirmed."""
    line = result.get("headline")
    if not line:
        return []
    out = [f"vs the best baseline: {line}"]
    for key, what in (("confirmed", "confirmation"), ("holdout", "held-out tasks")):
        verdict = result.get(f"{key}_vs_best_baseline")
        if verdict:
            out.append(f"  on the {what}: {verdict} (against {result['best_baseline']})")
    return out


def _budget_lines(result: dict[str, Any]) -> list[str]:
    """The run's cost in one unit (full-fidelity evaluations), the baselines' share apart."""
    budget = result.get("budget")
    if not budget:
        return []
    screened = {f: n for f, n in budget.get("search_evaluations", {}).items() if f != "full"}
    detail = "".join(f", {n} on {f}" for f, n in screened.items())
    return [
        f"budget: {budget['total_cost']:g} full-fidelity evaluations — search "
        f"{budget['search_cost']:g} ({budget.get('search_evaluations', {}).get('full', 0)} full"
        f"{detail}), baselines {budget['baseline_evaluations']:g}"
        + (f"; {budget['tokens']:,} calibration tokens" if budget.get("tokens") else "")
        + f"; algorithm {result.get('algorithm', 'ga')}, init {result.get('init', 'random')}"
    ]


def print_report(result: dict[str, Any], run_id: str, console: Console | None = None) -> None:
    console = console or Console()
    console.print(_task_rows(result))
    front = _front_table(result)
    if front is not None:
        console.print(front)
    table = _confirmation_table(result)
    if table is not None:
        console.print(table)
    console.print(_summary(result, run_id))
    heals = result.get("heals") or []
    if heals:
        from rich.markup import escape

        from gaprune_tui.cli.heal import heal_lines

        for record in heals:
            for line in heal_lines(record):
                console.print(escape(line), highlight=False)
            console.print(
                f"  export it with: gaprune-tui export {run_id} --healed {record['id']}",
                highlight=False,
            )
