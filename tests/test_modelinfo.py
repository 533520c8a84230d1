"""inspect_model / scan_hf_cache: what the setup screen shows while the user types a model.

Most checks use synthetic files (a config.json, safetensors written with numpy, GGUFs written with
the ``gguf`` package) so the expected layer and parameter counts are exact; one uses a real tiny
model and one the embedded SmolLM2 GGUF, cross-checked against the ``gguf`` package's own reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from huggingface_hub import constants as hf_constants
from safetensors.numpy import save_file
from tiny_models import build_tiny, put_in_hub_cache, synthetic_gguf

from gaprune_tui.core.errors import ModelError
from gaprune_tui.core.modelinfo import embedded_gguf_path, inspect_model, scan_hf_cache

LLAMA_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 4,
    "hidden_size": 8,
    "dtype": "float32",
}


def _model_folder(path: Path, config: dict, shards: int = 2) -> Path:
    """A config plus ``shards`` safetensors files of 3x5 + 7 parameters each (22 per shard)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    for i in range(shards):
        tensors = {
            f"layer{i}.weight": np.zeros((3, 5), dtype=np.float32),
            f"layer{i}.bias": np.zeros((7,), dtype=np.float32),
        }
        save_file(tensors, str(path / f"model-0000{i + 1}-of-0000{shards}.safetensors"))
    return path


def _write_gguf(path: Path, arch: str, blocks: int | None) -> Path:
    return synthetic_gguf(path, arch, blocks=blocks, vocab=50, context_length=64)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache of this test's own."""
    path = tmp_path / "hf-hub"
    path.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(path))
    return path


def test_folder_from_safetensors_headers(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "m", LLAMA_CONFIG)
    info = inspect_model(str(folder))
    assert (info.kind, info.name, info.path) == ("folder", "m", folder.resolve())
    assert (info.model_type, info.n_layers, info.n_params) == ("llama", 4, 44)
    assert info.architectures == ["LlamaForCausalLM"]
    assert info.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_real_tiny_model_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder = build_tiny("gpt2", tmp_path / "tiny-gpt2")
    info = inspect_model(str(folder))
    assert (info.kind, info.model_type, info.n_layers) == ("folder", "gpt2", 6)
    assert info.architectures == ["GPT2LMHeadModel"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert info.n_params == sum(p.numel() for p in model.parameters())


def test_nested_text_config_and_weights_without_headers(tmp_path: Path) -> None:
    folder = tmp_path / "vlm"
    folder.mkdir()
    config = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"num_hidden_layers": 26},
        "dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 2000)
    info = inspect_model(str(folder))
    assert (info.n_layers, info.n_params) == (26, 1000)  # 2000 bytes of bf16


def test_embedded_demo_is_described_without_converting(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GAPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    info = inspect_model("demo")
    assert (info.kind, info.name) == ("embedded", "SmolLM2-135M-Instruct")
    assert (info.model_type, info.n_layers) == ("llama", 30)
    assert info.architectures == ["LlamaForCausalLM"]
    assert 130e6 < info.n_params < 140e6
    assert info.path == embedded_gguf_path()
    assert info.size_bytes == info.path.stat().st_size
    assert not (tmp_path / "cache").exists()
    # Cross-check the header parser against the gguf package's own reader.
    reader = gguf.GGUFReader(info.path)
    assert info.n_params == sum(int(t.n_elements) for t in reader.tensors)
    block_count = reader.fields["llama.block_count"]
    assert info.n_layers == int(block_count.parts[block_count.data[0]][0])


def test_inspecting_imports_no_ml_stack() -> None:
    code = (
        "import sys; from gaprune_tui.core.modelinfo import inspect_model; inspect_model('demo'); "
        "print(sorted(m for m in ('torch', 'transformers', 'gguf', 'lm_eval') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gguf_file(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "small.gguf", "qwen3", blocks=3)
    info = inspect_model(str(path))
    assert (info.kind, info.name, info.model_type, info.n_layers) == ("gguf", "small", "qwen3", 3)
    assert info.n_params == 50 * 8 + 8 * 8
    assert info.architectures == ["Qwen3ForCausalLM"]


def test_hub_id_in_local_cache(tmp_path: Path, hub: Path) -> None:
    src = _model_folder(tmp_path / "src", LLAMA_CONFIG)
    snapshot = put_in_hub_cache(hub, src, "some-org/some-model")
    info = inspect_model("some-org/some-model")
    assert (info.kind, info.name, info.path) == ("hub", "some-org/some-model", snapshot)
    assert (info.n_layers, info.n_params) == (4, 44)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda p: p, "not a model folder \\(no config.json\\)"),
        (lambda p: p / "missing", "does not exist: check the path"),
        (
            lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt",
            "is a file, not a model",
        ),
        (
            lambda p: (p / "bad.gguf").write_bytes(b"GGML" * 8) and p / "bad.gguf",
            "not a readable GGUF",
        ),
        (lambda p: _write_gguf(p / "nolayers.gguf", "llama", None), "no llama.block_count"),
    ],
    ids=["no-config", "missing-path", "plain-file", "bad-gguf", "gguf-without-blocks"],
)
def test_not_a_model(tmp_path: Path, make, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern) as err:
        inspect_model(str(make(tmp_path)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "not a causal language"),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "has no layer count"),
    ],
    ids=["masked-lm", "no-layer-count"],
)
def test_config_that_is_not_a_prunable_causal_lm(tmp_path: Path, config, pattern) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=pattern):
        inspect_model(str(folder))
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        inspect_model(str(folder))


def test_hub_id_absent(hub: Path) -> None:
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*hf download"):
        inspect_model("some-org/not-downloaded")


def test_scan_of_missing_and_empty_cache(tmp_path: Path, monkeypatch, hub: Path) -> None:
    assert scan_hf_cache() == []
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "does-not-exist"))
    assert scan_hf_cache() == []


def test_scan_lists_causal_lms_only(tmp_path: Path, hub: Path) -> None:
    put_in_hub_cache(hub, _model_folder(tmp_path / "a", LLAMA_CONFIG), "org/causal-lm")
    masked = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "num_hidden_layers": 2}
    put_in_hub_cache(hub, _model_folder(tmp_path / "b", masked), "org/masked-lm")
    no_config = tmp_path / "c"
    no_config.mkdir()
    (no_config / "README.md").write_text("weights elsewhere")
    put_in_hub_cache(hub, no_config, "org/no-config")
    put_in_hub_cache(hub, _model_folder(tmp_path / "d", LLAMA_CONFIG), "org/data", "dataset")
    found = scan_hf_cache()
    assert [(i.name, i.kind, i.n_layers, i.n_params) for i in found] == [
        ("org/causal-lm", "hub", 4, 44)
    ]
    assert found[0].size_bytes > 0
