"""The model card (``README.md``) of an export, written from its lineage.

The YAML front matter goes through ``yaml.safe_dump`` so a model name or hub id with a colon, a
quote or a newline cannot break it; sizes and parameter counts are ``core.format``'s, as in the
Setup screen and the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core import format, stats
from gaprune_tui.core.units import describe, split
from gaprune_tui.engine.export.lineage import LINEAGE_FILE
from gaprune_tui.engine.export.mergekit import MERGEKIT_FILE, contiguous_runs
from gaprune_tui.engine.export.verify import GENERATE_TOKENS, score_values

CARD_FILE = "README.md"
CARD_TAGS = ["gaprune-tui", "mergekit", "layer-pruning", "passthrough"]
# A sub-block export: no MergeKit; ``custom_code`` is the Hub's tag for a model that needs
# ``trust_remote_code=True``.
SUB_BLOCK_TAGS = ["gaprune-tui", "layer-pruning", "sub-block-pruning", "custom_code"]


def front_matter(base: dict[str, Any], tags: Sequence[str] = CARD_TAGS) -> str:
    """The card's YAML header, between ``---`` lines (the Hub reads base_model and license)."""
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": list(tags),
    }
    if base.get("hub_id"):
        meta["base_model"] = base["hub_id"]
    if base.get("license"):
        meta["license"] = base["license"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def render_card(lineage: dict[str, Any]) -> str:
    """The model card (README.md) from the lineage dict that also goes into gaprune.json.

    Every comparison with the base model goes through ``core.fitness.verdict`` (two standard
    errors of the difference): the card calls the pruned model better or worse only beyond noise,
    and says "within noise" otherwise, so it never claims an improvement the sample cannot show.
    """
    base = lineage["base_model"]
    fit = lineage["fitness"]
    sub_blocks = lineage.get("sub_blocks")
    lines = [
        front_matter(base, SUB_BLOCK_TAGS if sub_blocks else CARD_TAGS),
        "",
        f"# {base['name']} with {_removed_title(lineage)} removed",
        "",
        f"Pruned by gaprune-tui {lineage['gaprune_version']}: "
        f"a search chose which {_searched_units(lineage)} to drop, {_scored_by(fit)}; "
        + (
            "the chosen genome was written by gaprune-tui itself (MergeKit cannot remove part of "
            "a layer), with a modeling file that leaves the removed sub-blocks out: see Loading. "
            if sub_blocks
            else "the chosen genome was written with MergeKit's passthrough method. "
        )
        + ("Then healed (trained): see Healing." if lineage.get("heal") else "No retraining."),
        "",
        *_facts_table(lineage),
        "",
        *_loading_section(lineage),
        "## Summary",
        "",
        *_summary(lineage),
        "",
        "## Scores",
        "",
    ]
    lines += _score_table(lineage)
    lines += _confirmation_section(lineage.get("confirmation"))
    lines += _heal_section(lineage.get("heal"))
    lines += _baselines_section(lineage)
    lines += ["", "## Verification", ""]
    lines += _verification_lines(lineage.get("verification"), fit.get("kind"), bool(sub_blocks))
    lines += [
        "",
        "## Search configuration",
        "",
        "```toml",
        lineage["config_toml"].rstrip(),
        "```",
        "",
        "## Reproduce",
        "",
        "```sh",
        *lineage["reproduce"],
        "```",
        "",
        (
            "MergeKit cannot write this model (it keeps or drops whole layers): the export command "
            "above rebuilds it"
            if sub_blocks
            else f"The MergeKit configuration is in `{MERGEKIT_FILE}`"
        )
        + f"; the full lineage, machine-readable, in `{LINEAGE_FILE}`.",
        "",
    ]
    return "\n".join(lines)


def _sublayer(lineage: dict[str, Any]) -> bool:
    """Whether the run dropped sub-blocks (``granularity`` sublayer): its genomes are units."""
    return lineage.get("granularity") == "sublayer"


def _n_layers(lineage: dict[str, Any]) -> int:
    """The base model's layer count (a whole-layer lineage: kept plus dropped, as it always was)."""
    if _sublayer(lineage) and lineage["base_model"].get("n_layers"):
        return int(lineage["base_model"]["n_layers"])
    return len(lineage["kept_layers"]) + len(lineage["dropped_layers"])


def _split(lineage: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(layers removed whole, layers without attention, layers without MLP), base layers."""
    if not _sublayer(lineage):
        return list(lineage["dropped_layers"]), [], []
    found = lineage.get("dropped_split") or {}
    if not found:
        return split(lineage["dropped_layers"], "sublayer")
    return list(found["layers"]), list(found["attention"]), list(found["mlp"])


def genome_text(dropped: Sequence[int], granularity: str | None) -> str:
    """A genome in the card: its dropped layers, or (sub-blocks) ``layer 3 · attn 1 · mlp 4``."""
    if granularity == "sublayer":
        return describe(dropped, "sublayer")
    return ", ".join(map(str, dropped))


def _removed_title(lineage: dict[str, Any]) -> str:
    whole, attention, mlp = _split(lineage)
    n = _n_layers(lineage)
    if not attention and not mlp:
        return f"{len(whole)} of {n} decoder layers"
    parts = [f"{len(whole)} of {n} decoder layers"] if whole else []
    if attention:
        parts.append(format.plural(len(attention), "attention sub-block"))
    if mlp:
        parts.append(format.plural(len(mlp), "MLP sub-block"))
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _searched_units(lineage: dict[str, Any]) -> str:
    if _sublayer(lineage):
        return "attention and MLP sub-blocks of the decoder layers"
    return "whole decoder layers"


def _loading_section(lineage: dict[str, Any]) -> list[str]:
    """How to load a sub-block export, and where it does not load (nothing for MergeKit's)."""
    sub = lineage.get("sub_blocks")
    if not sub:
        return []
    family = lineage["base_model"].get("model_type") or "?"
    return [
        "## Loading",
        "",
        f"This is not a plain {family} checkpoint: some layers have no attention or no MLP "
        "sub-block, and their weights are not in the files. Its `config.json` says "
        f"`model_type: {sub['model_type']}` and names the code that builds it, "
        f"`{sub['modeling_file']}` in this folder (the family's own transformers class with the "
        "listed sub-blocks taken out; read it before you trust it):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH", trust_remote_code=True)',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        "```",
        "",
        "- Loads with: Hugging Face transformers, `AutoModelForCausalLM.from_pretrained(..., "
        "trust_remote_code=True)` (and what is built on it, such as `pipeline(..., "
        "trust_remote_code=True)`).",
        "- Does not load with: transformers without `trust_remote_code=True` (it refuses the "
        "folder, or first asks in an interactive session, rather than fill the removed "
        "sub-blocks with random weights), vLLM, TGI, llama.cpp (GGUF conversion does not know "
        "the architecture), MergeKit (it reads whole layers).",
        "",
        f"Removed, in the base model's layer numbers: {_removed_text(lineage)} (attn N: the "
        "attention sub-block of layer N, with the norm in front of it; mlp N: its MLP, with its "
        "norm). In this model's own numbering (`gaprune_dropped_attention` and "
        "`gaprune_dropped_mlp` in config.json): no attention in "
        f"{_layers_listed(sub['gaprune_dropped_attention'])}, no MLP in "
        f"{_layers_listed(sub['gaprune_dropped_mlp'])}.",
        "",
    ]


def _removed_text(lineage: dict[str, Any]) -> str:
    return lineage.get("dropped_text") or describe(lineage["dropped_layers"], "sublayer")


def _layers_listed(values: Sequence[int]) -> str:
    if not values:
        return "any layer"
    return ("layer " if len(values) == 1 else "layers ") + ", ".join(map(str, values))


def _listed(values: Sequence[int]) -> str:
    return ", ".join(map(str, values)) if values else "none"


_HEAL_ROWS = (
    ("KL to the base model (calibration text)", "kl", "kl"),
    ("perplexity (calibration text)", "ppl", "nll"),
    ("confirmed task score", "confirmed", "confirmed"),
    ("held-out task score", "holdout", "holdout"),
)


def _heal_section(heal: dict[str, Any] | None) -> list[str]:
    """What was trained, on what, for how long, and the before/after table with verdicts (a
    change within noise is said to be one)."""
    if not heal:
        return []
    cfg = heal.get("config", {})
    what = (
        f"the LM head, the final norm and the last {cfg.get('train_layers')} kept layers"
        if heal["method"] == "partial"
        else f"LoRA adapters of rank {cfg.get('lora_rank')} on every kept layer's linear "
        "modules, merged into the weights"
    )
    objective = (
        "distillation from the base model (KL(base || pruned) of next-token distributions)"
        if heal["objective"] == "kd"
        else "next-token cross-entropy"
    )
    lines = [
        "",
        "## Healing",
        "",
        f"After pruning, {what} were trained by {objective} on {heal['tokens']:,} tokens "
        f"({heal['steps']} steps) of {heal['data']}, in {heal['seconds']:.0f} s on "
        f"{heal.get('device', '?')} ({heal.get('dtype', '?')}); {heal['trainable']:,} weights "
        "changed. Healing text never overlaps the calibration text or the measured tasks' items.",
    ]
    if heal.get("untied_head"):
        lines += [
            "",
            "The LM head was tied to the input embedding; healing trained it, so this model "
            "stores its own `lm_head.weight` (`tie_word_embeddings: false`).",
        ]
    lines += [
        "",
        "| measured on the same data | before healing | after healing | verdict |",
        "|---|---|---|---|",
    ]
    before, after, verdicts = (
        heal.get("before", {}),
        heal.get("after", {}),
        heal.get("verdicts", {}),
    )
    for label, key, vkey in _HEAL_ROWS:
        if before.get(key) is None or after.get(key) is None:
            continue
        lines.append(
            f"| {cell(label)} | {format.score(before[key], before.get(key + '_stderr'))} | "
            f"{format.score(after[key], after.get(key + '_stderr'))} | "
            f"{verdicts.get(vkey, {}).get('outcome', 'not judged')} |"
        )
    lines += [
        "",
        "KL and perplexity are compared per calibration sequence (paired); task scores as two "
        "independent estimates. Multi-step reasoning (GSM8K, HumanEval) is known not to come "
        "back with healing of this kind.",
    ]
    return lines


def _scored_by(fit: dict[str, Any]) -> str:
    kind = fit.get("kind") or "squared_mean"
    what = fit.get("label") or fitness_kinds.label(kind)
    if fitness_kinds.is_calibration(kind):
        return f"scoring each candidate by its {what} on calibration text"
    return f"scoring each candidate on lm-eval benchmarks by the {what}"


def _facts_table(lineage: dict[str, Any]) -> list[str]:
    base, run = lineage["base_model"], lineage["run"]
    kept, dropped = lineage["kept_layers"], lineage["dropped_layers"]
    n = _n_layers(lineage)
    before, after = lineage.get("params_before"), lineage.get("params_after")
    removed = f"{100 * (before - after) / before:.1f}%" if before and after is not None else "?"
    rank = run.get("order_note") or f"rank {run['rank']}/{run['evaluated_genomes']}"
    return [
        "| | |",
        "|---|---|",
        f"| Base model | {base['name']} (`--model {base['spec']}`, {base.get('model_type', '?')}) |",
        *_dropped_rows(lineage, kept, dropped, n),
        f"| Parameters | {format.params(before)} -> {format.params(after)} ({removed} removed) |",
        *_cost_rows(lineage),
        f"| Size on disk | {format.size(lineage['size_bytes'])} ({lineage['dtype']}) |",
        *_searched_in(lineage),
        f"| Fitness | {cell(lineage['fitness'].get('label') or lineage['fitness']['kind'])} |",
        f"| Run | `{run['id']}`: {cell(rank)}; {run['evaluated_genomes']} evaluated genomes |",
    ]


def _cost_rows(lineage: dict[str, Any]) -> list[str]:
    """The KV cache kept and the speed measured when the run ended (the run's pick only)."""
    rows = []
    kv = lineage.get("kv_cache")
    if kv:
        rows.append(
            f"| KV cache | {1 - kv['reduction']:.0%} of the base model's ({kv['attention_kept']} "
            f"of {kv['layers']} layers keep their attention) |"
        )
    speed = lineage.get("speed")
    if speed:
        rows.append(
            f"| Speed, measured | prompt {speed['prompt_speedup']:.2f}x, generation "
            f"{speed['generate_speedup']:.2f}x the base model's ({speed['device']}, "
            f"{format.plural(speed['threads'], 'thread')}, {speed['prompt_tokens']}-token prompt, "
            f"{speed['new_tokens']} new tokens, median of {speed['repeats']}; the layer view "
            "when the run ended) |"
        )
    elif kv:
        rows.append("| Speed, measured | not measured for this genome (the run times its pick) |")
    return rows


def _dropped_rows(
    lineage: dict[str, Any], kept: Sequence[int], dropped: Sequence[int], n: int
) -> list[str]:
    """What the genome removed: whole layers, or (sub-blocks) layers, attention and MLP."""
    if not _sublayer(lineage):
        return [
            f"| Dropped layers | {', '.join(map(str, dropped))} |",
            f"| Kept layers | {_ranges(kept)} ({len(kept)} of {n}) |",
        ]
    whole, attention, mlp = _split(lineage)
    kept_layers = [i for i in range(n) if i not in set(whole)]
    rows = [f"| Dropped layers | {_listed(whole)} |"]
    if attention or mlp:
        rows += [
            f"| Dropped attention | {_listed(attention)} (the layer keeps its MLP) |",
            f"| Dropped MLP | {_listed(mlp)} (the layer keeps its attention) |",
        ]
    return [*rows, f"| Kept layers | {_ranges(kept_layers)} ({len(kept_layers)} of {n}) |"]


def _searched_in(lineage: dict[str, Any]) -> list[str]:
    """The dtype the search scored in and why (``--dtype auto``'s choice or "asked for"): a reader
    comparing the card's scores with their own needs it. None for lineages from before it."""
    dtype = lineage.get("search_dtype")
    if not dtype:
        return []
    reason = (lineage.get("search_dtype_reason") or "").partition(": ")[2]
    return [f"| Searched in | {dtype}{f' ({cell(reason)})' if reason else ''} |"]


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: a ``|`` (as in "KL(base || pruned)") is escaped."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ranges(kept: Sequence[int]) -> str:
    return ", ".join(str(a) if b == a + 1 else f"{a}-{b - 1}" for a, b in contiguous_runs(kept))


def _diff(diff: float | None, stderr: float | None) -> str:
    if diff is None:
        return "?"
    text = format.score(diff, stderr)
    return text if text.startswith("-") else "+" + text


def comparison(vs_base: str | None, diff: float | None, diff_stderr: float | None) -> str:
    """How the card words a verdict against the base model: an improvement only beyond noise."""
    d = _diff(diff, diff_stderr)
    if vs_base == "better":
        return f"better than the base model beyond noise (difference {d})"
    if vs_base == "worse":
        return f"worse than the base model beyond noise (difference {d})"
    if vs_base == "within noise":
        return f"within noise of the base model (difference {d})"
    if diff is None:
        return "not compared with the base model (no base score)"
    return f"not judged against the base model: no standard error (difference {d})"


def _summary(lineage: dict[str, Any]) -> list[str]:
    fit = lineage["fitness"]
    z = (lineage.get("confirmation") or {}).get("noise_z", stats.NOISE_Z)
    lines = [
        f"Differences from the base model count only beyond {z:g} standard errors of the "
        "difference; anything smaller is sample noise and is called so.",
        "",
        f"- Search fitness ({fit.get('label') or fit['kind']}): "
        f"{format.score(fit['pruned'], fit.get('pruned_stderr'))} against the base model's "
        f"{format.score(fit.get('base'), fit.get('base_stderr'))}: "
        f"{comparison(fit.get('vs_base'), fit.get('diff'), fit.get('diff_stderr'))}.",
    ]
    conf = lineage.get("confirmation")
    mine = (conf or {}).get("pruned")
    if conf is None or mine is None:
        lines.append(
            "- Not confirmed: the run has no confirmation of this genome, so its scores come "
            "from the search's own sample only."
        )
        return lines
    base = conf.get("base") or {}
    for key, what in (("confirmed", "Confirmed"), ("holdout", "Held-out")):
        if mine.get(key) is None:
            continue
        lines.append(
            f"- {what} score: {format.score(mine[key], mine.get(f'{key}_stderr'))} against the "
            f"base model's {format.score(base.get(key), base.get(f'{key}_stderr'))}: "
            + comparison(
                mine.get(f"{key}_vs_base"), mine.get(f"{key}_diff"), mine.get(f"{key}_diff_stderr")
            )
            + "."
        )
    return lines


def _shown_metrics(task: str, metrics: dict[str, Any]) -> list[str]:
    values = list(score_values(metrics))
    if task == fitness_kinds.CALIBRATION:
        return [m for m in values if m in fitness_kinds.CALIBRATION_KINDS]
    return values[:1]


def _items(metrics: dict[str, Any] | None) -> int | None:
    if not metrics:
        return None
    n = metrics.get("n", metrics.get("tokens"))
    return None if n is None else int(n)


def task_table(
    pruned: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]] | None
) -> list[str]:
    """Rows of task scores: each task's metric with ± standard error and n, for the base model
    and the pruned one, and the verdict (KL and perplexity judged lower-is-better)."""
    rows = ["| Task | Metric | n | Base | Pruned | vs base |", "|---|---|---|---|---|---|"]
    for task, metrics in pruned.items():
        other = (base or {}).get(task) or {}
        n = _items(metrics) or _items(other)
        for metric in _shown_metrics(task, metrics):
            value, se = metrics.get(metric), metrics.get(f"{metric}_stderr")
            b, b_se = other.get(metric), other.get(f"{metric}_stderr")
            kind = metric if metric in fitness_kinds.CALIBRATION_KINDS else "mean"
            vs = (
                "-"
                if value is None or b is None
                else fitness_kinds.verdict(value, se, b, b_se, kind)
            )
            rows.append(
                f"| {task} | {metric} | {'-' if n is None else n} | {format.score(b, b_se)} | "
                f"{format.score(value, se)} | {vs} |"
            )
    return rows


def _score_table(lineage: dict[str, Any]) -> list[str]:
    base = lineage["scores"].get("base")
    fit = lineage["fitness"]
    rows = [
        "On the search's own sample (the items or calibration tokens every genome was scored on).",
        "",
        *task_table(lineage["scores"]["pruned"], base),
        f"| **fitness** | {fit['kind']} | | "
        f"{format.score(fit.get('base'), fit.get('base_stderr'))} | "
        f"{format.score(fit['pruned'], fit.get('pruned_stderr'))} | {fit.get('vs_base') or '-'} |",
    ]
    if base is None:
        rows += ["", "Base-model scores were not recorded for this run."]
    return rows


def _task_list(scores: dict[str, dict[str, Any]] | None, names: Sequence[str]) -> str:
    """``hellaswag (100 items), piqa (100 items)``: the tasks with their item counts."""
    names = list(scores or {}) or list(names)
    parts = []
    for name in names:
        n = _items((scores or {}).get(name))
        parts.append(name if n is None else f"{name} ({format.plural(n, 'item')})")
    return ", ".join(parts) or "-"


def _confirmation_section(conf: dict[str, Any] | None) -> list[str]:
    """The confirmed and held-out scores of the export and of the base model, per task too."""
    if conf is None:
        return []
    mine, base = conf.get("pruned") or {}, conf.get("base") or {}
    limit = conf.get("limit")
    lines = [
        "",
        "## Confirmation",
        "",
        "When the search ended its finalists, the one-shot baselines and the base model were "
        f"re-scored on more items ({'all' if limit is None else limit} per task) and on held-out "
        "tasks the search never saw, with standard errors. The confirmed score is the "
        f"{fitness_kinds.label(conf.get('kind') or 'mean')}; the held-out score is the mean task "
        "score.",
        "",
        "| | Tasks | Base | Pruned | vs base |",
        "|---|---|---|---|---|",
    ]
    groups = (
        ("confirmed", "Confirmed", conf.get("tasks") or []),
        ("holdout", "Held-out", conf.get("holdout_tasks") or []),
    )
    for key, what, names in groups:
        scores = mine.get(f"{key}_scores") or base.get(f"{key}_scores")
        lines.append(
            f"| {what} | {_task_list(scores, names)} | "
            f"{format.score(base.get(key), base.get(f'{key}_stderr'))} | "
            f"{format.score(mine.get(key), mine.get(f'{key}_stderr'))} | "
            f"{mine.get(f'{key}_vs_base') or '-'} |"
        )
    if not mine:
        lines += ["", "This genome itself was not among the confirmed genomes."]
    for key, what, _ in groups:
        pruned_scores = mine.get(f"{key}_scores")
        if pruned_scores:
            lines += ["", f"{what} scores per task:", ""]
            lines += task_table(pruned_scores, base.get(f"{key}_scores"))
    return lines


def _baselines_section(lineage: dict[str, Any]) -> list[str]:
    """The one-shot baselines (ShortGPT, angular distance, last k) as reference rows."""
    rows = lineage.get("baselines") or []
    if not rows:
        return []
    fit = lineage["fitness"]
    mine = (lineage.get("confirmation") or {}).get("pruned") or {}
    lines = [
        "",
        "## Baselines",
        "",
        "Layer choices without the search (one-shot ones from the base model's hidden states; "
        "greedy removal on the same fitness where the run asked for it), scored the same way: "
        "the reference this export has to be compared with.",
        "",
        *_versus_best(lineage, rows),
        f"| Genome | Dropped layers | Fitness ({fit['kind']}) | vs base | Confirmed | vs base "
        "| Held-out | vs base |",
        "|---|---|---|---|---|---|---|---|",
        _baseline_row(
            "this export",
            genome_text(lineage["dropped_layers"], lineage.get("granularity")),
            (fit["pruned"], fit.get("pruned_stderr"), fit.get("vs_base")),
            mine,
        ),
    ]
    for row in rows:
        fitness = (row.get("fitness"), row.get("fitness_stderr"), row.get("fitness_vs_base"))
        text = genome_text(row["dropped_layers"], lineage.get("granularity"))
        lines.append(_baseline_row(row["name"], text, fitness, row.get("confirmation")))
    return lines


def _versus_best(lineage: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """One sentence: this export against the best baseline at its k on the search's fitness
    (beyond two standard errors of the difference, paired over the calibration sequences where
    the scores carry them, or within noise, or the same genome)."""
    fit, dropped = lineage["fitness"], list(lineage["dropped_layers"])
    kind = fit.get("kind") or "squared_mean"
    same_k = [r for r in rows if len(r["dropped_layers"]) == len(dropped)]
    if not same_k:
        return []
    best = min(same_k, key=lambda r: fitness_kinds.rank_key(r["fitness"], kind))
    name = str(best["name"]).split(" k=")[0]
    theirs = format.score(best["fitness"], best.get("fitness_stderr"))
    ours = format.score(fit["pruned"], fit.get("pruned_stderr"))
    if list(best["dropped_layers"]) == dropped:
        return [f"The search found nothing better than {name}'s pick: this export is it.", ""]
    mine = (lineage.get("scores") or {}).get("pruned") or {}
    verdict = fitness_kinds.genome_verdict(
        fit["pruned"], mine, best["fitness"], best.get("scores") or {}, kind
    )
    said = {
        "better": "better than",
        "worse": "worse than",
        "within noise": "within noise of",
    }.get(verdict, "not comparable with (no standard error)")
    return [f"This export is {said} the best baseline, {name}: {ours} against {theirs}.", ""]


def _baseline_row(
    name: str,
    dropped: str,
    fitness: tuple[float | None, float | None, str | None],
    conf: dict[str, Any] | None,
) -> str:
    conf = conf or {}
    cells = [name, dropped, format.score(fitness[0], fitness[1])]
    cells.append(fitness[2] or "-")
    for key in ("confirmed", "holdout"):
        cells.append(format.score(conf.get(key), conf.get(f"{key}_stderr")))
        cells.append(conf.get(f"{key}_vs_base") or "-")
    return "| " + " | ".join(cells) + " |"


def _verification_lines(
    ver: dict[str, Any] | None, kind: str | None = None, sub_blocks: bool = False
) -> list[str]:
    lines: list[str] = []
    loaded = (
        "with `AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)` (its "
        "`modeling_gaprune.py`, as anyone loading it does)"
        if sub_blocks
        else "with plain `AutoModelForCausalLM.from_pretrained`"
    )
    if ver is None:
        lines.append("Not run (exported with `--no-verify`).")
    else:
        lines += [
            f"**{'Passed' if ver['passed'] else 'FAILED'}** ({ver['dtype']}, "
            f"{ver['seconds']:.0f} s). The export was loaded {loaded} and compared with the "
            "in-memory layer view of the same genome on the base model:",
            "",
            f"- logits on {ver['prompts']} fixed prompts: max |diff| = {ver['logits_max_abs_diff']:.3g} "
            f"(tolerance {ver['logits_tolerance']:.3g} x max(1, max |logit|); float32 must be exact)",
            f"- tokenizer encodes the prompts identically: {'yes' if ver['tokenizer_ok'] else 'NO'}",
            f"- greedy `generate` with KV cache, {GENERATE_TOKENS} tokens, same as the view: "
            f"{'yes' if ver['generate_matches_view'] else 'NO'} (continuation: {json.dumps(ver['generated_text'])})",
        ]
        if ver["fitness_export"] is not None:
            where = "calibration text" if kind and fitness_kinds.is_calibration(kind) else "tasks"
            lines.append(
                f"- re-scored on the run's {where}: fitness {ver['fitness_export']:.6g} vs stored "
                f"{ver['fitness_stored']:.6g}: {'reproduced' if ver['fitness_ok'] else 'differs'}"
                + (
                    ""
                    if ver["fitness_required"]
                    else f" (informational: the search ran in {ver['search_dtype']})"
                )
            )
    return lines
