"""Exporting a healed genome: MergeKit writes the pruned model as for any genome, then the healed
tensors (LoRA already merged) are written over it, and verification compares the folder, loaded
with plain transformers, against the healed model rebuilt in memory from the base model and the
heal's ``weights.safetensors``.

A trained LM head that was tied to the embedding is written as its own ``lm_head.weight`` and the
config's ``tie_word_embeddings`` becomes false (the card says so).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.heal import RECORD_FILE, heals_dir, read_json
from gaprune_tui.core.store import Evaluation, RunStore


def heal_record(store: RunStore, heal_id: str) -> dict[str, Any]:
    """The finished heal ``heal_id`` of the run, or a one-line ``ExportError`` naming the fix."""
    folder = heals_dir(store) / heal_id
    record = read_json(folder / RECORD_FILE)
    if record is None:
        known = sorted(p.name for p in heals_dir(store).glob("*") if (p / RECORD_FILE).is_file())
        hint = f"finished heals: {', '.join(known)}" if known else "heal it first: gaprune-tui heal"
        raise ExportError(f"run {store.id} has no finished heal {heal_id!r}: {hint}")
    if not (folder / "weights.safetensors").is_file():
        raise ExportError(f"heal {heal_id} has no weights.safetensors: heal it again")
    return record


def healed_genome(genome: Evaluation, record: dict[str, Any]) -> Evaluation:
    """The genome as the heal left it: its fitness and scores are the healed model's."""
    after = record.get("after") or {}
    if after.get("fitness") is None:
        raise ExportError(f"heal {record['id']} recorded no fitness after healing: heal it again")
    return dataclasses.replace(
        genome, fitness=float(after["fitness"]), scores=after.get("fitness_scores") or {}
    )


def load_tensors(store_path: Path, heal_id: str) -> dict[str, Any]:
    from gaprune_tui.engine.heal import load_weights

    return load_weights(heals_dir(store_path) / heal_id)


def apply_healed(folder: Path, tensors: dict[str, Any], dtype: str) -> list[str]:
    """Write ``tensors`` (cast to ``dtype``) over the exported model in ``folder``: each replaces
    the tensor of the same name in its shard; ``lm_head.weight`` is added to the first shard when
    the export had a tied head, and config.json unties it. Returns the names written."""
    import torch
    from safetensors.torch import load_file, save_file

    torch_dtype = getattr(torch, dtype)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ExportError(f"no safetensors in {folder}: cannot write the healed weights")
    remaining = dict(tensors)
    index_path = folder / "model.safetensors.index.json"
    for shard in shards:
        data = load_file(str(shard))
        hit = [name for name in data if name in remaining]
        if not hit and not (shard == shards[0] and "lm_head.weight" in remaining):
            continue
        for name in hit:
            if tuple(data[name].shape) != tuple(remaining[name].shape):
                raise ExportError(
                    f"healed tensor {name} has shape {tuple(remaining[name].shape)}, the export "
                    f"{tuple(data[name].shape)}: the heal is of another genome"
                )
            data[name] = remaining.pop(name).to(torch_dtype).contiguous()
        if shard == shards[0] and "lm_head.weight" in remaining:
            data["lm_head.weight"] = remaining.pop("lm_head.weight").to(torch_dtype).contiguous()
            _untie(folder, index_path, shard.name)
        save_file(data, str(shard), metadata={"format": "pt"})
    if remaining:
        raise ExportError(
            f"healed tensors {sorted(remaining)[:3]} are not in the export: the heal is of "
            "another genome"
        )
    return sorted(tensors)


def _untie(folder: Path, index_path: Path, shard_name: str) -> None:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tie_word_embeddings"] = False
    for sub in ("text_config",):
        if isinstance(config.get(sub), dict) and "tie_word_embeddings" in config[sub]:
            config[sub]["tie_word_embeddings"] = False
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index.setdefault("weight_map", {})["lm_head.weight"] = shard_name
        index_path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def heal_lineage(record: dict[str, Any]) -> dict[str, Any]:
    """What the card and gaprune.json say of the heal (its loss curve stays in the run)."""
    return {k: v for k, v in record.items() if k not in ("losses",)}
