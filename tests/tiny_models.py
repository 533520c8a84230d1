"""Tiny, randomly initialised causal LMs saved as real Hugging Face folders, for fast tests.

Each folder holds config, safetensors weights and a small byte-level BPE tokenizer trained here,
so ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load it offline and
lm-eval can tokenise any English prompt with it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def build_tiny(family: str, path: Path, *, n_layers: int = N_LAYERS, seed: int = 0) -> Path:
    """Save a tiny model of ``family`` (llama, qwen3 with layer_types, gpt2, gpt_neox, opt) into
    ``path``."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path)
    vocab = len(tok)
    torch.manual_seed(seed)
    common = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if family == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                **common,
            )
        )
    elif family == "qwen3":
        types = ["full_attention" if i % 2 == 0 else "sliding_attention" for i in range(n_layers)]
        model = Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                layer_types=types,
                use_sliding_window=True,
                sliding_window=8,
                max_position_embeddings=512,
                **common,
            )
        )
    elif family == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab, n_embd=32, n_layer=n_layers, n_head=4, n_positions=512, **common
            )
        )
    elif family == "gpt_neox":
        model = GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                max_position_embeddings=512,
                **common,
            )
        )
    elif family == "opt":
        model = OPTForCausalLM(
            OPTConfig(
                vocab_size=vocab,
                hidden_size=32,
                word_embed_proj_dim=32,
                ffn_dim=64,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                max_position_embeddings=512,
                **common,
            )
        )
    else:
        raise ValueError(f"unknown family {family!r}")
    model.eval()
    model.save_pretrained(path)
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
