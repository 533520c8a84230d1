"""Sub-block exports: a genome that removes attention or MLP sub-blocks, written without MergeKit.

MergeKit's passthrough can only keep or drop whole layers, so a genome of the ``sublayer``
granularity that drops a layer's attention or its MLP alone is written here: the base model's
safetensors are read tensor by tensor (never instantiated, so a 7B model is not held twice), the
tensors of removed sub-blocks (and the norm in front of each) are left out, the kept layers are
renumbered, and the folder ships ``modeling_gaprune.py``, whose classes leave the same sub-blocks
out of the family's own transformers model. ``config.json`` names them by ``model_type``
``gaprune_<family>`` and ``auto_map``, so only ``trust_remote_code=True`` loads the folder: plain
transformers refuses it rather than loading random weights where the sub-blocks were removed.

A genome of the ``sublayer`` granularity whose every drop is a whole layer still goes through
MergeKit (``export_genome``): its path codes are plain layer indices and any runtime loads it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.modelspec import first_line, read_config, read_safetensors_header, sub_configs
from gaprune_tui.core.units import (
    ATTENTION_ONLY,
    MLP_ONLY,
    SUBLAYER_FAMILIES,
    decode_path,
)
from gaprune_tui.engine.export.mergekit import (
    _TOKENIZER_FILES,
    PER_LAYER_CONFIG_FIELDS,
    source_layer_count,
)
from gaprune_tui.engine.export.plan import Progress, silent

MODELING_FILE = "modeling_gaprune.py"
# What an output shard holds at most (MergeKit's default too): the hub's usual shard size.
SHARD_BYTES = 5_000_000_000
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# The transformers class name of each family the modeling file covers.
FAMILY_CLASSES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}
# A decoder layer's tensors by sub-block: attention (with the norm in front of it) and MLP.
ATTENTION_PARTS = ("self_attn.", "input_layernorm.")
MLP_PARTS = ("mlp.", "post_attention_layernorm.")
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# Copied from the base model as they are: the tokenizer and the generation defaults.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

assert tuple(FAMILY_CLASSES) == SUBLAYER_FAMILIES, "modeling_gaprune.py covers these families"


def model_type(family: str) -> str:
    return f"gaprune_{family}"


def class_names(family: str) -> tuple[str, str]:
    """(config class, model class) of ``family`` in ``modeling_gaprune.py``."""
    name = FAMILY_CLASSES[family]
    return f"Gaprune{name}Config", f"Gaprune{name}ForCausalLM"


@dataclass(frozen=True)
class Layout:
    """Which base layers a sub-block export keeps, and what each keeps of them."""

    family: str
    n_source: int
    # (base layer, variant) per exported layer: units.FULL, ATTENTION_ONLY or MLP_ONLY.
    layers: tuple[tuple[int, int], ...]

    @property
    def dropped_attention(self) -> list[int]:
        """Exported layers without attention (indices of the export: the config's list)."""
        return [j for j, (_, v) in enumerate(self.layers) if v == MLP_ONLY]

    @property
    def dropped_mlp(self) -> list[int]:
        """Exported layers without MLP (indices of the export: the config's list)."""
        return [j for j, (_, v) in enumerate(self.layers) if v == ATTENTION_ONLY]

    @property
    def removed_layers(self) -> list[int]:
        """Base layers removed whole."""
        kept = {i for i, _ in self.layers}
        return [i for i in range(self.n_source) if i not in kept]

    @property
    def removed_attention(self) -> list[int]:
        """Base layers whose attention alone was removed."""
        return [i for i, v in self.layers if v == MLP_ONLY]

    @property
    def removed_mlp(self) -> list[int]:
        """Base layers whose MLP alone was removed."""
        return [i for i, v in self.layers if v == ATTENTION_ONLY]

    def target(self, name: str) -> str | None:
        """The export's name for the base model's tensor ``name``; None when it is removed."""
        match = _LAYER_KEY.match(name)
        if match is None:
            return name
        base, rest = int(match.group(1)), match.group(2)
        if base >= self.n_source:
            raise ExportError(
                f"the base model's weights hold {name} but its config has {self.n_source} layers: "
                "check that the weights are complete and belong to this config"
            )
        position = {i: j for j, (i, _) in enumerate(self.layers)}
        if base not in position:
            return None
        variant = self.layers[position[base]][1]
        if variant == ATTENTION_ONLY and rest.startswith(MLP_PARTS):
            return None
        if variant == MLP_ONLY and rest.startswith(ATTENTION_PARTS):
            return None
        return f"model.layers.{position[base]}.{rest}"


def family_of(config: dict[str, Any]) -> str:
    """The model family of a config, or a one-line ``ExportError`` naming the fix."""
    family = config.get("model_type")
    if family not in FAMILY_CLASSES:
        raise ExportError(
            f"a sub-block export supports the {', '.join(SUBLAYER_FAMILIES)} families, not "
            f"{family}: export a genome that drops whole layers only (or search with "
            "--granularity layer)"
        )
    return str(family)


def plan_layout(source_config: dict[str, Any], kept: Sequence[int], where: Path) -> Layout:
    """The layout of the path ``kept`` on the model of ``source_config``, checked."""
    family = family_of(source_config)
    n_source = source_layer_count(source_config, where)
    try:
        codes = sorted((int(c) for c in kept), key=lambda c: c % n_source)
        layers = decode_path(codes, n_source)
    except (TypeError, ValueError) as exc:
        raise ExportError(
            f"kept path {list(kept)!r} is not one of the {n_source}-layer model ({first_line(exc)}): "
            "the run was made with another model"
        ) from None
    if not layers:
        raise ExportError("a genome that keeps no layer cannot be exported")
    if layers[0][1] == MLP_ONLY:
        raise ExportError(
            f"the first kept layer ({layers[0][0]}) has no attention, and the KV cache reads the "
            "sequence length there: protect layer 0 (--protect 1)"
        )
    return Layout(family, n_source, tuple(layers))


def export_config(source_config: dict[str, Any], layout: Layout, dtype: str) -> dict[str, Any]:
    """The export's config.json: the source's with the kept layers' count and per-layer fields,
    the gaprune model type and classes, and the removed sub-blocks (export indices)."""
    config = json.loads(json.dumps(source_config))  # a deep copy
    sources = [i for i, _ in layout.layers]
    for cfg in sub_configs(config):
        if cfg.get("num_hidden_layers") == layout.n_source:
            cfg["num_hidden_layers"] = len(sources)
        for name in PER_LAYER_CONFIG_FIELDS:
            value = cfg.get(name)
            if isinstance(value, list) and len(value) == layout.n_source:
                cfg[name] = [value[i] for i in sources]
    config["num_hidden_layers"] = len(sources)
    config_class, model_class = class_names(layout.family)
    config["model_type"] = model_type(layout.family)
    config["architectures"] = [model_class]
    config["auto_map"] = {
        "AutoConfig": f"{MODELING_FILE.removesuffix('.py')}.{config_class}",
        "AutoModelForCausalLM": f"{MODELING_FILE.removesuffix('.py')}.{model_class}",
    }
    config["gaprune_dropped_attention"] = layout.dropped_attention
    config["gaprune_dropped_mlp"] = layout.dropped_mlp
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    return config


def source_weights(source_dir: Path) -> dict[str, Path]:
    """Each tensor of the base model's safetensors and the file that holds it."""
    index = source_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {str(name): source_dir / str(file) for name, file in weight_map.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(
                f"{index} is unreadable ({first_line(exc)}): download the base model again"
            ) from None
    single = source_dir / SINGLE_FILE
    files = (
        [single]
        if single.is_file()
        else [
            f
            for f in sorted(source_dir.glob("*.safetensors"))
            if not f.name.startswith("consolidated")  # Mistral's original-format copy
        ]
    )
    if not files:
        raise ExportError(
            f"a sub-block export reads safetensors weights and {source_dir} has none: re-save "
            "the base model with save_pretrained (safetensors)"
        )
    found: dict[str, Path] = {}
    for file in files:
        for name in read_safetensors_header(file):
            if name != "__metadata__":
                found[name] = file
    return found


@dataclass
class Written:
    """What ``write_sublayer`` wrote and left out."""

    layout: Layout
    config: dict[str, Any]
    shards: list[str]
    tensors: int
    removed: list[str] = field(default_factory=list)
    removed_params: int = 0


_ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


def _tensor_entry(file: Path, name: str, headers: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    if file not in headers:
        headers[file] = read_safetensors_header(file)
    entry = headers[file].get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
        raise ExportError(
            f"{file.name} has no tensor {name} although the index names it: download the base "
            "model again"
        )
    return entry


def _numel(entry: dict[str, Any]) -> int:
    count = 1
    for dim in entry["shape"]:
        count *= int(dim)
    return count


def _order(name: str) -> tuple[int, int, str]:
    """Embeddings first, then the layers in order, then the final norm and the head."""
    match = _LAYER_KEY.match(name)
    if match is not None:
        return (1, int(match.group(1)), name)
    return (0 if "embed" in name else 2, 0, name)


def write_sublayer(
    source_dir: Path,
    kept_path: Sequence[int],
    out_dir: Path,
    dtype: str | None = None,
    *,
    progress: Progress | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> Written:
    """Write the model of ``source_dir`` with only the path ``kept_path`` into ``out_dir`` (an
    existing, empty folder: the partial folder of an atomic export), in ``dtype`` (None: the
    checkpoint's own). Returns what was written; a one-line ``ExportError`` when the family, the
    path or the weights do not allow it."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from gaprune_tui.engine.export.lineage import export_dtype

    progress = progress or silent
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    source_config = read_config(source_dir, ExportError)
    layout = plan_layout(source_config, kept_path, source_dir / "config.json")
    out_dtype = export_dtype(dtype, source_config)
    torch_dtype = getattr(torch, out_dtype)
    config = export_config(source_config, layout, out_dtype)
    model = _meta_model(config, layout.family)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))

    progress(
        "merge",
        f"writing {len(layout.layers)}/{layout.n_source} layers without "
        f"{_removed_text(layout)} ({out_dtype})",
    )
    weights = source_weights(source_dir)
    headers: dict[Path, dict[str, Any]] = {}
    plan: list[tuple[str, str, Path, int]] = []  # (export name, source name, file, bytes)
    written = Written(layout, config, [], 0)
    for name in sorted(weights, key=_order):
        entry = _tensor_entry(weights[name], name, headers)
        target = layout.target(name)
        if target is None:
            written.removed.append(name)
            written.removed_params += _numel(entry)
            continue
        if tied and name == "lm_head.weight":
            continue  # the head is the input embedding: the config ties them
        size = _numel(entry) * _ITEMSIZE[out_dtype]
        plan.append((target, name, weights[name], size))
    _check_names(model, {target for target, *_ in plan}, tied)

    shards: list[list[tuple[str, str, Path, int]]] = [[]]
    for item in plan:
        if shards[-1] and sum(s for *_, s in shards[-1]) + item[3] > shard_bytes:
            shards.append([])
        shards[-1].append(item)
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    for shard_name, items in zip(names, shards, strict=True):
        tensors: dict[str, Any] = {}
        for file in sorted({f for _, _, f, _ in items}):
            with safe_open(str(file), framework="pt") as reader:
                for target, name, _, _ in (i for i in items if i[2] == file):
                    tensor = reader.get_tensor(name)
                    if tensor.is_floating_point():
                        tensor = tensor.to(torch_dtype)
                    tensors[target] = tensor.contiguous()
        save_file(tensors, str(out_dir / shard_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard_name))
        written.tensors += len(tensors)
        del tensors
    if len(names) > 1:
        index = {
            "metadata": {"total_size": sum(size for *_, size in plan)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    written.shards = names

    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    (out_dir / "config.json").write_text(text, encoding="utf-8")
    for file_name in COPIED_FILES:
        if (source_dir / file_name).is_file():
            shutil.copyfile(source_dir / file_name, out_dir / file_name)
    shutil.copyfile(Path(__file__).with_name(MODELING_FILE), out_dir / MODELING_FILE)
    if not any((out_dir / f).is_file() for f in _TOKENIZER_FILES):
        raise ExportError(
            f"{source_dir} has no tokenizer file ({', '.join(_TOKENIZER_FILES)}) to copy into the "
            "export: copy the base model's tokenizer files next to its config.json"
        )
    progress(
        "merge",
        f"wrote {written.tensors} tensors in {len(names)} file(s); left out {len(written.removed)} "
        f"tensors ({written.removed_params:,} parameters)",
    )
    return written


def _removed_text(layout: Layout) -> str:
    parts = []
    if layout.removed_layers:
        parts.append("layers " + ", ".join(map(str, layout.removed_layers)))
    if layout.removed_attention:
        parts.append("attn " + ", ".join(map(str, layout.removed_attention)))
    if layout.removed_mlp:
        parts.append("mlp " + ", ".join(map(str, layout.removed_mlp)))
    return " · ".join(parts) or "nothing"


def _meta_model(config: dict[str, Any], family: str) -> Any:
    """The export's model class built on the meta device (no memory): what the folder must hold.
    Building it also checks that the config is one transformers accepts."""
    import torch

    from gaprune_tui.engine.export import modeling_gaprune

    config_name, model_name = class_names(family)
    config_class = getattr(modeling_gaprune, config_name)
    model_class = getattr(modeling_gaprune, model_name)
    try:
        hf_config = config_class.from_dict(
            {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
        )
        with torch.device("meta"):
            return model_class(hf_config)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ExportError(
            f"transformers refuses the exported {family} config ({first_line(exc)}): "
            "report this as a bug"
        ) from exc


def _check_names(model: Any, names: set[str], tied: bool) -> None:
    """The tensors to write must be exactly the parameters of the export's model."""
    expected = {name for name, _ in model.named_parameters()}
    if tied:
        expected.discard("lm_head.weight")
    missing, extra = sorted(expected - names), sorted(names - expected)
    if missing:
        raise ExportError(
            f"the base model's safetensors lack {len(missing)} tensors the export needs "
            f"({', '.join(missing[:3])}): check that the weights are complete"
        )
    if extra:
        raise ExportError(
            f"the export would hold {len(extra)} tensors its model has no place for "
            f"({', '.join(extra[:3])}): report this as a bug"
        )


def export_sublayer(
    source_dir: Path,
    kept_path: Sequence[int],
    out: Path,
    *,
    dtype: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    finalize: Callable[[Path], None] | None = None,
) -> Path:
    """``write_sublayer`` into ``out``, atomically (``genome.build_atomically``): ``finalize``
    runs on the finished partial folder before the rename. Returns ``out``."""
    from gaprune_tui.engine.export.genome import build_atomically
    from gaprune_tui.engine.export.lineage import export_dtype

    report = progress or silent
    source_dir = Path(source_dir).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    source_config = read_config(source_dir, ExportError)
    plan_layout(source_config, kept_path, source_dir / "config.json")  # refuse before any work
    out_dtype = export_dtype(dtype, source_config)

    def write(folder: Path) -> None:
        write_sublayer(source_dir, kept_path, folder, out_dtype, progress=report)

    return build_atomically(
        out, force=force, protect=[source_dir], write=write, finalize=finalize, progress=report
    )
