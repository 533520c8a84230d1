"""What a pruned view saves at inference, measured here: prompt and generation speed, KV cache.

``measure_speed`` times the base model and a genome's view on the same prompt, interleaved
(base, pruned, base, ...) so a machine that slows down mid-measurement slows both, and reports the
median of each. Prompt speed is prompt tokens per second of the prompt's forward pass (filling the
KV cache); generation speed is tokens per second of the greedy decoding steps after it, one token
at a time against the cache (what ``generate`` does, without its bookkeeping). These are timings on this machine at its current load,
a measurement of the view (the exported model computes the same layers), not a quality claim.

``kv_cache`` (``core/units.py``) counts the attention sub-blocks a genome keeps.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from gaprune_tui.core.units import kv_cache
from gaprune_tui.engine.model import LoadedModel

__all__ = ["kv_cache", "measure_or_none", "measure_speed"]

log = logging.getLogger(__name__)

PROMPT_TOKENS = 128
NEW_TOKENS = 8
REPEATS = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache_of(out: Any) -> Any:
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _step(model: Any, ids: torch.Tensor, cache: Any) -> Any:
    """One forward pass that reads and extends the KV cache (transformers 5 calls it ``cache``,
    earlier versions ``past_key_values``)."""
    try:
        return model(input_ids=ids, cache=cache, use_cache=True)
    except TypeError:
        return model(input_ids=ids, past_key_values=cache, use_cache=True)


def _time_once(loaded: LoadedModel, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(seconds of the prompt's forward pass, filling the KV cache; seconds of ``new_tokens``
    greedy decoding steps after it, each one token against the cache)."""
    model, device = loaded.model, loaded.device
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        _sync(device)
        prompt = time.perf_counter() - start
        cache = _cache_of(out)
        token = out.logits[:, -1:].argmax(dim=-1)
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = _step(model, token, cache)
            cache = _cache_of(out)
            token = out.logits[:, -1:].argmax(dim=-1)
        _sync(device)
        decode = time.perf_counter() - start
    return prompt, max(decode, 1e-9)


def measure_speed(
    loaded: LoadedModel,
    path: Sequence[int],
    prompt_ids: torch.Tensor,
    *,
    prompt_tokens: int = PROMPT_TOKENS,
    new_tokens: int = NEW_TOKENS,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Prompt and generation tokens per second of the base model and of ``path``'s view (see the
    module doc). ``prompt_ids`` is a 1-D tensor of real text; its first ``prompt_tokens`` are used."""
    ids = prompt_ids.reshape(-1)[:prompt_tokens].reshape(1, -1).to(loaded.device)
    view = loaded.view
    samples: dict[str, list[tuple[float, float]]] = {"base": [], "pruned": []}
    kept = list(path)
    with view.view(kept):  # warm-up: first calls allocate and pick kernels
        _time_once(loaded, ids[:, :8], 1)
    _time_once(loaded, ids[:, :8], 1)
    for _ in range(repeats):
        samples["base"].append(_time_once(loaded, ids, new_tokens))
        with view.view(kept):
            samples["pruned"].append(_time_once(loaded, ids, new_tokens))
    n = int(ids.shape[1])
    out: dict[str, Any] = {
        "device": loaded.device.type,
        "threads": torch.get_num_threads(),
        "prompt_tokens": n,
        "new_tokens": new_tokens,
        "repeats": repeats,
    }
    for name, runs in samples.items():
        prompt = statistics.median(p for p, _ in runs)
        generate = statistics.median(g for _, g in runs)
        out[name] = {
            "prompt_tokens_per_s": round(n / prompt, 2),
            "generate_tokens_per_s": round(new_tokens / generate, 2),
        }
    out["prompt_speedup"] = round(
        out["pruned"]["prompt_tokens_per_s"] / out["base"]["prompt_tokens_per_s"], 3
    )
    out["generate_speedup"] = round(
        out["pruned"]["generate_tokens_per_s"] / out["base"]["generate_tokens_per_s"], 3
    )
    return out


def measure_or_none(loaded: LoadedModel, path: Sequence[int], prompt_ids: Any) -> Any:
    """``measure_speed``, or None (logged) where it cannot run: a speed figure is never worth a
    failed run."""
    try:
        return measure_speed(loaded, path, prompt_ids)
    except Exception as exc:  # noqa: BLE001 - any failure only costs the figure
        log.warning("speed not measured: %s: %s", type(exc).__name__, exc)
        return None
