"""Model loading and layer views on real tiny models (Llama, Qwen3 with layer_types, GPT-2).

The layer-view tests compare against a model actually rebuilt without the dropped layers: a fresh
instance of the same class with a shorter config, loaded with the kept layers' weights renumbered.
fp32 on CPU runs the same kernels in the same order, so the logits must agree exactly (diff 0).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import FAMILIES, build_tiny

from gaprune_tui.engine.model import (
    LoadedModel,
    fingerprint_folder,
    load_model,
)
from gaprune_tui.errors import ModelError

torch.set_num_threads(2)

# Dropped-layer sets for 6-layer models with the first two layers protected: the first droppable,
# the last, a contiguous block, a scattered set, and layer 0 itself (LayerView must not care).
GENOMES = [(2,), (5,), (2, 3, 4), (2, 4, 5), (0,)]
LAYER_PATHS = {"llama": "model.layers", "qwen3": "model.layers", "gpt2": "transformer.h"}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(family, root / family) for family in FAMILIES}


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


@pytest.mark.parametrize("family", FAMILIES)
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


@pytest.mark.parametrize("family", FAMILIES)
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
