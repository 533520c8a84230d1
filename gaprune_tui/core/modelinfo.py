"""What a model spec points at, read from its files alone, fast enough to run while the user types.

The TUI's setup screen calls ``inspect_model`` on every edit of the model field, so this module never
imports torch, transformers or the ``gguf`` package (200 ms to import). Resolving the spec and
reading ``config.json``, safetensors headers and GGUF headers is ``core.modelspec``'s job (shared
with the engine and the export); this module only turns what it reads into a ``ModelInfo``.
Loading the model for real is ``gaprune_tui.engine.model.load_model``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gaprune_tui.core.errors import ModelError
from gaprune_tui.core.modelspec import (
    DEMO_SPEC,
    EMBEDDED_GGUF,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    GgufHeader,
    Kind,
    causal_architectures,
    embedded_gguf_path,
    folder_params,
    hub_cache_dir,
    looks_like_hub_id,
    read_config,
    read_gguf_header,
    require_layer_count,
    resolve_spec,
)

__all__ = [
    "DEMO_SPEC",
    "EMBEDDED_GGUF",
    "EMBEDDED_NAME",
    "EMBEDDED_PACKAGE",
    "GgufHeader",
    "Kind",
    "ModelInfo",
    "embedded_gguf_path",
    "hub_cache_dir",
    "inspect_model",
    "looks_like_hub_id",
    "read_gguf_header",
    "scan_hf_cache",
]

# GGUF general.architecture -> the transformers class it becomes (for display only).
_GGUF_ARCHS = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "falcon": "FalconForCausalLM",
    "stablelm": "StableLmForCausalLM",
}


@dataclass
class ModelInfo:
    """A model as the setup screen shows it: enough to validate protect/prune before loading."""

    name: str
    kind: Kind
    path: Path
    model_type: str
    n_layers: int
    n_params: int | None
    size_bytes: int
    architectures: list[str] = field(default_factory=list)


def _inspect_folder(folder: Path, name: str, kind: Kind) -> ModelInfo:
    config = read_config(folder)
    archs = causal_architectures(config, name)
    n_layers = require_layer_count(config, folder / "config.json")
    return ModelInfo(
        name=name,
        kind=kind,
        path=folder,
        model_type=str(config.get("model_type") or "unknown"),
        n_layers=n_layers,
        n_params=folder_params(folder, config),
        size_bytes=sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
        architectures=archs,
    )


def _inspect_gguf(path: Path, name: str, kind: Kind) -> ModelInfo:
    header = read_gguf_header(path)
    if header.block_count is None:
        raise ModelError(
            f"{path} has no {header.architecture}.block_count in its metadata: it is not a decoder model gaprune-tui can prune"
        )
    arch_class = _GGUF_ARCHS.get(header.architecture)
    archs, size = [arch_class] if arch_class else [], path.stat().st_size
    # In field order: name, kind, path, model_type, n_layers, n_params, size_bytes, architectures.
    return ModelInfo(
        name, kind, path, header.architecture, header.block_count, header.n_params, size, archs
    )


def inspect_model(spec: str) -> ModelInfo:
    """Describe ``spec`` (``demo``, a folder, a ``.gguf`` or a cached hub id) or raise ``ModelError``."""
    resolved = resolve_spec(spec)
    if resolved.kind in ("embedded", "gguf"):
        info = _inspect_gguf(resolved.path, resolved.name, resolved.kind)
        if resolved.kind == "embedded":
            info.architectures = info.architectures or ["LlamaForCausalLM"]
        return info
    return _inspect_folder(resolved.path, resolved.name, resolved.kind)


def scan_hf_cache() -> list[ModelInfo]:
    """Causal LMs in the local Hugging Face cache (newest revision each); never raises."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir(hub_cache_dir())
    except Exception:  # a missing, empty or unreadable cache simply has no models to offer
        return []
    found: list[ModelInfo] = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        try:
            info = _inspect_folder(Path(revision.snapshot_path), repo.repo_id, "hub")
        except (ModelError, OSError, ValueError):
            continue
        info.size_bytes = repo.size_on_disk
        found.append(info)
    return found
