"""Sub-block exports on tiny real models: a genome that removes a layer's attention, another's MLP
and a whole layer is written without MergeKit, loads with ``trust_remote_code=True`` and computes
exactly what the layer view of its path computes (logits, a cached step, greedy ``generate``); the
removed sub-blocks' tensors are not in the files; plain transformers refuses the folder; and
``export_run`` on a real ``sublayer`` run store verifies and documents it (a sub-block genome of
whole layers only still goes through MergeKit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cores import cores
from safetensors import safe_open
from tiny_models import build_tiny, build_tokenizer

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.core.units import kept_path, to_units
from gaprune_tui.engine.export import FAILED_FILE, export_run
from gaprune_tui.engine.export.run import stored_params
from gaprune_tui.engine.export.sublayer import (
    MODELING_FILE,
    export_sublayer,
    write_sublayer,
)
from gaprune_tui.engine.layers import LayerView

torch.set_num_threads(cores())

N = 6
# attn 5 (unit 10) and mlp 1 (unit 3) alone, attn 2 (unit 4) alone, layer 4 whole (units 8, 9).
DROPPED = [3, 4, 8, 9, 10]
PATH = kept_path(DROPPED, N, "sublayer")  # [0, 1+6, 2+12, 3, 5+12]
# The tensors of each removed sub-block (base layer numbering), with the norm in front of it.
REMOVED = {1: ("mlp.", "post_attention_layernorm."), 2: ("self_attn.", "input_layernorm.")}
REMOVED.update({5: REMOVED[2], 4: ("",)})
PROMPT = "The quick brown fox jumps over the lazy dog and"
GEN = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=True)


def test_the_path_is_what_the_tests_say() -> None:
    assert PATH == [0, 7, 14, 3, 17]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-sub")
    return {f: build_tiny(f, root / f) for f in ("llama", "qwen3", "mistral", "gpt2")}


@pytest.fixture(scope="module")
def exported(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sub-exports")
    return {
        family: export_sublayer(tiny[family], PATH, root / family)
        for family in ("llama", "qwen3", "mistral")
    }


def _base(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _export(folder: Path, dtype: torch.dtype = torch.float32) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=True).eval()


def _tensors(folder: Path) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as reader:
            for name in reader.keys():  # noqa: SIM118 - safe_open has no __iter__
                out[name] = tuple(reader.get_slice(name).get_shape())
    return out


def _computations(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the prompt, logits of its last 4 tokens after a cached prefix, and 8 greedy
    tokens with the KV cache."""
    with torch.no_grad():
        logits = model(ids).logits
        prefix = model(ids[:, :-4], use_cache=True)
        step = model(ids[:, -4:], cache=prefix.cache, use_cache=True).logits
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    return logits, step, generated


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_sub_block_export_computes_what_the_view_computes(
    family: str, tiny: dict[str, Path], exported: dict[str, Path]
) -> None:
    out = exported[family]
    base, tok = _base(tiny[family])
    model = _export(out)
    assert type(model).__name__ == f"Gaprune{family.title()}ForCausalLM"
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    got = _computations(model, ids)
    with LayerView(base).view(PATH):
        expected = _computations(base, ids)
    unpruned = _computations(base, ids)
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine, theirs)  # float32: bit-identical, cached or not
    assert got[2].shape[1] == ids.shape[1] + 8
    assert float((unpruned[0] - got[0]).abs().max()) > 1e-3  # the removal changed the model

    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 5 and model.config.num_hidden_layers == 5
    assert config["model_type"] == f"gaprune_{family}"
    assert config["architectures"] == [type(model).__name__]
    assert config["auto_map"]["AutoModelForCausalLM"] == f"modeling_gaprune.{type(model).__name__}"
    # Export layers: 0 whole, 1 = base 1 without MLP, 2 = base 2 and 4 = base 5 without attention.
    assert config["gaprune_dropped_attention"] == [2, 4] and config["gaprune_dropped_mlp"] == [1]
    if family == "qwen3":
        types = json.loads((tiny[family] / "config.json").read_text())["layer_types"]
        assert config["layer_types"] == [types[i] for i in (0, 1, 2, 3, 5)]
    for name in (
        MODELING_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (out / name).is_file(), name
    assert torch.equal(_tokenizer(out)(PROMPT, return_tensors="pt")["input_ids"], ids)


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_removed_tensors_are_absent_and_the_parameters_add_up(
    family: str, tiny: dict[str, Path], exported: dict[str, Path]
) -> None:
    out = exported[family]
    source, written = _tensors(tiny[family]), _tensors(out)
    new_index = {0: 0, 1: 1, 2: 2, 3: 3, 5: 4}
    expected: dict[str, tuple[int, ...]] = {}
    removed_params = 0
    for name, shape in source.items():
        parts = name.split(".")
        if parts[:2] != ["model", "layers"]:
            expected[name] = shape
            continue
        layer, rest = int(parts[2]), ".".join(parts[3:])
        if layer in REMOVED and rest.startswith(REMOVED[layer]):
            removed_params += torch.Size(shape).numel()
        else:
            expected[f"model.layers.{new_index[layer]}.{rest}"] = shape
    assert written == expected  # nothing of a removed sub-block, everything else renumbered
    assert not [n for n in written if n.startswith("model.layers.1.mlp.")]
    assert [n for n in written if n.startswith("model.layers.1.self_attn.")]
    assert not [
        n for n in written if n.startswith(("model.layers.2.self_attn", "model.layers.4.self_attn"))
    ]
    assert not [n for n in written if n.startswith("model.layers.5.")]

    base, _ = _base(tiny[family])
    base_params = sum(p.numel() for p in base.parameters())
    assert removed_params > 0
    model = _export(out)
    assert sum(p.numel() for p in model.parameters()) == base_params - removed_params
    assert stored_params(out) == base_params - removed_params


def test_plain_transformers_refuses_the_folder(exported: dict[str, Path]) -> None:
    """Without trust_remote_code the folder is refused, not loaded as a llama with random weights
    where the sub-blocks were removed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for folder in exported.values():
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            AutoModelForCausalLM.from_pretrained(folder)
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            AutoConfig.from_pretrained(folder)


def test_an_unsupported_family_is_one_line_before_any_work(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    expected = (
        "a sub-block export supports the llama, mistral, qwen2, qwen3 families, not gpt2: export "
        "a genome that drops whole layers only (or search with --granularity layer)"
    )
    work = tmp_path / "work"  # tmp_path also holds the test's GAPRUNE_HOME
    empty = work / "empty"
    empty.mkdir(parents=True)
    with pytest.raises(ExportError) as info:
        export_sublayer(tiny["gpt2"], PATH, work / "gpt2")
    assert str(info.value) == expected
    with pytest.raises(ExportError) as again:
        write_sublayer(tiny["gpt2"], PATH, empty)
    assert str(again.value) == expected
    assert [p.name for p in work.iterdir()] == ["empty"]  # no partial, no failed folder
    assert not any(empty.iterdir())


def test_paths_that_cannot_be_exported_are_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(ExportError, match="first kept layer .0. has no attention.*--protect 1"):
        export_sublayer(tiny["llama"], [0 + 2 * N, 1, 2], work / "a")
    with pytest.raises(ExportError, match="not one of the 6-layer model"):
        export_sublayer(tiny["llama"], [0, 3 * N + 1], work / "b")
    with pytest.raises(ExportError, match="keeps no layer"):
        export_sublayer(tiny["llama"], [], work / "c")
    assert not work.exists()


def test_a_failed_sub_block_export_leaves_the_target_untouched(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    def fail(folder: Path) -> None:
        assert (folder / "model.safetensors").is_file() and (folder / MODELING_FILE).is_file()
        raise ExportError("verification failed: logits differ")

    out = tmp_path / "model"
    with pytest.raises(
        ExportError, match="verification failed: logits differ .partial export kept"
    ):
        export_sublayer(tiny["llama"], PATH, out, finalize=fail)
    assert not out.exists()
    (failed,) = tmp_path.glob("model.failed-*")
    assert "logits differ" in (failed / FAILED_FILE).read_text()
    assert not list(tmp_path.glob(".model.partial-*"))


def _tied_qwen2(path: Path) -> Path:
    """A tiny Qwen2 whose LM head is its input embedding (as Qwen2-0.5B's is)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True)
    tok = build_tokenizer(path)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=N,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def test_tied_head_bfloat16_and_shards(tmp_path: Path) -> None:
    """A tied LM head is not written (the config ties it); a small shard size gives several files
    and an index; bfloat16 is cast from the float32 checkpoint and still equals the view."""
    source = _tied_qwen2(tmp_path / "qwen2")
    assert "lm_head.weight" not in _tensors(source)
    out = tmp_path / "out"
    out.mkdir()
    written = write_sublayer(source, PATH, out, "bfloat16", shard_bytes=4_000)
    assert len(written.shards) > 1 and written.shards[0].startswith("model-00001-of-")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(_tensors(out))
    assert set(index["weight_map"].values()) == set(written.shards)
    assert "lm_head.weight" not in index["weight_map"]
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["tie_word_embeddings"] is True

    base, tok = _base(source, torch.bfloat16)
    model = _export(out, torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    got = _computations(model, ids)
    with LayerView(base).view(PATH):
        expected = _computations(base, ids)
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine, theirs)


# ---------------------------------------------------------------------------------------------
# export_run on a real sub-block run store


def _sublayer_run(model: Path, genomes: list[list[int]]) -> RunStore:
    """A ``sublayer`` run store of ``model`` whose genomes (units) were really scored on a bundled
    task through the layer view of their paths, as the engine scores them."""
    from scored_runs import tiny_run_config

    from gaprune_tui.engine.model import load_model
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.tasks import build_tasks

    config = tiny_run_config(model, granularity="sublayer", protect=1, prune=len(genomes[0]))
    loaded = load_model(config.model, dtype=config.dtype, device="cpu")
    taskset = build_tasks(config)
    lm = make_lm(loaded, config.scorer)

    def score(path: list[int]) -> dict[str, Any]:
        with loaded.view.view(path), torch.no_grad():
            return taskset.evaluate(lm)

    store = RunStore.create(config)
    base = score(list(range(N)))
    store.add_event(
        "base_scores", scores=base, fitness=fitness_kinds.fitness_of(base, config.fitness)
    )
    for dropped in genomes:
        path = kept_path(dropped, N, "sublayer")
        scores = score(path)
        fitness = fitness_kinds.fitness_of(scores, config.fitness)
        store.add_evaluation(Evaluation(0, dropped, path, fitness, scores, 1.0, False))
    return store


def test_export_run_of_a_sub_block_genome_verifies_and_documents(tiny: dict[str, Path]) -> None:
    store = _sublayer_run(tiny["llama"], [DROPPED])
    seen: list[tuple[str, str]] = []
    result = export_run(store.id, progress=lambda s, m: seen.append((s, m)))
    assert result.path == store.path / "exports" / "rank1-drop-layer4-attn2-attn5-mlp1"
    assert any(s == "select" and "drop layer 4 · attn 2, 5 · mlp 1," in m for s, m in seen)
    assert result.plan.sub_blocks and result.plan.n_layers == N
    assert result.plan.kept == PATH
    ver = result.verification
    assert result.verified is True and ver is not None
    assert ver.logits_max_abs_diff == 0.0 and ver.generate_matches_view and ver.tokenizer_ok
    assert ver.fitness_required and ver.fitness_ok
    assert ver.fitness_export == pytest.approx(result.plan.genome.fitness, abs=1e-12)
    assert ("merge", "writing 5/6 layers without layers 4 · attn 2, 5 · mlp 1 (float32)") in seen
    assert not (result.path / "mergekit_config.yml").exists()
    assert json.loads((result.path / "config.json").read_text())["model_type"] == "gaprune_llama"
    assert result.params_after == stored_params(result.path) < result.params_before

    lineage = json.loads((result.path / "gaprune.json").read_text())
    assert lineage["granularity"] == "sublayer" and lineage["mergekit"] is None
    assert lineage["dropped_layers"] == DROPPED and lineage["kept_layers"] == PATH
    assert lineage["dropped_split"] == {"layers": [4], "attention": [2, 5], "mlp": [1]}
    assert lineage["base_model"]["n_layers"] == N
    sub = lineage["sub_blocks"]
    assert sub["removed_attention"] == [2, 5] and sub["removed_mlp"] == [1]
    assert sub["removed_layers"] == [4] and sub["kept_base_layers"] == [0, 1, 2, 3, 5]
    assert sub["gaprune_dropped_attention"] == [2, 4] and sub["gaprune_dropped_mlp"] == [1]

    card = (result.path / "README.md").read_text()
    assert "with 1 of 6 decoder layers, 2 attention sub-blocks and 1 MLP sub-block removed" in card
    assert "| Dropped layers | 4 |" in card
    assert "| Dropped attention | 2, 5 (the layer keeps its MLP) |" in card
    assert "| Dropped MLP | 1 (the layer keeps its attention) |" in card
    assert "| Kept layers | 0-3, 5 (5 of 6) |" in card
    assert "## Loading" in card and "trust_remote_code=True" in card
    assert "in the base model's layer numbers: layer 4 · attn 2, 5 · mlp 1 (" in card
    assert "no attention in layers 2, 4, no MLP in layer 1." in card
    for runtime in ("vLLM", "TGI", "llama.cpp", "MergeKit", "without `trust_remote_code=True`"):
        assert runtime in card.split("Does not load with:")[1].split("\n")[0], runtime
    assert "custom_code" in card.split("---")[1] and "passthrough" not in card.split("---")[1]
    assert "**Passed**" in card and "max |diff| = 0" in card
    finished = [e for e in store.events() if e.kind == "export_finished"]
    assert finished and finished[-1].payload["verified"] is True


def test_a_sub_block_genome_of_whole_layers_goes_through_mergekit(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    dropped = to_units([2, 4], "sublayer")
    store = _sublayer_run(tiny["qwen3"], [dropped])
    result = export_run(store.id, out=tmp_path / "whole")
    assert not result.plan.sub_blocks and result.plan.kept == [0, 1, 3, 5]
    assert result.plan.n_layers == N and result.verified is True
    assert (result.path / "mergekit_config.yml").is_file()
    assert not (result.path / MODELING_FILE).exists()
    config = json.loads((result.path / "config.json").read_text())
    assert config["model_type"] == "qwen3" and "auto_map" not in config
    card = (result.path / "README.md").read_text()
    assert "with 2 of 6 decoder layers removed" in card
    assert "| Dropped layers | 2, 4 |" in card and "## Loading" not in card
    assert "Dropped attention" not in card
