"""Tiny, randomly initialised causal LMs saved as real Hugging Face folders, for fast tests.

Each folder holds config, safetensors weights and a small byte-level BPE tokenizer trained here,
so ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it offline and
lm-eval can tokenise any English prompt with it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("llama", "qwen3", "gpt2")
# The other layer paths docs/cli.md names (``gpt_neox.layers``, ``model.decoder.layers``): tested
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
    # Not in FAMILIES: only the sub-block export tests build it (a family the modeling file covers).
    "mistral": FamilySpec("MistralConfig", "MistralForCausalLM", _GQA),
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
    """Save a tiny model of ``family`` (llama, mistral, qwen3 with layer_types, gpt2, gpt_neox,
    opt) into ``path``."""
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


def build_sharp(path: Path, seed: int = 1) -> Path:
    """A tiny Llama whose weight matrices are scaled up 15x: a freshly initialised model predicts
    nearly uniform distributions, so dropping layers would barely move its KL; this one's does."""
    import torch
    from transformers import AutoModelForCausalLM

    build_tiny("llama", path, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(15)
    model.save_pretrained(path)
    return path


def kept_views(n_layers: int, *dropped: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The whole model's layers, then the kept layers of each ``dropped`` set: a population."""
    keep_all = tuple(range(n_layers))
    return [keep_all, *(tuple(i for i in keep_all if i not in d) for d in dropped)]


def build_families(root: Path, families: tuple[str, ...] = FAMILIES) -> dict[str, Path]:
    """One tiny model of each family, in ``root/<family>``."""
    return {family: build_tiny(family, Path(root) / family) for family in families}


@contextmanager
def forward_sizes(lm: Any, limit: int | None = None) -> Iterator[list[int]]:
    """The token count of every decoder forward of ``lm`` while in the block; past ``limit``
    tokens a forward fails the way an out-of-memory device does."""
    sizes: list[int] = []

    def hook(_module: Any, args: Any, kwargs: dict) -> None:
        sizes.append(kwargs["input_ids"].numel())
        if limit is not None and sizes[-1] > limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    handle = lm.decoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def finish_gguf(writer: Any, *, tensor_data: bool = True) -> None:
    """Write a ``gguf.GGUFWriter``'s header, metadata and tensors (``tensor_data=False``: only the
    tensor infos, as a header-only file would have) and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if tensor_data:
        writer.write_tensors_to_file()
    else:
        writer.write_ti_data_to_file()
    writer.close()


def synthetic_gguf(
    path: Path,
    arch: str = "llama",
    *,
    blocks: int | None = 3,
    vocab: int = 20,
    context_length: int | None = None,
    tensor_data: bool = True,
) -> Path:
    """A GGUF file of ``arch`` for the header readers, not a model anything can run: a name, a
    block count, a tokenizer vocabulary of strings (which a header parser has to skip over) and
    two zero tensors."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("synthetic")
    if blocks is not None:
        writer.add_block_count(blocks)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    if context_length is not None:
        writer.add_context_length(context_length)
    writer.add_tensor("token_embd.weight", np.zeros((vocab, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
    finish_gguf(writer, tensor_data=tensor_data)
    return path


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
