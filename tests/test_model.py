"""Model loading and layer views on real tiny models (Llama, Qwen3 with layer_types, GPT-2).

The layer-view tests compare against a model actually rebuilt without the dropped layers: a fresh
instance of the same class with a shorter config, loaded with the kept layers' weights renumbered.
fp32 on CPU runs the same kernels in the same order, so the logits must agree exactly (diff 0).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from cores import cores
from huggingface_hub import constants as hf_constants
from tiny_models import FAMILIES, MORE_FAMILIES, build_families, finish_gguf, put_in_hub_cache

from gaprune_tui.core.errors import ModelError
from gaprune_tui.core.modelspec import embedded_gguf_path
from gaprune_tui.core.paths import cache_dir
from gaprune_tui.engine import model as model_module
from gaprune_tui.engine.model import (
    LoadedModel,
    convert_gguf,
    embedded_model_dir,
    fingerprint_folder,
    load_model,
)


@pytest.fixture(autouse=True)
def torch_threads(request: pytest.FixtureRequest):
    """One thread for the tiny models (a second thread costs 20x on a busy 2-core machine),
    this process's share of the cores (tests/cores.py) for the embedded model's real matmuls."""
    before = torch.get_num_threads()
    torch.set_num_threads(cores() if "demo" in request.fixturenames else 1)
    yield
    torch.set_num_threads(before)


# Dropped-layer sets for 6-layer models with the first two layers protected: the first droppable,
# the last, a contiguous block, a scattered set, and layer 0 itself (LayerView must not care).
GENOMES = [(2,), (5,), (2, 3, 4), (2, 4, 5), (0,)]
LAYER_PATHS = {
    "llama": "model.layers",
    "qwen3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_families(tmp_path_factory.mktemp("tiny"), FAMILIES + MORE_FAMILIES)


@pytest.fixture(scope="module")
def loaded(tiny_dirs: dict[str, Path]) -> dict[str, LoadedModel]:
    return {family: load_model(str(path)) for family, path in tiny_dirs.items()}


def _inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 16 tokens, the second left-padded, so masks and sliding windows both matter."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    return ids, mask


def _rebuild(lm: LoadedModel, kept: tuple[int, ...]) -> torch.nn.Module:
    """A real model of the same class with only ``kept`` layers, weights renumbered from the base."""
    assert lm.view.is_base
    config = copy.deepcopy(lm.model.config)
    config.num_hidden_layers = len(kept)  # GPT-2 maps this to n_layer
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]
    pattern = re.compile(rf"^{re.escape(lm.layer_path)}\.(\d+)\.(.*)$")
    renumber = {base: new for new, base in enumerate(kept)}
    state = {}
    for key, value in lm.model.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{lm.layer_path}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    rebuilt = type(lm.model)(config)
    rebuilt.load_state_dict(state, strict=True)
    return rebuilt.to(torch.float32).eval()


def _logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, use_cache: bool):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=use_cache).logits


def _cached_step(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Prefill 12 tokens, then feed 4 more against the KV cache: exercises the renumbered layer_idx."""
    with torch.no_grad():
        first = model(input_ids=ids[:, :12], attention_mask=mask[:, :12], use_cache=True)
        return model(
            input_ids=ids[:, 12:],
            attention_mask=mask,
            cache=first.cache,
            use_cache=True,
        ).logits


def _generate(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, pad: int):
    with torch.no_grad():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=4,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad,
        )


@pytest.mark.parametrize("family", FAMILIES + MORE_FAMILIES)
def test_layer_view_equals_rebuilt_model(family: str, loaded: dict[str, LoadedModel]) -> None:
    lm = loaded[family]
    ids, mask = _inputs(lm.model.config.vocab_size)
    pad = lm.tokenizer.pad_token_id
    base = _logits(lm.model, ids, mask, use_cache=False)
    base_generated = _generate(lm.model, ids, mask, pad)
    for dropped in GENOMES:
        kept = tuple(i for i in range(lm.n_layers) if i not in dropped)
        rebuilt = _rebuild(lm, kept)
        assert len(rebuilt.get_submodule(lm.layer_path)) == len(kept)
        expected = {
            "no_cache": _logits(rebuilt, ids, mask, use_cache=False),
            "cache": _logits(rebuilt, ids, mask, use_cache=True),
            "step": _cached_step(rebuilt, ids, mask),
            "generate": _generate(rebuilt, ids, mask, pad),
        }
        with lm.view.view(kept):
            assert lm.view.kept == kept
            got = {
                "no_cache": _logits(lm.model, ids, mask, use_cache=False),
                "cache": _logits(lm.model, ids, mask, use_cache=True),
                "step": _cached_step(lm.model, ids, mask),
                "generate": _generate(lm.model, ids, mask, pad),
            }
        for key in ("no_cache", "cache", "step"):
            diff = (got[key] - expected[key]).abs().max().item()
            assert diff == 0.0, f"{family} dropped={dropped} {key}: max abs diff {diff}"
        assert torch.equal(got["generate"], expected["generate"]), (family, dropped)
        # The view really changed the computation (otherwise the comparison proves nothing).
        assert not torch.equal(got["no_cache"], base)
        after = _logits(lm.model, ids, mask, use_cache=False)
        assert torch.equal(after, base), f"{family}: restore() did not give the base model back"
    assert torch.equal(_generate(lm.model, ids, mask, pad), base_generated)
    assert lm.view.is_base


def test_apply_dropped_and_restore_put_config_back(loaded: dict[str, LoadedModel]) -> None:
    lm = loaded["qwen3"]
    types = list(lm.model.config.layer_types)
    lm.view.apply_dropped([1, 4])
    try:
        assert lm.model.config.num_hidden_layers == 4
        assert lm.model.config.layer_types == [types[i] for i in (0, 2, 3, 5)]
        assert [layer.self_attn.layer_idx for layer in lm.model.model.layers] == [0, 1, 2, 3]
    finally:
        lm.view.restore()
    assert lm.model.config.num_hidden_layers == 6
    assert lm.model.config.layer_types == types
    assert [layer.self_attn.layer_idx for layer in lm.model.model.layers] == list(range(6))


# ---------------------------------------------------------------------------------------------
# load_model on local folders


@pytest.mark.parametrize("family", FAMILIES + MORE_FAMILIES)
def test_load_tiny_folder(family: str, tiny_dirs: dict[str, Path], loaded: dict[str, LoadedModel]):
    lm = loaded[family]
    assert lm.source == tiny_dirs[family].resolve()
    assert lm.name == family
    assert lm.family == family
    assert lm.layer_path == LAYER_PATHS[family]
    assert lm.n_layers == 6 == lm.view.n_layers
    assert lm.device == torch.device("cpu")
    assert lm.dtype == torch.float32
    assert next(lm.model.parameters()).dtype == torch.float32
    assert not lm.model.training
    assert lm.tokenizer("The quick brown fox")["input_ids"]
    assert re.fullmatch(r"[0-9a-f]{20}", lm.fingerprint)


def test_fingerprint_is_stable_and_discriminating(
    tiny_dirs: dict[str, Path], loaded: dict[str, LoadedModel], tmp_path: Path
) -> None:
    folder = tiny_dirs["llama"]
    fp = loaded["llama"].fingerprint
    assert fingerprint_folder(folder, torch.float32) == fp
    assert fingerprint_folder(folder, torch.bfloat16) != fp
    code = (
        "import sys, torch; from pathlib import Path; "
        "from gaprune_tui.engine.model import fingerprint_folder; "
        "print(fingerprint_folder(Path(sys.argv[1]), torch.float32))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == fp
    # Different weights in an otherwise identical folder: a different fingerprint.
    copy_dir = tmp_path / "llama-copy"
    shutil.copytree(folder, copy_dir)
    assert fingerprint_folder(copy_dir, torch.float32) == fp  # copytree keeps sizes and mtimes
    model = load_model(str(copy_dir)).model
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.add_(1.0)
    model.save_pretrained(copy_dir)
    assert fingerprint_folder(copy_dir, torch.float32) != fp


def test_dtype_and_device_choices(tiny_dirs: dict[str, Path]) -> None:
    lm = load_model(str(tiny_dirs["gpt2"]), dtype="bfloat16", device="cpu")
    assert lm.dtype == torch.bfloat16
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert lm.fingerprint != load_model(str(tiny_dirs["gpt2"])).fingerprint
    with pytest.raises(ModelError, match="unknown dtype 'int3'.*bfloat16"):
        load_model(str(tiny_dirs["gpt2"]), dtype="int3")
    with pytest.raises(ModelError, match="unknown device"):
        load_model(str(tiny_dirs["gpt2"]), device="tpu-ish")
    if torch.cuda.is_available():
        assert load_model(str(tiny_dirs["gpt2"]), device="cuda").device.type == "cuda"
    else:
        with pytest.raises(ModelError, match="CUDA is not available.*--device cpu"):
            load_model(str(tiny_dirs["gpt2"]), device="cuda")


# ---------------------------------------------------------------------------------------------
# GGUF: a tiny Llama written the way llama.cpp writes it (Q/K rows permuted for its RoPE layout)

_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(model: torch.nn.Module, tokenizer_dir: Path, path: Path) -> Path:
    """Write a tiny LlamaForCausalLM and its byte-level BPE tokenizer as an F32 GGUF file."""
    config = model.config
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {t["content"] for t in spec["added_tokens"] if t.get("special")}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    for key, value in model.state_dict().items():
        array = value.detach().to(torch.float32).numpy()
        if key == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif key == "model.norm.weight":
            name = "output_norm.weight"
        elif key == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, layer, *sub, leaf = key.split(".")
            part = ".".join(sub)
            name = f"blk.{layer}.{_GGUF_NAMES[part]}.{leaf}"
            if part == "self_attn.q_proj":
                array = _llama_cpp_permute(array, config.num_attention_heads)
            elif part == "self_attn.k_proj":
                array = _llama_cpp_permute(array, config.num_key_value_heads)
        writer.add_tensor(name, np.ascontiguousarray(array))
    finish_gguf(writer)
    return path


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache dir of this test's own, so conversions really happen here."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GAPRUNE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def tiny_gguf(loaded: dict[str, LoadedModel], tiny_dirs: dict[str, Path], tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return write_tiny_gguf(loaded["llama"].model, tiny_dirs["llama"], path)


def test_load_gguf_converts_once_and_matches_the_original(
    tiny_gguf: Path, loaded: dict[str, LoadedModel], private_cache: Path, monkeypatch
) -> None:
    original = loaded["llama"]
    models = private_cache / "models"
    models.mkdir(parents=True)
    sha = model_module._sha256(tiny_gguf)
    # Leftovers: a killed conversion's temp folder, and a folder an older converter wrote.
    stale_tmp = models / f".tmp-tiny-llama-{sha[:12]}-killed"
    stale_tmp.mkdir()
    half = models / f"tiny-llama-{sha[:12]}"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / model_module.ORIGIN_FILE).write_text(json.dumps({"conversion_version": 0}))

    lm = load_model(str(tiny_gguf))
    assert lm.source == half  # rebuilt in place of the half folder
    assert not stale_tmp.exists()
    assert not list(models.glob(".tmp-*"))
    origin = json.loads((lm.source / model_module.ORIGIN_FILE).read_text())
    assert origin["gguf_sha256"] == sha
    assert origin["gguf_path"] == str(tiny_gguf.resolve())
    assert "quantization_config" not in json.loads((lm.source / "config.json").read_text())
    assert (lm.name, lm.family, lm.n_layers) == ("tiny-llama", "llama", 6)
    text = "The quick brown fox jumps over the lazy dog."
    assert lm.tokenizer(text)["input_ids"] == original.tokenizer(text)["input_ids"]
    ids, mask = _inputs(lm.model.config.vocab_size)
    got = _logits(lm.model, ids, mask, use_cache=False)
    assert torch.equal(got, _logits(original.model, ids, mask, use_cache=False))

    # A second load reads the cache folder and never converts again.
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(model_module, "_convert_into", no_conversion)
    again = load_model(str(tiny_gguf))
    assert again.source == lm.source
    assert again.fingerprint == lm.fingerprint


def test_interrupted_conversion_leaves_nothing(tiny_gguf: Path, private_cache: Path, monkeypatch):
    real = model_module._convert_into

    def killed(gguf_path: Path, out: Path, sha: str) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_module, "_convert_into", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(tiny_gguf)
    assert [
        p.name for p in (private_cache / "models").iterdir() if not p.name.endswith(".lock")
    ] == ["gguf-sha256.json"]
    # Two concurrent conversions: one does the work, the other waits and reuses its folder.
    calls: list[Path] = []

    def counted(gguf_path: Path, out: Path, sha: str) -> None:
        calls.append(out)
        real(gguf_path, out, sha)

    monkeypatch.setattr(model_module, "_convert_into", counted)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: convert_gguf(tiny_gguf), range(2)))
    assert folders[0] == folders[1]
    assert len(calls) == 1
    assert (folders[0] / "model.safetensors").is_file()


def test_unreadable_gguf_files(tmp_path: Path, private_cache: Path) -> None:
    garbage = tmp_path / "broken.gguf"
    garbage.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(
        ModelError, match=r"is not a readable GGUF file \(bad magic bytes\).*llama\.cpp"
    ):
        load_model(str(garbage))
    odd = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(odd), "nosucharch")
    writer.add_block_count(2)
    writer.add_tensor("blk.0.x.weight", np.zeros((4, 4), dtype=np.float32))
    finish_gguf(writer)
    with pytest.raises(ModelError, match="transformers cannot read odd.gguf.*nosucharch") as err:
        load_model(str(odd))
    assert "\n" not in str(err.value)
    assert not list((private_cache / "models").glob("odd-*"))


# ---------------------------------------------------------------------------------------------
# Hub ids from the local Hugging Face cache


def test_load_hub_id_from_local_cache(tiny_dirs: dict[str, Path], loaded: dict[str, LoadedModel]):
    snapshot = put_in_hub_cache(
        Path(hf_constants.HF_HUB_CACHE), tiny_dirs["qwen3"], "tiny-org/tiny-qwen3-load"
    )
    lm = load_model("tiny-org/tiny-qwen3-load")
    assert lm.source == snapshot
    assert lm.name == "tiny-org/tiny-qwen3-load"
    assert (lm.family, lm.n_layers) == ("qwen3", 6)
    ids, mask = _inputs(lm.model.config.vocab_size)
    base = loaded["qwen3"].model
    assert torch.equal(_logits(lm.model, ids, mask, False), _logits(base, ids, mask, False))
    # Content-addressed: the blob names identify the weights, wherever the snapshot lives.
    assert lm.fingerprint == load_model("tiny-org/tiny-qwen3-load").fingerprint


def test_hub_id_absent_from_cache() -> None:
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*hf download") as err:
        load_model("nobody-here/absent-model")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Bad input: each one a ModelError with one line that names the problem and the fix


def test_bad_model_specs(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "no-such-model"): "does not exist: check the path",
        str(tmp_path): "not a model folder \\(no config.json\\)",
        str(tiny_dirs["llama"] / "config.json"): "is a file, not a model",
    }
    broken = tmp_path / "broken-config"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases[str(broken)] = "config.json is not valid JSON"
    masked = tmp_path / "masked-lm"
    masked.mkdir()
    (masked / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    cases[str(masked)] = "not a causal language model \\(architectures: BertForMaskedLM\\)"
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_dirs["gpt2"], no_weights)
    (no_weights / "model.safetensors").unlink()
    cases[str(no_weights)] = "cannot load the model in"
    for spec, pattern in cases.items():
        with pytest.raises(ModelError, match=pattern) as err:
            load_model(spec)
        assert "\n" not in str(err.value), spec


def test_causal_lm_without_a_decoder_layer_list(tiny_dirs: dict[str, Path], tmp_path: Path):
    from transformers import BertConfig, BertLMHeadModel

    folder = tmp_path / "bert-decoder"
    config = BertConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        is_decoder=True,
    )
    BertLMHeadModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dirs["llama"] / name, folder / name)
    with pytest.raises(ModelError, match="no decoder-layer list found in BertLMHeadModel"):
        load_model(str(folder))


_REMOTE_CONFIG = """
from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny_remote"
"""
_REMOTE_MODEL = """
from transformers import LlamaForCausalLM

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
"""


def test_remote_code_needs_consent(tiny_dirs: dict[str, Path], tmp_path: Path, loaded) -> None:
    folder = tmp_path / "tiny-remote"
    shutil.copytree(tiny_dirs["llama"], folder)
    (folder / "configuration_tiny_remote.py").write_text(_REMOTE_CONFIG)
    (folder / "modeling_tiny_remote.py").write_text(_REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="tiny_remote",
        architectures=["TinyRemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
            "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="needs its own Python code.*--trust-remote-code"):
        load_model(str(folder))
    lm = load_model(str(folder), trust_remote_code=True)
    assert type(lm.model).__name__ == "TinyRemoteForCausalLM"
    assert (lm.family, lm.layer_path, lm.n_layers) == ("tiny_remote", "model.layers", 6)
    ids, mask = _inputs(lm.model.config.vocab_size)
    base = loaded["llama"].model
    assert torch.equal(_logits(lm.model, ids, mask, False), _logits(base, ids, mask, False))


# ---------------------------------------------------------------------------------------------
# The embedded SmolLM2-135M-Instruct (converted once into the shared test cache)


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_model("demo")


@pytest.mark.slow
def test_embedded_demo_model(demo: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(demo.model).__name__ == "LlamaForCausalLM"
    assert (demo.n_layers, demo.family, demo.layer_path) == (30, "llama", "model.layers")
    assert demo.name == "SmolLM2-135M-Instruct"
    assert demo.source == embedded_model_dir()
    assert demo.source.parent == cache_dir() / "models"
    assert demo.source.name.startswith("smollm2-135m-instruct-")
    assert (demo.source / "model.safetensors").is_file()
    origin = json.loads((demo.source / model_module.ORIGIN_FILE).read_text())
    assert Path(origin["gguf_path"]).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert demo.source.name.endswith(origin["gguf_sha256"][:12])
    n_params = sum(p.numel() for p in demo.model.parameters())
    assert 130e6 < n_params < 140e6
    # The tokenizer round-trips text and keeps the chat template.
    ids = demo.tokenizer("The capital of France is")["input_ids"]
    assert demo.tokenizer.decode(ids) == "The capital of France is"
    prompt = demo.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in prompt
    # It is a working language model: greedy decoding continues a factual prompt sensibly.
    with torch.no_grad():
        out = demo.model.generate(
            **demo.tokenizer("The capital of France is", return_tensors="pt"),
            max_new_tokens=3,
            do_sample=False,
        )
    assert "Paris" in demo.tokenizer.decode(out[0])

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(model_module, "_convert_into", no_conversion)
    again = load_model("demo")
    assert again.source == demo.source
    assert again.fingerprint == demo.fingerprint
    # The embedded GGUF passed as a path reuses the same converted folder.
    assert load_model(origin["gguf_path"]).source == demo.source


@pytest.mark.slow
def test_converted_demo_equals_the_gguf_loaded_model(demo: LoadedModel) -> None:
    direct = model_module.gguf_causal_lm(embedded_gguf_path()).eval()
    batch = demo.tokenizer(
        ["The capital of France is", "A man is sitting on a roof. He"],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        expected = direct(**batch).logits
        got = demo.model(**batch).logits
    assert torch.equal(got, expected)
