"""Load the base causal LM once: a local folder, a hub id from the local cache, a GGUF, or the demo.

GGUF files (the embedded SmolLM2 included) are dequantized once into a safetensors folder in the
cache dir, because transformers needs ~15-30 s to dequantize a GGUF and 0.5 s to load safetensors.
The conversion writes into a temp folder and renames it into place under a file lock, so a killed
or concurrent conversion never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gaprune_tui.core.devices import (
    auto_dtype,
    cpu_bf16_flags,
    cpu_bf16_reason,
    cuda_device_error,
)
from gaprune_tui.core.errors import ModelError
from gaprune_tui.core.modelspec import (
    DEMO_SPEC,
    DTYPE_ALIASES,
    EXPORT_DTYPES,
    ModelSpec,
    causal_architectures,
    embedded_gguf_path,
    first_line,
    read_config,
    read_gguf_header,
    resolve_spec,
    safetensors_header_bytes,
)
from gaprune_tui.core.paths import cache_dir
from gaprune_tui.engine.layers import LayerView

logger = logging.getLogger(__name__)

ORIGIN_FILE = "gaprune-origin.json"
# Bump when the conversion changes what lands in the cache folder, so old folders are not reused.
CONVERSION_VERSION = 1

# The dtype names (and their aliases, from core.modelspec) as torch dtypes.
_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in EXPORT_DTYPES}
_DTYPES.update({alias: _DTYPES[name] for alias, name in DTYPE_ALIASES.items()})


@dataclass
class LoadedModel:
    """The base model in memory with everything the scorer, search and export need to know."""

    tokenizer: Any
    name: str
    source: Path
    fingerprint: str
    view: LayerView
    device: torch.device
    dtype: torch.dtype
    family: str
    # Why this dtype (``choose_dtype``): engine log, store meta, result.json, ``show``.
    dtype_reason: str = ""

    @property
    def model(self) -> torch.nn.Module:
        """The model itself; the view holds it, with whichever layers it currently keeps."""
        return self.view.model

    @property
    def n_layers(self) -> int:
        """The base model's decoder-layer count (the view knows it)."""
        return self.view.n_layers

    @property
    def layer_path(self) -> str:
        """Dotted path of the decoder-layer list in the model (``model.layers`` for Llama)."""
        return self.view.location.path


# ---------------------------------------------------------------------------------------------
# Embedded model and GGUF conversion


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_sha256(path: Path) -> str:
    """sha256 of a GGUF, remembered by (path, size, mtime) so a multi-GB file is hashed once."""
    st = path.stat()
    index_path = cache_dir() / "models" / "gguf-sha256.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(key), str):
        return index[key]
    value = _sha256(path)
    index = index if isinstance(index, dict) else {}
    index[key] = value
    with contextlib.suppress(OSError):
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, index_path)
    return value


def _slug(text: str) -> str:
    keep = "".join(c.lower() if c.isalnum() else "-" for c in text)
    return "-".join(part for part in keep.split("-") if part) or "model"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_converted(folder: Path) -> bool:
    """A finished conversion by this version of the converter (the origin file is written last)."""
    try:
        origin = json.loads((folder / ORIGIN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(origin, dict) and origin.get("conversion_version") == CONVERSION_VERSION


def convert_gguf(gguf: Path, folder_name: str | None = None) -> Path:
    """Dequantize ``gguf`` into a safetensors folder in the cache (once) and return the folder."""
    gguf = gguf.resolve()
    read_gguf_header(gguf)  # a ModelError naming the file unless its header reads
    sha = _gguf_sha256(gguf)
    name = f"{folder_name or _slug(gguf.stem)}-{sha[:12]}"
    models = cache_dir() / "models"
    target = models / name
    if _is_converted(target):
        return target
    # The same GGUF reached under another name (the demo's file passed as a path) is reused.
    for existing in sorted(models.glob(f"*-{sha[:12]}")):
        if _is_converted(existing):
            return existing
    with _file_lock(models / f".{name}.lock"):
        if _is_converted(target):  # another process finished while we waited
            return target
        # Under the lock any temp folder for this name is left over from a killed conversion.
        for stale in models.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without a current origin file is not ours to trust
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=models))
        try:
            _convert_into(gguf, tmp, sha)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def gguf_causal_lm(gguf: Path) -> Any:
    """The model of a ``.gguf`` file as transformers reads it: dequantized to float32."""
    from transformers import AutoModelForCausalLM, GgufConfig

    return AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )


def _convert_into(gguf: Path, out: Path, sha: str) -> None:
    from transformers import AutoTokenizer

    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = gguf_causal_lm(gguf)
    except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise ModelError(
            f"transformers cannot read {gguf.name}: {first_line(exc)}; "
            "use a GGUF of a supported architecture or the original Hugging Face folder"
        ) from exc
    # A dequantized model is a plain dense model; without this save_pretrained refuses it.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - nn.Module typing
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    origin = {
        "gguf_path": str(gguf),
        "gguf_sha256": sha,
        "gguf_size": gguf.stat().st_size,
        "conversion_version": CONVERSION_VERSION,
        "converted_seconds": round(time.monotonic() - started, 1),
    }
    (out / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n")


def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted on first use)."""
    return convert_gguf(embedded_gguf_path(), folder_name="smollm2-135m-instruct")


# ---------------------------------------------------------------------------------------------
# Resolving a spec to a local folder


def local_folder(spec: ModelSpec) -> Path:
    """The safetensors folder transformers loads for ``spec`` (a GGUF is converted once first)."""
    if spec.kind == "embedded":
        return embedded_model_dir()
    if spec.kind == "gguf":
        return convert_gguf(spec.path)
    return spec.path


# ---------------------------------------------------------------------------------------------
# Fingerprint


def fingerprint_folder(folder: Path, dtype: torch.dtype) -> str:
    """A stable id for the weights + config in ``folder`` at ``dtype``, without reading the weights.

    Content-addressed where we can be (a GGUF we converted: its sha256; a hub snapshot: the blob
    names, which are the files' sha256); otherwise the safetensors headers plus each weight file's
    size and mtime, so rewriting a checkpoint in place changes the fingerprint.
    """
    digest = hashlib.sha256()
    config = json.loads((folder / "config.json").read_text())
    config.pop("_name_or_path", None)
    config.pop("transformers_version", None)
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(f"|dtype={str(dtype).removeprefix('torch.')}|".encode())
    origin = folder / ORIGIN_FILE
    if origin.is_file():
        info = json.loads(origin.read_text())
        digest.update(f"gguf:{info['gguf_sha256']}:{info.get('conversion_version')}".encode())
        return digest.hexdigest()[:20]
    weights = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt", ".pth") or p.name.endswith(".index.json")
    )
    if not weights:
        raise ModelError(
            f"{folder} has no weight files (*.safetensors or *.bin): copy the weights next to config.json"
        )
    for path in weights:
        digest.update(path.name.encode())
        if path.is_symlink() and path.resolve().parent.name == "blobs":
            digest.update(b"blob:" + path.resolve().name.encode())
            continue
        st = path.stat()
        digest.update(f":{st.st_size}:{st.st_mtime_ns}:".encode())
        if path.suffix == ".safetensors":
            digest.update(safetensors_header_bytes(path))
    return digest.hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    value = (device or "auto").strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(value)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(
            f"device {device} asked for but MPS is not available here: use --device cpu or auto"
        )
    if resolved.type == "cuda":
        error = cuda_device_error(str(device), cuda_count())
        if error is not None:
            raise ModelError(error)
    return resolved


def cuda_count() -> int:
    """CUDA devices torch can use here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, config: dict[str, Any]
) -> torch.dtype:
    """The torch dtype ``choose_dtype`` picks (callers that need no reason)."""
    return choose_dtype(dtype, device, config)[0]


def choose_dtype(
    dtype: str | torch.dtype,
    device: torch.device,
    config: dict[str, Any],
    cpuinfo: str | None = None,
    cuda_bf16: bool | None = None,
) -> tuple[torch.dtype, str]:
    """The dtype to load in and a one-line reason for the log, result.json and the screens.

    ``auto`` is bfloat16 where the hardware does it natively and float32 otherwise
    (``core.devices.auto_dtype``), whatever the checkpoint was saved in: bfloat16 scores hold the
    bfloat16 contract (``engine.flips``). ``cpuinfo`` stands in for /proc/cpuinfo and
    ``cuda_bf16`` for torch's answer on a CUDA device, in tests. ``config`` (the checkpoint's) is
    not consulted any more; it stays for the callers.
    """
    del config
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
        return dtype, f"{name}: asked for"
    value = (dtype or "auto").strip().lower()
    if value == "auto":
        if device.type == "cuda" and cuda_bf16 is None:
            cuda_bf16 = cuda_bf16_native(device)
        choice = auto_dtype(device.type, cuda_bf16=cuda_bf16, cpuinfo=cpuinfo)
        return _DTYPES[choice.dtype], choice.reason
    if value not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    chosen = _DTYPES[value]  # an alias (bf16, fp32, ...) is named by its canonical name
    if chosen == torch.bfloat16 and device.type == "cpu":
        return chosen, cpu_bf16_reason(cpuinfo)
    return chosen, f"{str(chosen).removeprefix('torch.')}: asked for"


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether this CUDA device does bfloat16 natively (not torch's emulation on older GPUs)."""
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a torch without the argument never counted emulation
            return bool(torch.cuda.is_bf16_supported())


def _check_causal(config: dict[str, Any], where: str, trust_remote_code: bool) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    auto_map = config.get("auto_map") or {}
    native = model_type in CONFIG_MAPPING_NAMES
    if not native:
        if auto_map:
            if not trust_remote_code:
                raise ModelError(
                    f"{where} needs its own Python code (model_type {model_type!r}, auto_map in config.json): "
                    "pass --trust-remote-code if you trust its author"
                )
            if "AutoModelForCausalLM" not in auto_map:
                raise ModelError(
                    f"{where} is not a causal language model (its code has no AutoModelForCausalLM): pass a decoder-only LM"
                )
            return
        raise ModelError(
            f"{where} has an unknown model_type {model_type!r}: upgrade transformers or pass a supported causal LM"
        )
    causal_architectures(config, where)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{where} ({model_type}) is not a causal language model transformers can load: "
            "pass a decoder-only LM (…ForCausalLM / …LMHeadModel)"
        )


def load_model(
    spec: str = DEMO_SPEC,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``spec`` (``demo``, a model folder, a ``.gguf`` or a cached hub id) ready for layer views."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Per-tensor progress bars only clutter the engine log and the CLI's own progress display.
    hf_logging.disable_progress_bar()
    resolved = resolve_spec(spec)
    folder = local_folder(resolved)
    config = read_config(folder)
    _check_causal(config, resolved.name, trust_remote_code)
    torch_device = resolve_device(device)
    torch_dtype, dtype_reason = choose_dtype(dtype, torch_device, config)
    if torch_dtype == torch.bfloat16 and torch_device.type == "cpu" and not cpu_bf16_flags():
        logger.warning("dtype %s", dtype_reason)  # emulated: slow
    else:
        logger.info("dtype %s", dtype_reason)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if torch_device.type != "cpu":
        kwargs["device_map"] = str(torch_device)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, ImportError, NotImplementedError) as exc:
        raise ModelError(
            f"cannot load the model in {folder}: {first_line(exc)}; check that the weights are complete"
        ) from exc
    if torch_device.type == "cpu":
        model.to(torch_device)  # type: ignore[arg-type]  # transformers' to() is typed loosely
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"no usable tokenizer in {folder}: {first_line(exc)}; copy the tokenizer files of the base model next to config.json"
        ) from exc
    return LoadedModel(
        tokenizer=tokenizer,
        name=resolved.name,
        source=folder,
        fingerprint=fingerprint_folder(folder, torch_dtype),
        view=LayerView(model),
        device=torch_device,
        dtype=torch_dtype,
        family=str(getattr(model.config, "model_type", config.get("model_type", "unknown"))),
        dtype_reason=dtype_reason,
    )
