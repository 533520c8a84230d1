"""A decoder with some attention and MLP sub-blocks removed, as written by gaprune-tui.

This file ships inside an exported model folder and is loaded by ``transformers`` through the
config's ``auto_map`` (``trust_remote_code=True``). It depends on nothing but torch and
transformers: each class is the family's own ``...ForCausalLM`` with the sub-blocks the config
lists (``gaprune_dropped_attention``, ``gaprune_dropped_mlp``: layer indices of this model) taken
out before the weights are loaded, so the checkpoint holds no weights for them. A removed
sub-block's residual branch is skipped: the layer adds zero, so the residual stream passes through
unchanged. A layer without attention never fills its KV-cache slot, so transformers' default
(dynamic) cache holds keys and values for the kept attention sub-blocks only; a static cache still
allocates a slot per layer. Layer 0 always keeps its attention (the cache reads the length there).

The ``model_type`` is the family's with a ``gaprune_`` prefix on purpose: without
``trust_remote_code=True`` transformers refuses the folder instead of loading the family's own
class with random weights where the sub-blocks were removed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaForCausalLM
from transformers.models.mistral.configuration_mistral import MistralConfig
from transformers.models.mistral.modeling_mistral import MistralForCausalLM
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3ForCausalLM


class NoAttention(nn.Module):
    """A removed attention sub-block: adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        return torch.zeros_like(hidden_states), None


class NoMLP(nn.Module):
    """A removed MLP sub-block: adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def remove_sub_blocks(model: nn.Module, config: Any) -> None:
    """Take the listed sub-blocks (and the norm in front of each) out of ``model.model.layers``."""
    attention = set(getattr(config, "gaprune_dropped_attention", None) or [])
    mlp = set(getattr(config, "gaprune_dropped_mlp", None) or [])
    layers: Any = model.model.layers  # type: ignore[union-attr]
    for i, layer in enumerate(layers):
        if i in attention:
            layer.self_attn = NoAttention()
            layer.input_layernorm = nn.Identity()
        if i in mlp:
            layer.mlp = NoMLP()
            layer.post_attention_layernorm = nn.Identity()


class GapruneLlamaConfig(LlamaConfig):
    model_type = "gaprune_llama"


class GapruneLlamaForCausalLM(LlamaForCausalLM):
    config_class = GapruneLlamaConfig

    def __init__(self, config: GapruneLlamaConfig) -> None:
        super().__init__(config)
        remove_sub_blocks(self, config)


class GapruneMistralConfig(MistralConfig):
    model_type = "gaprune_mistral"


class GapruneMistralForCausalLM(MistralForCausalLM):
    config_class = GapruneMistralConfig

    def __init__(self, config: GapruneMistralConfig) -> None:
        super().__init__(config)
        remove_sub_blocks(self, config)


class GapruneQwen2Config(Qwen2Config):
    model_type = "gaprune_qwen2"


class GapruneQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = GapruneQwen2Config

    def __init__(self, config: GapruneQwen2Config) -> None:
        super().__init__(config)
        remove_sub_blocks(self, config)


class GapruneQwen3Config(Qwen3Config):
    model_type = "gaprune_qwen3"


class GapruneQwen3ForCausalLM(Qwen3ForCausalLM):
    config_class = GapruneQwen3Config

    def __init__(self, config: GapruneQwen3Config) -> None:
        super().__init__(config)
        remove_sub_blocks(self, config)
