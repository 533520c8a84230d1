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

from gaprune_tui.core import format
from gaprune_tui.engine.export.lineage import LINEAGE_FILE
from gaprune_tui.engine.export.mergekit import MERGEKIT_FILE, contiguous_runs
from gaprune_tui.engine.export.verify import GENERATE_TOKENS

CARD_FILE = "README.md"
CARD_TAGS = ["gaprune-tui", "mergekit", "layer-pruning", "passthrough"]


def front_matter(base: dict[str, Any]) -> str:
    """The card's YAML header, between ``---`` lines (the Hub reads base_model and license)."""
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": CARD_TAGS,
    }
    if base.get("hub_id"):
        meta["base_model"] = base["hub_id"]
    if base.get("license"):
        meta["license"] = base["license"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def render_card(lineage: dict[str, Any]) -> str:
    """The model card (README.md) from the lineage dict that also goes into gaprune.json."""
    base = lineage["base_model"]
    kept, dropped = lineage["kept_layers"], lineage["dropped_layers"]
    n = len(kept) + len(dropped)
    before, after = lineage.get("params_before"), lineage.get("params_after")
    removed = f"{100 * (before - after) / before:.1f}%" if before and after is not None else "?"
    lines = [
        front_matter(base),
        "",
        f"# {base['name']} with {len(dropped)} of {n} decoder layers removed",
        "",
        f"Pruned by gaprune-tui {lineage['gaprune_version']}: "
        "a genetic algorithm chose which whole decoder layers to drop, scoring each candidate on "
        "lm-eval benchmarks; the winner was written with MergeKit's passthrough method. "
        "No retraining.",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | {base['name']} (`--model {base['spec']}`, {base.get('model_type', '?')}) |",
        f"| Dropped layers | {', '.join(map(str, dropped))} |",
        f"| Kept layers | {_ranges(kept)} ({len(kept)} of {n}) |",
        f"| Parameters | {format.params(before)} -> {format.params(after)} ({removed} removed) |",
        f"| Size on disk | {format.size(lineage['size_bytes'])} ({lineage['dtype']}) |",
        f"| Run | `{lineage['run']['id']}`, rank {lineage['run']['rank']} "
        f"of {lineage['run']['evaluated_genomes']} evaluated genomes |",
        "",
        "## Scores",
        "",
    ]
    lines += _score_table(lineage)
    lines += ["", "## Verification", ""]
    lines += _verification_lines(lineage.get("verification"))
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
        f"The MergeKit configuration is in `{MERGEKIT_FILE}`; the full lineage, machine-readable, "
        f"in `{LINEAGE_FILE}`.",
        "",
    ]
    return "\n".join(lines)


def _ranges(kept: Sequence[int]) -> str:
    return ", ".join(str(a) if b == a + 1 else f"{a}-{b - 1}" for a, b in contiguous_runs(kept))


def _score_table(lineage: dict[str, Any]) -> list[str]:
    pruned = lineage["scores"]["pruned"]
    base = lineage["scores"].get("base")
    rows = ["| Task | Metric | Base | Pruned |", "|---|---|---|---|"]
    for task, metrics in pruned.items():
        for metric, value in metrics.items():
            b = (base or {}).get(task, {}).get(metric)
            rows.append(f"| {task} | {metric} | {'-' if b is None else f'{b:.4f}'} | {value:.4f} |")
    fit_base = lineage["fitness"].get("base")
    rows.append(
        f"| **fitness** | {lineage['fitness']['kind']} | "
        f"{'-' if fit_base is None else f'{fit_base:.4f}'} | {lineage['fitness']['pruned']:.4f} |"
    )
    if base is None:
        rows += ["", "Base-model scores were not recorded for this run."]
    return rows


def _verification_lines(ver: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if ver is None:
        lines.append("Not run (exported with `--no-verify`).")
    else:
        lines += [
            f"**{'Passed' if ver['passed'] else 'FAILED'}** ({ver['dtype']}, "
            f"{ver['seconds']:.0f} s). The export was loaded with plain "
            "`AutoModelForCausalLM.from_pretrained` and compared with the in-memory layer view of "
            "the same genome on the base model:",
            "",
            f"- logits on {ver['prompts']} fixed prompts: max |diff| = {ver['logits_max_abs_diff']:.3g} "
            f"(tolerance {ver['logits_tolerance']:.3g} x max(1, max |logit|); float32 must be exact)",
            f"- tokenizer encodes the prompts identically: {'yes' if ver['tokenizer_ok'] else 'NO'}",
            f"- greedy `generate` with KV cache, {GENERATE_TOKENS} tokens, same as the view: "
            f"{'yes' if ver['generate_matches_view'] else 'NO'} (continuation: {json.dumps(ver['generated_text'])})",
        ]
        if ver["fitness_export"] is not None:
            lines.append(
                f"- re-scored on the run's tasks: fitness {ver['fitness_export']:.6f} vs stored "
                f"{ver['fitness_stored']:.6f}: {'reproduced' if ver['fitness_ok'] else 'differs'}"
                + (
                    ""
                    if ver["fitness_required"]
                    else f" (informational: the search ran in {ver['search_dtype']})"
                )
            )
    return lines
