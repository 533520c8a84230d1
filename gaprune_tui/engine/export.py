"""Export a genome as a standalone Hugging Face model through MergeKit: verified, atomic, documented.

``export_genome`` is the MergeKit part: a passthrough configuration with one slice per contiguous
run of kept layers, run through MergeKit's Python API into a hidden ``.<name>.partial-<pid>`` folder
beside the target, renamed into place only when everything (verification and model card included)
is written. A failure or Ctrl+C renames the partial folder to ``<name>.failed-<timestamp>`` with a
``FAILED.txt`` holding the reason; a kill -9 leaves the ``.partial-<pid>`` folder, recognisably
named. The target is never half-written.

``export_run`` picks the N-th best genome of a run from the run store (read-only, so it works while
the search is still running), exports it, and by default verifies it: logits on a fixed batch of
prompts against the in-memory layer view of the same genome, a greedy ``generate`` with the KV
cache, and a re-score on the run's tasks that must reproduce the stored fitness. The outcome goes
into the model card (``README.md``), ``gaprune.json`` and the run store (``export_finished``).

MergeKit 0.1.5 sets the layer count of the output config but leaves per-layer config lists such as
``layer_types`` (Qwen2/3, Gemma, Mistral-style configs) at the base model's length, so transformers
refuses to save the config. ``per_layer_config_adapter`` fixes that for the duration of one merge
by wrapping MergeKit's output-config hook; see its docstring.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import os
import random
import shutil
import struct
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ExportError, GapruneError, StoreError

EXPORT_DTYPES = ("bfloat16", "float16", "float32")
# Logits of the export against the layer view of the same genome, both loaded by from_pretrained at
# the export's dtype: the weights are bit-identical, so we expect 0 (measured: 0 in float32 and
# bfloat16 on CPU). Half precision is allowed a margin relative to the logit scale because GPU
# kernels may pick different reduction orders; float32 must be exact.
LOGIT_TOLERANCE = {"float32": 0.0, "bfloat16": 2e-2, "float16": 2e-3}
FITNESS_TOLERANCE = 1e-9
VERIFY_PROMPTS = (
    "The capital of France is",
    "Question: What do plants need to grow?\nAnswer:",
    "She opened the door, walked into the kitchen and",
    "def fibonacci(n):",
)
GENERATE_TOKENS = 12
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
_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_SUB_CONFIGS = ("text_config", "language_config", "llm_config")
CARD_FILE = "README.md"
LINEAGE_FILE = "gaprune.json"
MERGEKIT_FILE = "mergekit_config.yml"
RUN_CONFIG_FILE = "gaprune-run-config.toml"
FAILED_FILE = "FAILED.txt"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # upstream of the embedded GGUF
EMBEDDED_LICENSE = "apache-2.0"

Progress = Callable[..., None]


# ---------------------------------------------------------------------------------------------
# Plain data


@dataclass
class Verification:
    """What the verification of one export measured. ``passed`` is the verdict."""

    dtype: str
    search_dtype: str
    prompts: int
    logits_max_abs_diff: float
    logits_tolerance: float
    logits_ok: bool
    tokenizer_ok: bool
    generate_ok: bool
    generate_matches_view: bool
    generated_text: str
    fitness_stored: float
    fitness_export: float | None
    fitness_required: bool
    fitness_ok: bool | None
    scores_stored: dict[str, dict[str, float]]
    scores_export: dict[str, dict[str, float]] | None
    seconds: float
    passed: bool

    def summary(self) -> str:
        """One line for the CLI and the card."""
        logits = (
            "logits identical"
            if self.logits_max_abs_diff == 0
            else f"logits max |diff| {self.logits_max_abs_diff:.3g} (tolerance {self.logits_tolerance:.3g})"
        )
        if self.fitness_export is None:
            fitness = "fitness not re-scored"
        else:
            same = "reproduced" if self.fitness_ok else "differs"
            fitness = (
                f"fitness {same}: {self.fitness_export:.6f} vs stored {self.fitness_stored:.6f}"
            )
            if not self.fitness_required:
                fitness += f" (informational: searched in {self.search_dtype})"
        gen = (
            "generate ok" if self.generate_ok and self.generate_matches_view else "generate FAILED"
        )
        verdict = "verified" if self.passed else "NOT verified"
        return f"{verdict} ({self.dtype}): {logits}; {gen}; {fitness}"


@dataclass
class ExportResult:
    """What ``export_run`` produced; also written to ``gaprune.json`` (with more lineage)."""

    path: Path
    run_id: str
    rank: int
    dropped: list[int]
    kept: list[int]
    dtype: str
    fitness: float
    params_before: int | None
    params_after: int | None
    size_bytes: int
    verified: bool | None
    verification: Verification | None
    seconds: float
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "run_id": self.run_id,
            "rank": self.rank,
            "dropped": self.dropped,
            "kept": self.kept,
            "dtype": self.dtype,
            "fitness": self.fitness,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "size_bytes": self.size_bytes,
            "verified": self.verified,
            "verification": asdict(self.verification) if self.verification else None,
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------------------------------------
# Progress


def _report(progress: Progress | None, stage: str, message: str) -> None:
    """Call ``progress(message)``, passing ``stage=`` too when the callback accepts it.

    The public signature stays a plain ``Callable[[str], None]``; the CLI's JSON mode (and the TUI
    following it) also wants the stage name, so a callback that takes a ``stage`` keyword gets it.
    """
    if progress is None:
        return
    try:
        params = inspect.signature(progress).parameters
    except (TypeError, ValueError):
        params = {}
    takes_stage = "stage" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    if takes_stage:
        progress(message, stage=stage)
    else:
        progress(message)


# ---------------------------------------------------------------------------------------------
# Small helpers on model folders


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{path} does not exist: export needs a Hugging Face model folder"
        ) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path} ({exc}): the model folder is damaged") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} is not a JSON object: the model folder is damaged")
    return data


def layer_count(config: dict[str, Any]) -> int:
    """The decoder-layer count of a ``config.json`` (top level or a nested text config)."""
    for cfg in [config] + [config[s] for s in _SUB_CONFIGS if isinstance(config.get(s), dict)]:
        for key in _COUNT_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    raise ExportError(
        f"config.json has no layer count ({', '.join(_COUNT_KEYS)}): this architecture cannot be exported"
    )


def contiguous_runs(kept: Sequence[int]) -> list[tuple[int, int]]:
    """``[0, 1, 3, 4, 5]`` -> ``[(0, 2), (3, 6)]``: half-open ranges, one MergeKit slice each."""
    runs: list[tuple[int, int]] = []
    for idx in sorted(kept):
        if runs and runs[-1][1] == idx:
            runs[-1] = (runs[-1][0], idx + 1)
        else:
            runs.append((idx, idx + 1))
    return runs


def mergekit_config(source_dir: Path, kept: Sequence[int], dtype: str) -> dict[str, Any]:
    """The passthrough configuration for ``kept`` (the YAML saved beside the model)."""
    return {
        "merge_method": "passthrough",
        "dtype": dtype,
        "slices": [
            {"sources": [{"model": str(source_dir), "layer_range": [a, b]}]}
            for a, b in contiguous_runs(kept)
        ],
    }


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def checkpoint_dtype(config: dict[str, Any]) -> str:
    """The dtype the checkpoint was saved in (float32 when the config does not say)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in EXPORT_DTYPES else "float32"


def safetensors_params(folder: Path) -> int | None:
    """Parameters stored in a folder's safetensors files, read from their headers (no weights)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    names: dict[str, int] = {}
    for path in files:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                names[name] = math.prod(info["shape"])
    return sum(names.values())


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")


# ---------------------------------------------------------------------------------------------
# The MergeKit adapter for per-layer config lists


def slice_per_layer_fields(config: Any, source_layers: Sequence[int], n_source: int) -> list[str]:
    """Slice every per-layer list field of ``config`` (and nested text configs) to ``source_layers``.

    Only lists whose length is the source layer count are touched, so a field that happens to
    share a name but is not per layer is left alone. Returns the names of the fields sliced.
    """
    sliced = []
    configs = [config] + [
        getattr(config, s) for s in _SUB_CONFIGS if getattr(config, s, None) is not None
    ]
    for cfg in configs:
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


# ---------------------------------------------------------------------------------------------
# Atomic folder handling


def check_target(out: Path, force: bool, *, protect: Sequence[Path] = ()) -> None:
    """Refuse a target that exists and is not empty (unless ``force``), or that would clobber
    something we must never delete (the base model, the run folder)."""
    out = Path(out).expanduser().resolve()
    for keep in protect:
        keep = Path(keep).resolve()
        if out == keep or out in keep.parents:
            raise ExportError(
                f"export folder {out} would replace {keep}: choose another --out folder"
            )
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"export target {out} is a file: choose another --out folder")
    if any(out.iterdir()) and not force:
        raise ExportError(
            f"export folder {out} already exists and is not empty: pass --force to replace it or --out to choose another"
        )


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _mark_failed(partial: Path, out: Path, exc: BaseException) -> Path:
    """Rename the partial folder to ``<name>.failed-<timestamp>`` and write the reason into it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    failed = out.parent / f"{out.name}.failed-{stamp}"
    if failed.exists():
        failed = out.parent / f"{out.name}.failed-{stamp}-{os.getpid()}"
    reason = (
        "interrupted (KeyboardInterrupt)"
        if isinstance(exc, KeyboardInterrupt)
        else f"{type(exc).__name__}: {exc}"
    )
    text = (
        f"gaprune-tui export FAILED at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"target: {out} (left untouched)\nreason: {reason}\n\n"
        "This folder holds whatever was written before the failure; it is not a usable model.\n\n"
        + "".join(traceback.format_exception(exc))
    )
    with contextlib.suppress(OSError):
        partial.mkdir(parents=True, exist_ok=True)
        (partial / FAILED_FILE).write_text(text, encoding="utf-8")
    try:
        os.rename(partial, failed)
    except OSError:
        return partial
    return failed


def _install(partial: Path, out: Path) -> None:
    """Rename the finished partial folder onto the target (replacing an old one if there is one)."""
    old: Path | None = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.replaced-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(out, old)
        else:
            out.rmdir()
    try:
        os.rename(partial, out)
    except BaseException:
        if old is not None and not out.exists():
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fix_permissions(folder: Path) -> None:
    """MergeKit writes shards 0600 (via temp files); give every file the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


# ---------------------------------------------------------------------------------------------
# The MergeKit part


def _resolve_dtype(dtype: str | None, config: dict[str, Any]) -> str:
    if dtype is None:
        return checkpoint_dtype(config)
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}
    value = aliases.get(dtype, dtype)
    if value not in EXPORT_DTYPES:
        raise ExportError(f"unknown export dtype {dtype!r}: use {', '.join(EXPORT_DTYPES)}")
    return value


def _check_kept(kept: Sequence[int], n_layers: int) -> list[int]:
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


def _run_mergekit(
    source_dir: Path, kept: list[int], n_layers: int, dtype: str, folder: Path, trust: bool
) -> list[str]:
    import logging

    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = mergekit_config(source_dir, kept, dtype)
    (folder / MERGEKIT_FILE).write_text(_yaml(config), encoding="utf-8")
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
        model_type = _read_json(source_dir / "config.json").get("model_type", "?")
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
            f"MergeKit could not export this {model_type} model ({_first_line(exc)}): "
            "check that MergeKit 0.1.5 supports the architecture"
        ) from exc
    finally:
        mk_logger.setLevel(level)
    return sliced


def _check_written(folder: Path, kept: list[int]) -> None:
    """The written config must describe exactly the kept layers, and the tokenizer must be there."""
    config = _read_json(folder / "config.json")
    if layer_count(config) != len(kept):
        raise ExportError(
            f"MergeKit wrote a config with {layer_count(config)} layers instead of {len(kept)}: report this as a bug"
        )
    for cfg in [config] + [config[s] for s in _SUB_CONFIGS if isinstance(config.get(s), dict)]:
        for name in PER_LAYER_CONFIG_FIELDS:
            value = cfg.get(name)
            if isinstance(value, list) and len(value) != len(kept):
                raise ExportError(
                    f"the exported config's {name} has {len(value)} entries for {len(kept)} layers: report this as a bug"
                )
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ExportError(
            "MergeKit wrote no tokenizer into the export: copy the base model's tokenizer files next to its config.json"
        )


def export_genome(
    source_dir: Path,
    kept: Sequence[int],
    out: Path,
    *,
    dtype: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    trust_remote_code: bool = False,
    finalize: Callable[[Path], None] | None = None,
) -> Path:
    """Write the model keeping only ``kept`` layers of ``source_dir`` into ``out``, atomically.

    ``dtype`` None keeps the checkpoint's own dtype (lossless). ``finalize(folder)`` runs on the
    finished partial folder before the rename (``export_run`` verifies and writes the card there),
    so the target only ever appears complete. Returns ``out``.
    """
    source_dir = Path(source_dir).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    src_config = _read_json(source_dir / "config.json")
    n_layers = layer_count(src_config)
    kept = _check_kept(kept, n_layers)
    out_dtype = _resolve_dtype(dtype, src_config)
    check_target(out, force, protect=[source_dir])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_dir(out)
    if partial.exists():  # a leftover of a killed process that had our pid
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        runs = contiguous_runs(kept)
        _report(
            progress,
            "merge",
            f"MergeKit passthrough: {len(kept)}/{n_layers} layers in {len(runs)} slices ({out_dtype})",
        )
        sliced = _run_mergekit(source_dir, kept, n_layers, out_dtype, partial, trust_remote_code)
        if sliced:
            _report(progress, "merge", f"sliced per-layer config fields: {', '.join(sliced)}")
        _check_written(partial, kept)
        if finalize is not None:
            finalize(partial)
        _fix_permissions(partial)
        check_target(out, force, protect=[source_dir])  # someone may have created it meanwhile
        _install(partial, out)
    except BaseException as exc:
        failed = _mark_failed(partial, out, exc)
        if isinstance(exc, GapruneError):
            raise type(exc)(f"{exc} (partial export kept in {failed})") from exc
        raise
    _report(progress, "done", f"wrote {out}")
    return out


# ---------------------------------------------------------------------------------------------
# Verification


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class _Reference:
    """What the in-memory layer view of the genome computed, to compare the export against."""

    input_ids: list[list[int]]
    logits: list[Any]  # float32 CPU tensors, one per prompt
    generated: list[int]
    dtype: str
    search_dtype: str


def _generate(model: Any, tokenizer: Any, ids: list[int], device: Any) -> list[int]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=GENERATE_TOKENS,
            min_new_tokens=GENERATE_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad,
        )
    return out[0, len(ids) :].tolist()


def _reference(loaded: Any, kept: list[int], search_dtype: str) -> _Reference:
    """Logits and a greedy continuation of the layer view (``loaded`` is at the export's dtype)."""
    import torch

    tok = loaded.tokenizer
    input_ids = [tok(p, add_special_tokens=True)["input_ids"] for p in VERIFY_PROMPTS]
    logits = []
    with loaded.view.view(kept), torch.no_grad():
        for ids in input_ids:
            x = torch.tensor([ids], device=loaded.device)
            logits.append(loaded.model(x).logits[0].float().cpu())
        generated = _generate(loaded.model, tok, input_ids[0], loaded.device)
    return _Reference(input_ids, logits, generated, _dtype_name(loaded.dtype), search_dtype)


def _collect() -> None:
    """Give memory back after dropping the last reference to a model (7B models come in pairs)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _compare_export(
    folder: Path, ref: _Reference, device: Any, trust: bool
) -> tuple[float, bool, bool, list[int], str]:
    """Load the export with plain transformers (no gaprune code) and compare with the view."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=_torch_dtype(ref.dtype), trust_remote_code=trust
    )
    model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    tokenizer_ok = [
        tok(p, add_special_tokens=True)["input_ids"] for p in VERIFY_PROMPTS
    ] == ref.input_ids
    diff = 0.0
    with torch.no_grad():
        for ids, expected in zip(ref.input_ids, ref.logits, strict=True):
            x = torch.tensor([ids], device=device)
            got = model(x).logits[0].float().cpu()
            diff = max(diff, float((got - expected).abs().max()))
    generated = _generate(model, tok, ref.input_ids[0], device)
    text = tok.decode(generated, skip_special_tokens=True)
    del model
    _collect()
    return diff, tokenizer_ok, len(generated) == GENERATE_TOKENS, generated, text


def _scores_equal(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    if set(a) != set(b):
        return False
    for task, metrics in a.items():
        for metric, value in metrics.items():
            other = b[task].get(metric)
            if other is None or abs(float(other) - float(value)) > FITNESS_TOLERANCE:
                return False
    return True


def _score(loaded: Any, taskset: Any, config: RunConfig) -> dict[str, dict[str, float]]:
    """Score a loaded model on the run's tasks with the run's scorer, leaving global RNG alone."""
    import torch

    from gaprune_tui.engine.scoring import make_lm

    lm = make_lm(
        loaded,
        config.scorer,
        prefix_cache=config.prefix_cache,
        prefix_cache_mb=config.prefix_cache_mb,
    )
    state = random.getstate()
    try:
        with torch.no_grad():
            return taskset.evaluate(lm)
    finally:
        random.setstate(state)


def fitness_of(scores: dict[str, dict[str, float]], kind: str) -> float:
    from gaprune_tui.engine.search import fitness_of as search_fitness

    return search_fitness(scores, kind)


def _verify(
    folder: Path,
    ref: _Reference,
    device: Any,
    taskset: Any,
    config: RunConfig,
    best: Any,
    progress: Progress | None,
) -> Verification:
    """Compare the export in ``folder`` with the layer view (``ref``) and re-score it."""
    from gaprune_tui.engine.model import load_model

    started = time.perf_counter()
    _report(progress, "verify", "comparing logits and generate with the layer view")
    diff, tokenizer_ok, generate_ok, generated, text = _compare_export(
        folder, ref, device, config.trust_remote_code
    )
    scale = max(1.0, max(float(t.abs().max()) for t in ref.logits))
    tolerance = LOGIT_TOLERANCE[ref.dtype] * scale
    _report(progress, "rescore", "re-scoring the export on the run's tasks")
    exported = load_model(
        str(folder), dtype=ref.dtype, device=device, trust_remote_code=config.trust_remote_code
    )
    scores = _score(exported, taskset, config)
    del exported
    _collect()
    fitness = fitness_of(scores, config.fitness)
    # Scores only have to reproduce when the export computes in the dtype the search used.
    required = ref.dtype == ref.search_dtype
    fitness_ok = abs(fitness - best.fitness) <= FITNESS_TOLERANCE and _scores_equal(
        best.scores, scores
    )
    matches_view = generated == ref.generated
    verification = Verification(
        dtype=ref.dtype,
        search_dtype=ref.search_dtype,
        prompts=len(VERIFY_PROMPTS),
        logits_max_abs_diff=diff,
        logits_tolerance=tolerance,
        logits_ok=diff <= tolerance,
        tokenizer_ok=tokenizer_ok,
        generate_ok=generate_ok,
        generate_matches_view=matches_view,
        generated_text=text,
        fitness_stored=best.fitness,
        fitness_export=fitness,
        fitness_required=required,
        fitness_ok=fitness_ok,
        scores_stored=best.scores,
        scores_export=scores,
        seconds=time.perf_counter() - started,
        passed=diff <= tolerance
        and tokenizer_ok
        and generate_ok
        and matches_view
        and (fitness_ok or not required),
    )
    _report(progress, "verify", verification.summary())
    return verification


# ---------------------------------------------------------------------------------------------
# Model card


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def reproduce_commands(config: RunConfig, rank: int, dtype: str | None) -> list[str]:
    """The ``gaprune-tui run`` flags of the config (or the shipped TOML) and the export command.

    The flags that define the search are always spelled out, so the line still reproduces the run
    if a default changes; the rest only when they differ from the default.
    """
    default = RunConfig()
    always = ("model", "limit", "num_fewshot", "prune", "protect", "population", "generations")
    always += ("seed", "fitness")
    expressible = all(t.num_fewshot is None and t.limit is None for t in config.tasks)
    if expressible:
        tasks = ",".join(t.name + (f":{t.metric}" if t.metric else "") for t in config.tasks)
        parts = ["gaprune-tui run", f"--model {_shell(config.model)}", f"--tasks {_shell(tasks)}"]
        for key, value in config.to_dict().items():
            if key in ("model", "tasks", "include_path", "trust_remote_code", "prefix_cache"):
                continue
            if key in always or value != getattr(default, key):
                parts.append(f"--{key.replace('_', '-')} {_shell(str(value))}")
        parts.extend(f"--include-path {_shell(p)}" for p in config.include_path)
        if config.trust_remote_code:
            parts.append("--trust-remote-code")
        if not config.prefix_cache:
            parts.append("--no-prefix-cache")
        run_cmd = " ".join(parts)
    else:
        run_cmd = f"gaprune-tui run --config {RUN_CONFIG_FILE}"
    export_cmd = "gaprune-tui export RUN_ID" + (f" --rank {rank}" if rank != 1 else "")
    if dtype:
        export_cmd += f" --dtype {dtype}"
    return [run_cmd, export_cmd]


def _shell(text: str) -> str:
    import shlex

    return shlex.quote(text)


def render_card(lineage: dict[str, Any]) -> str:
    """The model card (README.md) from the lineage dict that also goes into gaprune.json."""
    base = lineage["base_model"]
    kept, dropped = lineage["kept_layers"], lineage["dropped_layers"]
    n = len(kept) + len(dropped)
    before, after = lineage.get("params_before"), lineage.get("params_after")
    removed = f"{100 * (before - after) / before:.1f}%" if before and after is not None else "?"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gaprune-tui, mergekit, layer-pruning, passthrough]",
    ]
    if base.get("hub_id"):
        lines.append(f"base_model: {base['hub_id']}")
    if base.get("license"):
        lines.append(f"license: {base['license']}")
    lines += [
        "---",
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
        f"| Parameters | {_fmt_params(before)} -> {_fmt_params(after)} ({removed} removed) |",
        f"| Size on disk | {_fmt_bytes(lineage['size_bytes'])} ({lineage['dtype']}) |",
        f"| Run | `{lineage['run']['id']}`, rank {lineage['run']['rank']} "
        f"of {lineage['run']['evaluated_genomes']} evaluated genomes |",
        "",
        "## Scores",
        "",
    ]
    lines += _score_table(lineage)
    lines += ["", "## Verification", ""]
    ver = lineage.get("verification")
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


# ---------------------------------------------------------------------------------------------
# Exporting a run's genome


def _open_run(run: str | Path) -> Any:
    from gaprune_tui.core.store import RunStore

    try:
        return RunStore.open(run)
    except StoreError as exc:
        raise ExportError(str(exc)) from None


def _last_event(store: Any, kind: str) -> dict[str, Any] | None:
    found = None
    for ev in store.events():
        if ev.kind == kind:
            found = ev.payload
    return found


def default_out(run_path: Path, rank: int, dropped: Sequence[int]) -> Path:
    return Path(run_path) / "exports" / f"rank{rank}-drop-{'-'.join(map(str, dropped)) or 'none'}"


def _source_dir(config: RunConfig) -> Path:
    """The local folder of the base model, without loading its weights."""
    from gaprune_tui.engine import model as model_mod

    return Path(model_mod._resolve(config.model).folder)


def export_run(
    run: str | Path,
    *,
    rank: int = 1,
    out: Path | str | None = None,
    dtype: str | None = None,
    verify: bool = True,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the ``rank``-th best distinct genome of ``run`` (full fidelity) and verify it."""
    started = time.perf_counter()
    store = _open_run(run)
    try:
        return _export_run(store, rank, out, dtype, verify, force, progress, started)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            store.add_event("export_failed", rank=rank, error=_first_line(exc))
        raise
    finally:
        store.close()


def _export_run(
    store: Any,
    rank: int,
    out: Path | str | None,
    dtype: str | None,
    verify: bool,
    force: bool,
    progress: Progress | None,
    started: float,
) -> ExportResult:
    from gaprune_tui import __version__

    config = store.config()
    ranked = store.best_evaluations()
    if not ranked:
        raise ExportError(
            f"run {store.id} has no fully evaluated genome yet: wait for its first evaluation"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(ranked):
        raise ExportError(
            f"run {store.id} has only {len(ranked)} evaluated genomes: use --rank 1..{len(ranked)}"
        )
    best = ranked[rank - 1]
    target = Path(out).expanduser() if out else default_out(store.path, rank, best.dropped)
    target = target.resolve()
    check_target(target, force, protect=[store.path])
    if dtype is not None:
        _resolve_dtype(dtype, {})
    _report(
        progress,
        "select",
        f"run {store.id}: rank {rank}/{len(ranked)}, drop {best.dropped}, fitness {best.fitness:.6f}",
    )

    base_event = _last_event(store, "base_scores")
    base_scores = base_event.get("scores") if base_event else None
    base_fitness = base_event.get("fitness") if base_event else None
    verification: Verification | None = None
    state: dict[str, Any] = {}

    source = _source_dir(config)
    src_config = _read_json(source / "config.json")
    out_dtype = _resolve_dtype(dtype, src_config)
    params_before = safetensors_params(source)
    if verify:
        from gaprune_tui.engine.model import load_model, resolve_device, resolve_dtype
        from gaprune_tui.engine.tasks import build_tasks

        device = resolve_device(config.device)
        search_dtype = _dtype_name(resolve_dtype(config.dtype, device, src_config))
        taskset = build_tasks(config)

        def load(dtype_name: str) -> Any:
            _report(progress, "load", f"loading the base model {config.model} ({dtype_name})")
            loaded = load_model(
                config.model,
                dtype=dtype_name,
                device=device,
                trust_remote_code=config.trust_remote_code,
            )
            if loaded.n_layers != len(best.kept) + len(best.dropped):
                raise ExportError(
                    f"the run's genome covers {len(best.kept) + len(best.dropped)} layers but "
                    f"{config.model} now has {loaded.n_layers}: the base model changed since the run"
                )
            return loaded

        loaded = None
        if base_scores is None:
            # Base scores belong to the search's dtype, whatever the export's.
            loaded = load(search_dtype)
            _report(progress, "base", "scoring the base model (no base_scores in the run)")
            base_scores = _score(loaded, taskset, config)
            base_fitness = fitness_of(base_scores, config.fitness)
        if loaded is None or search_dtype != out_dtype:
            # Loaded at the export's dtype rather than cast with .to(): from_pretrained keeps some
            # buffers (rotary inv_freq) in float32 that .to() would round, and the export itself is
            # loaded the from_pretrained way.
            del loaded
            _collect()
            loaded = load(out_dtype)
        if params_before is None:
            params_before = sum(p.numel() for p in loaded.model.parameters())
        _report(progress, "reference", f"layer view of the genome on the base model ({out_dtype})")
        ref = _reference(loaded, best.kept, search_dtype)
        device = loaded.device
        del loaded
        _collect()

        def finalize(folder: Path) -> None:
            nonlocal verification
            verification = _verify(folder, ref, device, taskset, config, best, progress)
            if not verification.passed:
                raise ExportError(f"verification failed: {verification.summary()}")
            _write_card(folder)

    else:

        def finalize(folder: Path) -> None:
            _write_card(folder)

    def _write_card(folder: Path) -> None:
        _report(progress, "card", "writing the model card and gaprune.json")
        lineage = {
            "gaprune_version": __version__,
            "base_model": {
                "spec": config.model,
                "name": _display_name(config.model, source),
                "path": str(source),
                "hub_id": _hub_id(config.model),
                "license": EMBEDDED_LICENSE if config.model == "demo" else None,
                "model_type": src_config.get("model_type"),
                "n_layers": len(best.kept) + len(best.dropped),
            },
            "dropped_layers": best.dropped,
            "kept_layers": best.kept,
            "dtype": out_dtype,
            "params_before": params_before,
            "params_after": safetensors_params(folder),
            "size_bytes": folder_size(folder),
            "scores": {"pruned": best.scores, "base": base_scores},
            "fitness": {"kind": config.fitness, "pruned": best.fitness, "base": base_fitness},
            "run": {
                "id": store.id,
                "path": str(store.path),
                "rank": rank,
                "evaluated_genomes": len(ranked),
                "generation": best.generation,
                "state": store.state,
            },
            "config": config.to_dict(),
            "config_toml": config.to_toml(),
            "verification": asdict(verification) if verification else None,
            "verified": verification.passed if verification else None,
            "reproduce": reproduce_commands(config, rank, dtype),
            "mergekit": {"config": MERGEKIT_FILE, "slices": contiguous_runs(best.kept)},
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (folder / RUN_CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
        (folder / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_FILE).write_text(render_card(lineage), encoding="utf-8")
        state["lineage"] = lineage

    path = export_genome(
        source,
        best.kept,
        target,
        dtype=out_dtype,
        force=force,
        progress=progress,
        trust_remote_code=config.trust_remote_code,
        finalize=finalize,
    )
    lineage = state["lineage"]
    result = ExportResult(
        path=path,
        run_id=store.id,
        rank=rank,
        dropped=best.dropped,
        kept=best.kept,
        dtype=out_dtype,
        fitness=best.fitness,
        params_before=params_before,
        params_after=lineage["params_after"],
        size_bytes=folder_size(path),
        verified=verification.passed if verification else None,
        verification=verification,
        seconds=time.perf_counter() - started,
        lineage=lineage,
    )
    store.add_event(
        "export_finished",
        path=str(path),
        rank=rank,
        dropped=best.dropped,
        kept=best.kept,
        dtype=out_dtype,
        fitness=best.fitness,
        verified=result.verified,
        summary=verification.summary() if verification else "not verified (--no-verify)",
        params_before=params_before,
        params_after=result.params_after,
        size_bytes=result.size_bytes,
    )
    return result


def _hub_id(spec: str) -> str | None:
    """The base model's hub id for the card's ``base_model`` (the embedded demo's upstream too)."""
    if spec == "demo":
        return EMBEDDED_HUB_ID
    return spec if _is_hub_id(spec) else None


def _is_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not Path(spec).expanduser().exists()


def _display_name(spec: str, source: Path) -> str:
    if spec == "demo":
        from gaprune_tui.engine.model import EMBEDDED_NAME

        return EMBEDDED_NAME
    return spec if _is_hub_id(spec) else Path(source).name
