"""Verification of an export against the layer view it was made from.

Three checks, all on the export loaded with plain ``AutoModelForCausalLM.from_pretrained`` (no
gaprune code; a sub-block export with ``trust_remote_code=True``, which runs the
``modeling_gaprune.py`` it ships, as anyone loading it must): logits on a fixed batch of prompts
against the in-memory layer view of the same genome, a greedy ``generate`` with the KV cache, and
a re-score that must reproduce the stored fitness when the export computes in the search's dtype:
on the run's tasks for a task fitness, on the run's calibration text for KL and perplexity (against
the base model's distributions, computed while the base model is loaded). ``prepare`` loads the
base model once (scoring it too when the run has no base scores) and keeps only the reference.

Scores are compared on their values; standard errors and item counts (``*_stderr``, ``n``,
``tokens``) describe a value rather than being one, and may be ``None``.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.store import Evaluation
from gaprune_tui.engine.export.plan import BaseScores, ExportPlan, Progress, is_sub_block_export

if TYPE_CHECKING:  # torch and the engine's model are imported when verification runs, not before
    import torch

    from gaprune_tui.engine.calibration import Calibration
    from gaprune_tui.engine.kl import BaseDistributions
    from gaprune_tui.engine.model import LoadedModel
    from gaprune_tui.engine.tasks import TaskSet

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
# Keys of a task's (or the calibration's) result that qualify a value instead of being one.
_QUALIFIERS = frozenset({"n", "tokens", "kl_seq", "nll_seq"})

Scores = dict[str, dict[str, Any]]


@dataclass
class Verification:
    """What the verification of one export measured. ``passed`` is the verdict.

    The verdicts (``logits_ok``, ``fitness_required``, ``fitness_ok``, ``passed``) and ``prompts``
    are derived from the measurements, once, in ``__post_init__``; they stay fields so that
    ``asdict`` (gaprune.json, the export result) writes them where it always has."""

    dtype: str
    search_dtype: str
    prompts: int = field(init=False)
    logits_max_abs_diff: float
    logits_tolerance: float
    logits_ok: bool = field(init=False)
    tokenizer_ok: bool
    generate_ok: bool
    generate_matches_view: bool
    generated_text: str
    fitness_stored: float
    fitness_export: float | None
    # Scores only have to reproduce when the export computes in the dtype the search used.
    fitness_required: bool = field(init=False)
    fitness_ok: bool | None = field(init=False)
    scores_stored: Scores
    scores_export: Scores | None
    seconds: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.prompts = len(VERIFY_PROMPTS)
        self.logits_ok = self.logits_max_abs_diff <= self.logits_tolerance
        self.fitness_required = self.dtype == self.search_dtype
        if self.fitness_export is None or self.scores_export is None:
            self.fitness_ok = None
        else:
            close = abs(self.fitness_export - self.fitness_stored) <= FITNESS_TOLERANCE
            self.fitness_ok = close and scores_equal(self.scores_stored, self.scores_export)
        self.passed = (
            self.logits_ok
            and self.tokenizer_ok
            and self.generate_ok
            and self.generate_matches_view
            and (bool(self.fitness_ok) or not self.fitness_required)
        )

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


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Reference:
    """What the in-memory layer view of the genome computed, to compare the export against."""

    input_ids: list[list[int]]
    logits: list[torch.Tensor]  # float32 CPU tensors, one per prompt
    generated: list[int]
    dtype: str
    search_dtype: str


def _generate(model: Any, tokenizer: Any, ids: list[int], device: torch.device) -> list[int]:
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


def _reference(loaded: LoadedModel, kept: list[int], search_dtype: str) -> Reference:
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
    return Reference(input_ids, logits, generated, _dtype_name(loaded.dtype), search_dtype)


def _healed_reference(loaded: LoadedModel, plan: ExportPlan, search_dtype: str) -> Reference:
    """Logits and a greedy continuation of the healed model, rebuilt in memory from the base
    model (``loaded``, at the export's dtype) and the heal's tensors."""
    import torch

    from gaprune_tui.engine.export.healed import load_tensors
    from gaprune_tui.engine.heal import load_healed

    assert plan.heal is not None
    tensors = load_tensors(plan.run_path, plan.heal["id"])
    healed = load_healed(loaded.view, plan.kept, tensors).model
    tok = loaded.tokenizer
    input_ids = [tok(p, add_special_tokens=True)["input_ids"] for p in VERIFY_PROMPTS]
    logits = []
    with torch.no_grad():
        for ids in input_ids:
            x = torch.tensor([ids], device=loaded.device)
            logits.append(healed(x).logits[0].float().cpu())
        generated = _generate(healed, tok, input_ids[0], loaded.device)
    return Reference(input_ids, logits, generated, _dtype_name(loaded.dtype), search_dtype)


def _collect() -> None:
    """Give memory back after dropping the last reference to a model (7B models come in pairs)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _compare_export(
    folder: Path, ref: Reference, device: torch.device, trust: bool
) -> tuple[float, bool, bool, list[int], str]:
    """Load the export with plain transformers (no gaprune code but the modeling file a
    sub-block export ships, ``trust``) and compare with the view."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=_torch_dtype(ref.dtype), trust_remote_code=trust
    )
    model.to(device)  # type: ignore[arg-type]  # transformers' stub types .to() too narrowly
    model.eval()
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
    text = str(tok.decode(generated, skip_special_tokens=True))
    del model
    _collect()
    return diff, tokenizer_ok, len(generated) == GENERATE_TOKENS, generated, text


def score_values(metrics: dict[str, Any]) -> dict[str, Any]:
    """The values of one task's result, without standard errors and item counts."""
    return {k: v for k, v in metrics.items() if not k.endswith("_stderr") and k not in _QUALIFIERS}


def scores_equal(a: Scores, b: Scores, tolerance: float = FITNESS_TOLERANCE) -> bool:
    """Whether two genomes' scores hold the same values (within ``tolerance``) for the same tasks
    and metrics; standard errors and item counts are not compared and may be ``None``."""
    if set(a) != set(b):
        return False
    for task, metrics in a.items():
        mine, theirs = score_values(metrics), score_values(b[task])
        if set(mine) != set(theirs):
            return False
        for metric, value in mine.items():
            other = theirs[metric]
            if value is None or other is None:
                if value is not other:
                    return False
            elif abs(float(other) - float(value)) > tolerance:
                return False
    return True


def _score(loaded: LoadedModel, taskset: TaskSet, config: RunConfig) -> Scores:
    """Score a loaded model on the run's tasks with the run's scorer, leaving global RNG alone."""
    import torch

    from gaprune_tui.engine.evaluator import Evaluator

    lm = Evaluator.make_lm(loaded, config)
    state = random.getstate()
    try:
        with torch.no_grad():
            return taskset.evaluate(lm)
    finally:
        random.setstate(state)


def fitness_of(scores: Scores, kind: str) -> float:
    """The fitness ``kind`` of ``scores`` (``core.fitness.fitness_of``, kept for callers)."""
    return fitness_kinds.fitness_of(scores, kind)


@dataclass
class CalibrationReference:
    """A KL/perplexity run's calibration text and the base model's distributions on it."""

    calibration: Calibration
    base: BaseDistributions


def _calibration_reference(loaded: LoadedModel, config: RunConfig) -> CalibrationReference:
    """The run's calibration sequences and the base distributions, from the loaded base model."""
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.kl import BaseDistributions

    calibration = load_calibration(config.calibration, loaded.tokenizer, config.calibration_tokens)
    return CalibrationReference(calibration, BaseDistributions.compute(loaded, calibration))


def _score_calibration(loaded: LoadedModel, ref: CalibrationReference, kept: list[int]) -> Scores:
    """KL(base || model) and perplexity of ``loaded`` with ``kept`` layers on the calibration."""
    from gaprune_tui.engine.kl import KLScorer

    state = random.getstate()
    try:
        scorer = KLScorer(loaded, ref.calibration, ref.base, prefix_cache=False)
        return {fitness_kinds.CALIBRATION: dict(scorer.score(kept))}
    finally:
        random.setstate(state)


@dataclass
class Prepared:
    """What verification needs once the base model is gone: the reference, the tasks, and for a
    KL or perplexity run the calibration text with the base model's distributions on it."""

    ref: Reference
    device: torch.device
    taskset: TaskSet
    base: BaseScores
    params_before: int | None
    calibration: CalibrationReference | None = None


def _load_base(
    plan: ExportPlan, dtype_name: str, device: torch.device, progress: Progress
) -> LoadedModel:
    """The run's base model at ``dtype_name``; an ``ExportError`` if its layer count changed."""
    from gaprune_tui.engine.model import load_model

    config = plan.config
    progress("load", f"loading the base model {config.model} ({dtype_name})")
    loaded = load_model(
        config.model, dtype=dtype_name, device=device, trust_remote_code=config.trust_remote_code
    )
    if loaded.n_layers != plan.n_layers:
        raise ExportError(
            f"the run's genome covers {plan.n_layers} layers but "
            f"{config.model} now has {loaded.n_layers}: the base model changed since the run"
        )
    return loaded


def _score_base(
    loaded: LoadedModel, plan: ExportPlan, taskset: TaskSet, progress: Progress
) -> tuple[BaseScores, CalibrationReference | None]:
    """The base model's scores the way the run scored genomes (tasks, or calibration text)."""
    config = plan.config
    if fitness_kinds.is_calibration(config.fitness):
        progress(
            "base", "scoring the base model on the calibration text (no base_scores in the run)"
        )
        cal = _calibration_reference(loaded, config)
        scores = _score_calibration(loaded, cal, list(range(plan.n_layers)))
    else:
        progress("base", "scoring the base model (no base_scores in the run)")
        cal, scores = None, _score(loaded, taskset, config)
    return BaseScores(scores, fitness_of(scores, config.fitness)), cal


def prepare(
    plan: ExportPlan, base: BaseScores, params_before: int | None, progress: Progress
) -> Prepared:
    """Compute the layer view's reference (and the base scores if the run lacks them).

    For a KL or perplexity run the base distributions come from the base model loaded at the
    search's dtype when it is loaded anyway, else at the export's (the re-score is then only
    required to reproduce when the two dtypes agree, as for task fitness)."""
    from gaprune_tui.engine.model import resolve_device, resolve_dtype
    from gaprune_tui.engine.tasks import build_tasks

    config = plan.config
    device = resolve_device(config.device)
    # The dtype the engine recorded; a run that never loaded its model: what it would resolve to.
    search_dtype = plan.searched.dtype or _dtype_name(
        resolve_dtype(config.dtype, device, plan.source_config)
    )
    taskset = build_tasks(config)
    loaded, cal = None, None
    if base.scores is None:
        # Base scores belong to the search's dtype, whatever the export's.
        loaded = _load_base(plan, search_dtype, device, progress)
        base, cal = _score_base(loaded, plan, taskset, progress)
    if loaded is None or search_dtype != plan.dtype:
        # Loaded at the export's dtype rather than cast with .to(): from_pretrained keeps some
        # buffers (rotary inv_freq) in float32 that .to() would round, and the export itself is
        # loaded the from_pretrained way.
        del loaded
        _collect()
        loaded = _load_base(plan, plan.dtype, device, progress)
    if cal is None and fitness_kinds.is_calibration(config.fitness):
        progress("reference", "base model's next-token distributions on the calibration text")
        cal = _calibration_reference(loaded, config)
    if params_before is None:
        params_before = sum(p.numel() for p in loaded.model.parameters())
    if plan.heal is not None:
        progress("reference", f"the healed model rebuilt from the base model ({plan.dtype})")
        ref = _healed_reference(loaded, plan, search_dtype)
    else:
        progress("reference", f"layer view of the genome on the base model ({plan.dtype})")
        ref = _reference(loaded, plan.kept, search_dtype)
    device = loaded.device
    del loaded
    _collect()
    return Prepared(ref, device, taskset, base, params_before, cal)


def verify(
    folder: Path, prepared: Prepared, config: RunConfig, best: Evaluation, progress: Progress
) -> Verification:
    """Compare the export in ``folder`` with the layer view and re-score it."""
    from gaprune_tui.engine.model import load_model

    ref, device, taskset = prepared.ref, prepared.device, prepared.taskset
    # A sub-block export is loaded the only way it loads: with its own modeling file.
    trust = config.trust_remote_code or is_sub_block_export(config.granularity, best.dropped)

    started = time.perf_counter()
    progress("verify", "comparing logits and generate with the layer view")
    diff, tokenizer_ok, generate_ok, generated, text = _compare_export(folder, ref, device, trust)
    scale = max(1.0, max(float(t.abs().max()) for t in ref.logits))
    cal = prepared.calibration
    where = "calibration text" if cal is not None else "tasks"
    progress("rescore", f"re-scoring the export on the run's {where}")
    exported = load_model(str(folder), dtype=ref.dtype, device=device, trust_remote_code=trust)
    if cal is not None:
        scores = _score_calibration(exported, cal, list(range(exported.n_layers)))
    else:
        scores = _score(exported, taskset, config)
    del exported
    _collect()
    verification = Verification(
        dtype=ref.dtype,
        search_dtype=ref.search_dtype,
        logits_max_abs_diff=diff,
        logits_tolerance=LOGIT_TOLERANCE[ref.dtype] * scale,
        tokenizer_ok=tokenizer_ok,
        generate_ok=generate_ok,
        generate_matches_view=generated == ref.generated,
        generated_text=text,
        fitness_stored=best.fitness,
        fitness_export=fitness_of(scores, config.fitness),
        scores_stored=best.scores,
        scores_export=scores,
        seconds=time.perf_counter() - started,
    )
    progress("verify", verification.summary())
    return verification
