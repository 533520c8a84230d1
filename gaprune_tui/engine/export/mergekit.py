"""The MergeKit adapter: a passthrough configuration of the kept layers, and the per-layer fix.

MergeKit 0.1.5 sets the layer count of the output config but leaves per-layer config lists such as
``layer_types`` (Qwen2/3, Gemma, Mistral-style configs) at the base model's length, so transformers
refuses to save the config. ``per_layer_config_adapter`` fixes that for the duration of one merge
by wrapping MergeKit's output-config hook; see its docstring.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import ExportError, GapruneError
from gaprune_tui.core.modelspec import (
    NESTED_CONFIGS,
    first_line,
    hub_id_of,
    layer_count,
    looks_like_hub_id,
    read_config,
    require_layer_count,
    sub_configs,
)

MERGEKIT_FILE = "mergekit_config.yml"
# Config fields that hold one entry per decoder layer, by position. The layer count itself is set by
# MergeKit; these are sliced by the adapter (and checked in the written config.json).
PER_LAYER_CONFIG_FIELDS = (
    "layer_types",
    "mlp_layer_types",
    "layers_block_type",
    "no_rope_layers",
    "layer_rope_theta",
    "num_attention_heads_per_layer",
    "num_key_value_heads_per_layer",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def contiguous_runs(kept: Sequence[int]) -> list[tuple[int, int]]:
    """``[0, 1, 3, 4, 5]`` -> ``[(0, 2), (3, 6)]``: half-open ranges, one MergeKit slice each."""
    runs: list[tuple[int, int]] = []
    for idx in sorted(kept):
        if runs and runs[-1][1] == idx:
            runs[-1] = (runs[-1][0], idx + 1)
        else:
            runs.append((idx, idx + 1))
    return runs


def mergekit_config(source_dir: Path | str, kept: Sequence[int], dtype: str) -> dict[str, Any]:
    """The passthrough configuration for ``kept`` of the model ``source_dir`` (a folder, or the
    hub id the recipe saved beside the export names)."""
    return {
        "merge_method": "passthrough",
        "dtype": dtype,
        "slices": [
            {"sources": [{"model": str(source_dir), "layer_range": [a, b]}]}
            for a, b in contiguous_runs(kept)
        ],
    }


# Written by engine/model.py beside a model converted from a GGUF (its weights are dequantized).
_GGUF_ORIGIN_FILE = "gaprune-origin.json"


def recipe_hub_id(
    source_dir: Path, source_config: dict[str, Any], spec: str | None = None
) -> str | None:
    """The hub id of the model in ``source_dir``, where it is known: the run's model spec's (the
    embedded demo's upstream, a cached hub id), the repository of a Hugging Face cache snapshot
    folder (``models--ORG--NAME/snapshots/REV``), or the hub id its config.json was saved from
    (``_name_or_path``); None for a folder that names none."""
    if spec:
        named = hub_id_of(spec)
        if named:
            return named
    resolved = Path(source_dir).expanduser().resolve()
    repo = resolved.parent.parent.name
    if resolved.parent.name == "snapshots" and repo.startswith("models--"):
        org, sep, name = repo.removeprefix("models--").partition("--")
        if sep and org and name:
            return f"{org}/{name}"
    saved_from = source_config.get("_name_or_path")
    if (
        isinstance(saved_from, str)
        and looks_like_hub_id(saved_from)
        and not Path(saved_from).expanduser().exists()
    ):
        return saved_from
    return None


def recipe_yaml(
    source_dir: Path, kept: Sequence[int], dtype: str, hub_id: str | None = None
) -> str:
    """The MergeKit recipe saved beside an export: portable where the base model's hub id is
    known (``mergekit-yaml mergekit_config.yml OUT`` then rebuilds it anywhere the hub model can be
    had), with the local folder it was built from kept as a comment."""
    lines = [f"# gaprune-tui export: passthrough of {len(kept)} layers."]
    if hub_id is None:
        lines.append("# The base model is the local folder named below (no hub id is known).")
        return "\n".join(lines) + "\n" + _yaml(mergekit_config(source_dir, kept, dtype))
    lines += [
        f"# Built from the local copy {source_dir}",
        f"# of {hub_id}; `model:` names the hub id so that the recipe runs anywhere:",
        "# `mergekit-yaml mergekit_config.yml OUT`. MergeKit asks the hub for the model's files",
        "# first; offline, replace the id by the folder of a local copy.",
    ]
    if (Path(source_dir) / _GGUF_ORIGIN_FILE).is_file():
        lines.append(
            "# That copy was converted from a quantized GGUF: rebuilt from the hub's weights, the "
            "same layers come out at the hub's precision, not bit for bit these."
        )
    return "\n".join(lines) + "\n" + _yaml(mergekit_config(hub_id, kept, dtype))


def source_layer_count(config: dict[str, Any], where: Path) -> int:
    """The layer count of the model to export, or an ``ExportError`` saying it cannot be exported."""
    return require_layer_count(config, where, ExportError, "this architecture cannot be exported")


def check_kept(kept: Sequence[int], n_layers: int) -> list[int]:
    """``kept`` as sorted distinct layer indices of an ``n_layers`` model, or an ``ExportError``."""
    try:
        values = sorted(int(i) for i in kept)
    except (TypeError, ValueError):
        raise ExportError(f"kept layers {kept!r} are not integers") from None
    if not values:
        raise ExportError("a genome that keeps no layer cannot be exported")
    if len(set(values)) != len(values) or values[0] < 0 or values[-1] >= n_layers:
        raise ExportError(
            f"kept layers {values} are not distinct indices of the {n_layers}-layer model: "
            "the run was made with another model"
        )
    return values


def _sub_objects(config: Any) -> list[Any]:
    return [config] + [
        getattr(config, s) for s in NESTED_CONFIGS if getattr(config, s, None) is not None
    ]


def slice_per_layer_fields(config: Any, source_layers: Sequence[int], n_source: int) -> list[str]:
    """Slice every per-layer list field of ``config`` (and nested text configs) to ``source_layers``.

    Only lists whose length is the source layer count are touched, so a field that happens to
    share a name but is not per layer is left alone. Returns the names of the fields sliced.
    """
    sliced = []
    for cfg in _sub_objects(config):
        for name in PER_LAYER_CONFIG_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, list | tuple) and len(value) == n_source:
                setattr(cfg, name, type(value)(value[i] for i in source_layers))
                sliced.append(name)
    return sliced


@contextlib.contextmanager
def per_layer_config_adapter(source_layers: Sequence[int], n_source: int) -> Iterator[list[str]]:
    """While active, MergeKit's output config also has its per-layer lists sliced to the genome.

    MergeKit 0.1.5 builds the output config in ``mergekit.merge._model_out_config`` (base config
    plus the new layer count) and saves it at the end of ``run_merge``; transformers 5 validates
    ``len(layer_types) == num_hidden_layers`` on save, so Qwen2/3-, Gemma- and Mistral-style models
    fail there (and older transformers would save a wrong config). We wrap that one module-level
    function for the duration of our merge and restore it afterwards: no fork, nothing global left
    behind. The yielded list names the fields that were sliced, once the merge has run.
    """
    import mergekit.merge as mk

    original = mk._model_out_config
    sliced: list[str] = []

    def model_out_config(*args: Any, **kwargs: Any) -> Any:
        res = original(*args, **kwargs)
        sliced.extend(slice_per_layer_fields(res, source_layers, n_source))
        return res

    mk._model_out_config = model_out_config
    try:
        yield sliced
    finally:
        mk._model_out_config = original


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def run_mergekit(
    source_dir: Path,
    kept: list[int],
    n_layers: int,
    dtype: str,
    folder: Path,
    trust: bool,
    hub_id: str | None = None,
) -> list[str]:
    """Write the passthrough merge of ``kept`` into ``folder``; returns the per-layer fields sliced.
    The merge reads ``source_dir``; the recipe saved beside it names ``hub_id`` (``recipe_yaml``)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = mergekit_config(source_dir, kept, dtype)
    (folder / MERGEKIT_FILE).write_text(
        recipe_yaml(source_dir, kept, dtype, hub_id), encoding="utf-8"
    )
    merge_config = MergeConfiguration.model_validate(config)
    options = MergeOptions(
        copy_tokenizer=True,
        write_model_card=False,  # ours is richer; the YAML is written above
        quiet=True,
        trust_remote_code=trust,
        safe_serialization=True,
        device="cpu",  # passthrough copies tensors: no arithmetic to accelerate
    )
    model_type = "?"
    with contextlib.suppress(ExportError):
        model_type = read_config(source_dir, ExportError).get("model_type", "?")
    # MergeKit logs tokenizer-copy fallbacks as errors with tracebacks; keep the CLI output clean.
    mk_logger = logging.getLogger("mergekit")
    level = mk_logger.level
    mk_logger.setLevel(logging.CRITICAL)
    try:
        with per_layer_config_adapter(kept, n_layers) as sliced:
            run_merge(merge_config, str(folder), options)
    except GapruneError:
        raise
    except Exception as exc:
        raise ExportError(
            f"MergeKit could not export this {model_type} model ({first_line(exc)}): "
            "check that MergeKit 0.1.5 supports the architecture"
        ) from exc
    finally:
        mk_logger.setLevel(level)
    return sliced


def check_written(folder: Path, kept: list[int]) -> None:
    """The written config must describe exactly the kept layers, and the tokenizer must be there."""
    config = read_config(folder, ExportError)
    written = layer_count(config)
    if written != len(kept):
        raise ExportError(
            f"MergeKit wrote a config with {written} layers instead of {len(kept)}: report this as a bug"
        )
    for cfg in sub_configs(config):
        for name in PER_LAYER_CONFIG_FIELDS:
            value = cfg.get(name)
            if isinstance(value, list) and len(value) != len(kept):
                raise ExportError(
                    f"the exported config's {name} has {len(value)} entries for {len(kept)} layers: report this as a bug"
                )
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ExportError(
            "MergeKit wrote no tokenizer into the export: copy the base model's tokenizer files next to its config.json"
        )
