"""One-shot layer-pruning baselines from one forward pass of the base model over calibration text.

A GA pick is only worth its search time if it beats what a single pass finds. Three references:

- **ShortGPT** (Men et al. 2024): Block Influence BI_l = 1 - mean over tokens of cos(h_in, h_out)
  of layer l; a layer that barely turns its input is cheap to drop. Drop the k lowest.
- **Angular distance** (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
  Layers"): for a block of k consecutive layers starting at l, d(l, k) = arccos(cos(h_l, h_{l+k}))/pi
  at the last token of each sequence, averaged over sequences. Drop the closest block.
- **last k**: the k layers before the final one, the folk baseline Gromov et al. found strong.

States are caught with forward hooks on the decoder layers themselves, not with
``output_hidden_states``: in Hugging Face models the last entry of ``hidden_states`` is taken after
the final norm (Llama, Qwen, GPT-2's ``ln_f``), which is not the last layer's output. Only what the
baselines need is kept: per-layer cosine sums (for BI) and each layer's input at the last token
(for every d(l, k), computed on demand), so memory does not grow with the sequence length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gaprune_tui.core.units import GenomeSpace, to_units
from gaprune_tui.engine.layers import locate_layers
from gaprune_tui.engine.model import LoadedModel

__all__ = [
    "BASELINE_NAMES",
    "Baseline",
    "LayerSignals",
    "baselines",
    "layer_signals",
    "sublayer_baselines",
]

BASELINE_NAMES = ("shortgpt", "angular", "last_k")


@dataclass(frozen=True)
class Baseline:
    """A reference genome: which layers a one-shot method drops, and the signal it ranked by."""

    name: str  # one of BASELINE_NAMES
    dropped: list[int]
    signal: float | None = (
        None  # mean BI of the dropped layers, the block's d(l, k); None for last_k
    )


@dataclass
class LayerSignals:
    """What one calibration pass measured, per layer of the base model.

    ``block_influence[l]`` is ShortGPT's BI of layer l. ``last_token_states[j]`` ([N, hidden],
    float32, CPU) is the residual stream at the last token of each sequence entering layer j, for
    j < n_layers, and leaving the last layer for j = n_layers.
    """

    n_layers: int
    block_influence: list[float]
    last_token_states: torch.Tensor = field(repr=False)  # [n_layers + 1, N, hidden]
    n_sequences: int
    n_tokens: int
    # Sub-block influence (a sub-block run): BI of each layer's attention branch, 1 - cos(h_in,
    # h_mid), and of its MLP branch, 1 - cos(h_mid, h_out), h_mid being the stream between them.
    attention_influence: list[float] | None = None
    mlp_influence: list[float] | None = None
    _angular: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)

    def angular_distance(self, start: int, k: int) -> float:
        """d(start, k): mean over sequences of arccos(cos(h_start, h_{start+k}))/pi."""
        if k < 1 or start < 0 or start + k > self.n_layers:
            raise ValueError(f"no block of {k} layers at {start} in a {self.n_layers}-layer model")
        key = (start, k)
        if key not in self._angular:
            a = self.last_token_states[start].double()
            b = self.last_token_states[start + k].double()
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
            self._angular[key] = float(torch.arccos(cos).mean() / math.pi)
        return self._angular[key]


def _hidden_of(value: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder layer's input or output (a tensor or a tuple)."""
    return value[0] if isinstance(value, tuple | list) else value


def layer_signals(
    loaded: LoadedModel, input_ids: torch.Tensor, batch_size: int = 8, sublayer: bool = False
) -> LayerSignals:
    """Run the base model over ``input_ids`` ([N, L], every position a real token) once.

    Hooks on every decoder layer add up cos(h_in, h_out) over all N*L tokens and keep the last
    token's input; nothing is stored per token. Needs the base model (no layer view applied).
    ``sublayer`` also measures each attention and MLP branch's influence: the stream between the
    two branches is the input of the layer's ``post_attention_layernorm``.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must be [N, L] with N, L >= 1, got {tuple(input_ids.shape)}")
    if not loaded.view.is_base:
        raise ValueError("layer signals are measured on the base model: restore the layer view")
    model = loaded.model
    location = locate_layers(model)
    layers = list(getattr(location.parent, location.attr))
    n = len(layers)
    cos_sums = torch.zeros(n, dtype=torch.float64)
    attn_sums = torch.zeros(n, dtype=torch.float64)
    mlp_sums = torch.zeros(n, dtype=torch.float64)
    mids: dict[int, torch.Tensor] = {}
    last_in: list[list[torch.Tensor]] = [[] for _ in range(n)]
    last_out: list[torch.Tensor] = []

    def make_hook(index: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = _hidden_of(args[0] if args else kwargs["hidden_states"]).float()
            h_out = _hidden_of(output).float()
            cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)
            cos_sums[index] += cos.double().sum().cpu()
            if sublayer:
                h_mid = mids.pop(index)
                cosine = torch.nn.functional.cosine_similarity
                attn_sums[index] += cosine(h_in, h_mid, dim=-1).double().sum().cpu()
                mlp_sums[index] += cosine(h_mid, h_out, dim=-1).double().sum().cpu()
            last_in[index].append(h_in[:, -1, :].cpu())
            if index == n - 1:
                last_out.append(h_out[:, -1, :].cpu())

        return hook

    handles = [
        layer.register_forward_hook(make_hook(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    if sublayer:

        def make_mid_hook(index: int) -> Any:
            def hook(module: Any, args: tuple) -> None:
                mids[index] = _hidden_of(args[0]).float()

            return hook

        for i, layer in enumerate(layers):
            norm = getattr(layer, "post_attention_layernorm", None)
            if norm is None:
                raise ValueError(f"{type(layer).__name__} has no post_attention_layernorm")
            handles.append(norm.register_forward_pre_hook(make_mid_hook(i)))
    try:
        with torch.no_grad():
            for start in range(0, input_ids.shape[0], batch_size):
                batch = input_ids[start : start + batch_size].to(loaded.device)
                model(input_ids=batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    n_tokens = int(input_ids.numel())
    states = torch.stack([torch.cat(parts) for parts in last_in] + [torch.cat(last_out)])
    return LayerSignals(
        n_layers=n,
        block_influence=[1.0 - float(s) / n_tokens for s in cos_sums],
        last_token_states=states,
        n_sequences=int(input_ids.shape[0]),
        n_tokens=n_tokens,
        attention_influence=[1.0 - float(s) / n_tokens for s in attn_sums] if sublayer else None,
        mlp_influence=[1.0 - float(s) / n_tokens for s in mlp_sums] if sublayer else None,
    )


def baselines(signals: LayerSignals, n_layers: int, k: int, protect: int) -> list[Baseline]:
    """The three reference genomes for dropping ``k`` of the layers at or after ``protect``.

    Ties go to the lower layer index, so the result is a pure function of the signals.
    """
    if n_layers != signals.n_layers:
        raise ValueError(f"signals are for {signals.n_layers} layers, not {n_layers}")
    if protect < 0 or not 1 <= k <= n_layers - protect - 1:
        raise ValueError(
            f"cannot drop {k} layers of {n_layers} with {protect} protected: "
            f"use k in 1..{n_layers - protect - 1}"
        )
    droppable = range(protect, n_layers)
    bi = signals.block_influence
    shortgpt = sorted(sorted(droppable, key=lambda i: (bi[i], i))[:k])
    starts = range(protect, n_layers - k + 1)
    best = min(starts, key=lambda s: (signals.angular_distance(s, k), s))
    return [
        Baseline("shortgpt", shortgpt, sum(bi[i] for i in shortgpt) / k),
        Baseline("angular", list(range(best, best + k)), signals.angular_distance(best, k)),
        Baseline("last_k", list(range(n_layers - 1 - k, n_layers - 1))),
    ]


def sublayer_baselines(
    signals: LayerSignals, space: GenomeSpace, k: int, names: Sequence[str] = BASELINE_NAMES
) -> list[Baseline]:
    """The one-pass references of a sub-block run dropping ``k`` units of ``space``.

    ShortGPT ranks every droppable attention and MLP branch by its own influence and drops the k
    lowest (with an attention quota: the lowest of each kind). ShortGPT by whole layers
    ("shortgpt-layers"), angular distance and last k remove whole layers, so they exist where k is
    even (k / 2 layers) and any quota is k / 2."""
    if signals.attention_influence is None or signals.mlp_influence is None:
        raise ValueError("sub-block baselines need layer_signals(..., sublayer=True)")
    problem = space.check(k)
    if problem:
        raise ValueError(problem)
    influence = {2 * i: v for i, v in enumerate(signals.attention_influence)}
    influence.update({2 * i + 1: v for i, v in enumerate(signals.mlp_influence)})
    out = []
    if "shortgpt" in names:
        dropped: list[int] = []
        for pool, count in space.pools(k):
            dropped += sorted(pool, key=lambda u: (influence[u], u))[:count]
        dropped.sort()
        out.append(Baseline("shortgpt", dropped, sum(influence[u] for u in dropped) / k))
    quota = space.attention_drops
    m = k // 2
    if k % 2 == 0 and (quota is None or quota == m) and m <= space.n_layers - space.protect - 1:
        # Whole layers are sub-block genomes too: the layer baselines at k / 2 layers, ShortGPT's
        # by its block influence as "shortgpt-layers", so a sub-block search starts from them.
        for b in baselines(signals, space.n_layers, m, space.protect):
            if b.name in names:
                name = "shortgpt-layers" if b.name == "shortgpt" else b.name
                out.append(Baseline(name, to_units(b.dropped, "sublayer"), b.signal))
    return out
