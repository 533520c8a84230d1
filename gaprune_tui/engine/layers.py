"""Model surgery without copies: find the decoder-layer list and view a model with layers dropped.

A ``LayerView`` swaps the model's layer ``ModuleList`` for one holding a subset of the same layer
objects, renumbers every ``layer_idx`` inside them (the KV cache is indexed by it), and slices the
config fields that are per layer (``num_hidden_layers`` or the family's equivalent, ``layer_types``).
``restore()`` puts every one of those back exactly, so the base model is bit-for-bit the same.

A kept list may also hold sub-block path codes (``core/units.py``): layer ``i`` with only its
attention (``i + n``) or only its MLP (``i + 2 n``). The dropped branch's module is swapped for a
stand-in that returns zeros, so the layer's residual add passes the stream through unchanged
(``x + 0 == x`` exactly, which is what a model rebuilt without the branch computes). Layer indices
stay the view's, so the KV cache keeps one slot per view layer and a dropped attention's slot is
never filled (a dynamic cache allocates nothing for it); the first view layer keeps its attention
(a sub-block run protects at least layer 0), because the cache reads the sequence length there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gaprune_tui.core.errors import ModelError
from gaprune_tui.core.modelspec import COUNT_KEYS
from gaprune_tui.core.units import ATTENTION_ONLY, FULL, decode_path

# (path to the ModuleList, config attributes holding the layer count), most common first.
_LAYER_PATHS: tuple[tuple[str, ...], ...] = (
    (
        "model",
        "layers",
    ),  # Llama, Mistral, Qwen2/3, Gemma, Phi3, InternLM2 (remote code: model.layers)
    ("model", "language_model", "layers"),  # multimodal wrappers (Gemma3, Llava-style)
    ("transformer", "h"),  # GPT-2, GPT-J, Falcon, Bloom
    ("gpt_neox", "layers"),  # GPT-NeoX, Pythia
    ("model", "decoder", "layers"),  # OPT
    ("transformer", "layers"),  # some remote-code models
    ("layers",),  # a bare decoder
)
_COUNT_ATTRS = COUNT_KEYS  # the config keys that hold the layer count, as attributes
_PER_LAYER_LIST_ATTRS = ("layer_types",)


@dataclass
class LayerLocation:
    parent: nn.Module
    attr: str
    path: str


def locate_layers(model: nn.Module) -> LayerLocation:
    """Find the decoder-layer ``ModuleList`` of a causal LM, or raise ``ModelError``."""
    for path in _LAYER_PATHS:
        obj: Any = model
        parent: Any = None
        for name in path:
            parent, obj = obj, getattr(obj, name, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return LayerLocation(parent=parent, attr=path[-1], path=".".join(path))
    kind = type(model).__name__
    raise ModelError(
        f"no decoder-layer list found in {kind} (looked for {', '.join('.'.join(p) for p in _LAYER_PATHS)}): "
        "this architecture is not supported yet; open an issue with its model type"
    )


def _configs(model: nn.Module) -> list[Any]:
    """The config objects that describe the decoder (a multimodal model nests a text config)."""
    config = getattr(model, "config", None)
    out = [config] if config is not None else []
    for sub in ("text_config", "language_config", "llm_config"):
        nested = getattr(config, sub, None)
        if nested is not None:
            out.append(nested)
    return out


class NoAttention(nn.Module):
    """A dropped attention sub-block: its output is zero, so the residual add is the identity."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        return torch.zeros_like(hidden_states), None


class NoMLP(nn.Module):
    """A dropped MLP sub-block: its output is zero, so the residual add is the identity."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


ATTENTION_ATTR, MLP_ATTR = "self_attn", "mlp"


def branch_modules(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A decoder layer's attention and MLP sub-blocks, or ``ModelError`` when it has none."""
    attn, mlp = getattr(layer, ATTENTION_ATTR, None), getattr(layer, MLP_ATTR, None)
    if not isinstance(attn, nn.Module) or not isinstance(mlp, nn.Module):
        raise ModelError(
            f"{type(layer).__name__} has no self_attn and mlp sub-blocks: "
            "use --granularity layer for this model"
        )
    return attn, mlp


class LayerView:
    """Apply a kept-layer set to a model in place and undo it exactly."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.location = locate_layers(model)
        self.base_layers: nn.ModuleList = getattr(self.location.parent, self.location.attr)
        self.n_layers = len(self.base_layers)
        # Every sub-module that carries a layer index, per base layer, with its original value.
        self._indexed: list[list[tuple[nn.Module, int]]] = []
        for layer in self.base_layers:
            found = []
            for module in layer.modules():
                idx = getattr(module, "layer_idx", None)
                if isinstance(idx, int) and not isinstance(idx, bool):
                    found.append((module, idx))
            self._indexed.append(found)
        # Per-layer config fields, saved for restore.
        self._saved: list[tuple[Any, str, Any]] = []
        for config in _configs(model):
            for attr in _COUNT_ATTRS + _PER_LAYER_LIST_ATTRS:
                if attr in getattr(config, "__dict__", {}) or hasattr(config, attr):
                    value = getattr(config, attr, None)
                    if attr in _COUNT_ATTRS and value != self.n_layers:
                        continue
                    if attr in _PER_LAYER_LIST_ATTRS and (
                        not isinstance(value, list | tuple) or len(value) != self.n_layers
                    ):
                        continue
                    self._saved.append((config, attr, value))
        self.kept: tuple[int, ...] = tuple(range(self.n_layers))
        # (layer, attribute, original module) of each sub-block the current view swapped out.
        self._swapped: list[tuple[nn.Module, str, nn.Module]] = []

    @property
    def is_base(self) -> bool:
        return self.kept == tuple(range(self.n_layers))

    def apply(self, kept: Sequence[int]) -> None:
        """Make the model compute as if only ``kept`` layers (base indices, or sub-block path
        codes) existed, in order."""
        n = self.n_layers
        kept = tuple(sorted((int(i) for i in kept), key=lambda code: code % n))
        if not kept:
            raise ValueError("a layer view needs at least one kept layer")
        try:
            decoded = decode_path(kept, n)
        except ValueError as exc:
            raise ValueError(f"kept layers {kept} are not distinct indices in [0, {n})") from exc
        self._unswap()
        setattr(
            self.location.parent,
            self.location.attr,
            nn.ModuleList([self.base_layers[i] for i, _ in decoded]),
        )
        for new_idx, (base_idx, variant) in enumerate(decoded):
            layer = self.base_layers[base_idx]
            if variant != FULL:
                attn, mlp = branch_modules(layer)
                attr, stand_in = (
                    (MLP_ATTR, NoMLP())
                    if variant == ATTENTION_ONLY
                    else (ATTENTION_ATTR, NoAttention())
                )
                self._swapped.append((layer, attr, getattr(layer, attr)))
                setattr(layer, attr, stand_in)
            for module, _ in self._indexed[base_idx]:
                setattr(module, "layer_idx", new_idx)  # noqa: B010 - nn.Module typing
        for config, attr, value in self._saved:
            if attr in _COUNT_ATTRS:
                setattr(config, attr, len(kept))
            else:
                setattr(config, attr, type(value)(value[i] for i, _ in decoded))
        self.kept = kept

    def _unswap(self) -> None:
        """Put back every sub-block a previous ``apply`` swapped out."""
        while self._swapped:
            layer, attr, original = self._swapped.pop()
            setattr(layer, attr, original)

    def apply_dropped(self, dropped: Sequence[int]) -> None:
        drop = set(dropped)
        self.apply([i for i in range(self.n_layers) if i not in drop])

    def restore(self) -> None:
        self._unswap()
        setattr(self.location.parent, self.location.attr, self.base_layers)
        for found in self._indexed:
            for module, idx in found:
                setattr(module, "layer_idx", idx)  # noqa: B010 - nn.Module typing
        for config, attr, value in self._saved:
            setattr(config, attr, value)
        self.kept = tuple(range(self.n_layers))

    @contextlib.contextmanager
    def view(self, kept: Sequence[int]) -> Iterator[LayerView]:
        self.apply(kept)
        try:
            yield self
        finally:
            self.restore()


def _count(module: nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def unit_params(layers: Sequence[nn.Module], granularity: str) -> list[int]:
    """Parameters each unit of a genome removes: per layer, or per sub-block (an attention
    sub-block with the norm in front of it, an MLP sub-block with its norm; whatever else a layer
    holds goes with its MLP)."""
    if granularity != "sublayer":
        return [_count(layer) for layer in layers]
    out = []
    for layer in layers:
        attn, _ = branch_modules(layer)
        attention = _count(attn) + _count(getattr(layer, "input_layernorm", None))
        out += [attention, _count(layer) - attention]
    return out
