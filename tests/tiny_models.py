"""Tiny, randomly initialised causal LMs saved as real Hugging Face folders, for fast tests.

Each folder holds config, safetensors weights and a small byte-level BPE tokenizer trained here,
so ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it offline and
lm-eval can tokenise any English prompt with it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("llama", "qwen3", "gpt2")
# The other layer paths the README names (``gpt_neox.layers``, ``model.decoder.layers``): tested
# for the layer view and export, not run through every scoring test.
MORE_FAMILIES = ("gpt_neox", "opt")
N_LAYERS = 6
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof.",
    "Question: What is the capital of France? Answer: Paris is the capital city.",
    "She opened the door, walked into the kitchen and started to cook dinner for everyone.",
    "Plants need sunlight, water and soil to grow; animals eat plants or other animals.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) - _ [ ] { } + = / \\ * & % $ # @",
]


def build_tokenizer(path: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _CORPUS * 20,
        vocab_size=320,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(path)
    return tok


@dataclass(frozen=True)
class FamilySpec:
    """How to build one family: its transformers config and model classes, its (tiny) sizes, and
    the config key that holds the layer count."""

    config: str
    model: str
    sizes: dict[str, Any]
    layers_key: str = "num_hidden_layers"


_POS = dict(max_position_embeddings=512)
_SIZES = dict(_POS, hidden_size=32, intermediate_size=64, num_attention_heads=4)
_GQA = dict(_SIZES, num_key_value_heads=2)
_SPECS = {
    "llama": FamilySpec("LlamaConfig", "LlamaForCausalLM", _GQA),
    "qwen3": FamilySpec(
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(_GQA, head_dim=8, use_sliding_window=True, sliding_window=8),
    ),
    "gpt2": FamilySpec(
        "GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_head=4, n_positions=512), "n_layer"
    ),
    "gpt_neox": FamilySpec("GPTNeoXConfig", "GPTNeoXForCausalLM", _SIZES),
    "opt": FamilySpec(
        "OPTConfig",
        "OPTForCausalLM",
        dict(_POS, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_attention_heads=4),
    ),
}


def build_tiny(family: str, path: Path, *, n_layers: int = N_LAYERS, seed: int = 0) -> Path:
    """Save a tiny model of ``family`` (llama, qwen3 with layer_types, gpt2, gpt_neox, opt) into
    ``path``."""
    import transformers

    if family not in _SPECS:
        raise ValueError(f"unknown family {family!r}")
    spec = _SPECS[family]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    sizes = dict(spec.sizes)
    sizes[spec.layers_key] = n_layers
    if family == "qwen3":  # alternate full and sliding attention so both layer kinds are tested
        sizes["layer_types"] = [
            "full_attention" if i % 2 == 0 else "sliding_attention" for i in range(n_layers)
        ]
    special = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    config = getattr(transformers, spec.config)(vocab_size=len(tok), **special, **sizes)
    model = getattr(transformers, spec.model)(config)
    model.eval()
    model.save_pretrained(path)
    return path


def build_families(root: Path, families: tuple[str, ...] = FAMILIES) -> dict[str, Path]:
    """One tiny model of each family, in ``root/<family>``."""
    return {family: build_tiny(family, Path(root) / family) for family in families}


def put_in_hub_cache(hub: Path, src: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Lay ``src`` out in the hub cache ``hub`` as huggingface_hub does: blobs, a snapshot of
    symlinks, refs/main. Returns the snapshot folder."""
    repo = Path(hub) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in sorted(src.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot
