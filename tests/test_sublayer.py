"""Sub-block genomes (``--granularity sublayer``): units, the search over them, their scores on a
real tiny model (the fast scorer against lm-eval's HFLM, the prefix cache against none), the
one-pass sub-block baselines, and the CLI end to end.

The view itself against a model rebuilt without the branches, and the export, are in
tests/test_export_sublayer.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_run import cli
from search_events import finished, run_search
from test_cli import assert_one_line_error
from tiny_models import build_sharp, build_tiny

from gaprune_tui.core import units
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.store import RunStore
from gaprune_tui.core.units import GenomeSpace, decode_path, describe, kept_path, split
from gaprune_tui.engine.evopress import EvoPressSearch
from gaprune_tui.engine.search import Outcome, Search

N_LAYERS = 8


# ---- units -----------------------------------------------------------------------------------
def test_paths_codes_and_whole_layers() -> None:
    n = 6
    # attention of 1, mlp of 2, all of 4
    dropped = [2, 5, 8, 9]
    path = kept_path(dropped, n, "sublayer")
    assert path == [0, 1 + 2 * n, 2 + n, 3, 5]
    assert decode_path(path, n) == [(0, 0), (1, 2), (2, 1), (3, 0), (5, 0)]
    assert split(dropped, "sublayer") == ([4], [1], [2])
    assert describe(dropped, "sublayer") == "layer 4 · attn 1 · mlp 2"
    assert describe([], "sublayer") == "nothing"
    # A genome of whole layers has the same path in both granularities: same scores, same memo.
    layers = [1, 4]
    assert kept_path(units.to_units(layers, "sublayer"), n, "sublayer") == kept_path(
        layers, n, "layer"
    )
    assert units.whole_layers(units.to_units(layers, "sublayer"), "sublayer") == layers
    assert units.whole_layers(dropped, "sublayer") is None
    with pytest.raises(ValueError, match="distinct layers in order"):
        decode_path([3, 1], n)
    with pytest.raises(ValueError, match="not a layer"):
        decode_path([3 * n], n)


def test_genome_space_with_an_attention_quota() -> None:
    space = GenomeSpace(N_LAYERS, protect=2, granularity="sublayer", attention_drops=2)
    assert space.n_units == 16 and space.first_unit == 4 and space.droppable == list(range(4, 16))
    rng = random.Random(0)
    for _ in range(200):
        genome = space.draw(5, rng)
        assert space.valid(genome, 5)
        assert sum(1 for u in genome if u % 2 == 0) == 2
        child = space.swap(genome, rng)
        assert space.valid(child, 5) and child != genome
    # Repair: protected units, repeats and a pool's excess go; the pools are filled back.
    broken = [0, 4, 4, 6, 8, 10]  # unit 0 protected, 4 repeated, 4 attention units (quota 2)
    fixed = space.repair(broken, 5, random.Random(1))
    assert space.valid(fixed, 5) and {4, 6} <= set(fixed)
    assert space.repair(fixed, 5, random.Random(2)) == fixed  # a valid genome is left alone
    assert "does not fit" in (space.check(1) or "")  # 2 attention drops cannot fit k = 1
    assert GenomeSpace(N_LAYERS, 2, "sublayer").check(12) is not None  # 12 droppable units
    assert GenomeSpace(N_LAYERS, 2, "sublayer").check(11) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"granularity": "blocks"}, "granularity must be one of layer, sublayer"),
        ({"attention_drops": 2}, "add --granularity sublayer"),
        ({"granularity": "sublayer", "protect": 0}, "use --protect 1"),
        ({"granularity": "sublayer", "prune": 3, "attention_drops": 4}, "--attention-drops 0..3"),
        (
            {"attention_drops": 1, "objective": "pareto"},
            "add --granularity sublayer",
        ),
        ({"granularity": "sublayer", "objective": "pareto"}, "covers whole layers"),
    ],
)
def test_config_refuses(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"prune": 4}
    if fields.get("objective") == "pareto":
        base["prune_range"] = [2, 4]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RunConfig(**{**base, **fields}).validate()


def test_layer_checks_count_sub_blocks_and_the_family() -> None:
    config = RunConfig(granularity="sublayer", prune=12, protect=2).validate()
    with pytest.raises(ConfigError, match="below the 12 droppable sub-blocks"):
        config.check_layers(N_LAYERS, "llama")
    RunConfig(granularity="sublayer", prune=11, protect=2).validate().check_layers(8, "qwen3")
    with pytest.raises(ConfigError, match="not gpt2: use --granularity layer"):
        RunConfig(granularity="sublayer").validate().check_layers(N_LAYERS, "gpt2")


# ---- the search over units ------------------------------------------------------------------
def unit_objective(dropped: list[int], limit: int | None = None) -> Outcome:
    """KL-like (lower is better): attention sub-blocks are cheap, early units expensive."""
    kl = sum((0.1 if u % 2 == 0 else 1.0) / (1 + u) for u in dropped)
    scores = {"calibration": {"kl": kl, "kl_stderr": 0.0}}
    return Outcome(scores, kl, 0.0, False, "full" if limit is None else f"tokens:{limit}")


def sub_cfg(**kw: Any) -> RunConfig:
    base = dict(
        granularity="sublayer",
        prune=5,
        protect=2,
        population=6,
        generations=4,
        offspring=6,
        seed=3,
        fitness="kl",
        selection_tokens=None,
    )
    base.update(kw)
    return RunConfig(**base).validate()


@pytest.mark.parametrize("algorithm", ["evopress", "ga"])
@pytest.mark.parametrize("quota", [None, 2])
def test_every_genome_searched_is_a_valid_sub_block_genome(algorithm: str, quota: int | None):
    config = sub_cfg(algorithm=algorithm, attention_drops=quota)
    cls = EvoPressSearch if algorithm == "evopress" else Search
    search = cls(config, N_LAYERS, unit_objective)
    evs = run_search(search)
    done = finished(evs)
    assert len(done) > 10
    space = GenomeSpace(N_LAYERS, 2, "sublayer", quota)
    for e in done:
        assert space.valid(e.dropped, 5), e.dropped
        assert e.kept == kept_path(e.dropped, N_LAYERS, "sublayer")
        if quota is not None:
            assert sum(1 for u in e.dropped if u % 2 == 0) == quota
    # The search climbs: its best is at least as good as generation 0's best.
    first = min(e.fitness for e in done if e.generation == 0)
    assert min(e.fitness for e in done) <= first


def test_invalid_zero_scores_protected_or_repeated_units_worst() -> None:
    config = sub_cfg(algorithm="ga", invalid="zero", mutpb=1.0, generations=3)
    evs = run_search(Search(config, N_LAYERS, unit_objective))
    invalid = [e for e in finished(evs) if e.fidelity == "invalid"]
    assert invalid, "mutUniformInt over all units makes protected or repeated units"
    for e in invalid:
        assert e.fitness == float("inf")
        bad = any(u < 4 for u in e.dropped) or len(set(e.dropped)) < len(e.dropped)
        assert bad, e.dropped


# ---- real scores on a tiny model -----------------------------------------------------------------
SUB_GENOMES = [
    [4],  # attention of layer 2
    [5],  # mlp of layer 2
    [4, 7, 10, 11],  # attn 2, mlp 3, layer 5
    [4, 5, 10, 11],  # layers 2 and 5 whole
    [6, 9, 12, 15],  # attn 3, mlp 4, attn 6, mlp 7
]


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gaprune_tui.engine.model import load_model

    return load_model(str(build_sharp(tmp_path_factory.mktemp("sharp") / "llama")))


def test_prefix_cache_and_tree_order_change_no_sub_block_score(sharp: Any) -> None:
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.scoring import make_lm

    cal = load_calibration("offline", sharp.tokenizer, n_tokens=384, seq_len=48)
    n = sharp.n_layers
    paths = [kept_path(g, n, "sublayer") for g in SUB_GENOMES]
    values = {}
    for cache in (True, False):
        lm = make_lm(sharp, "fast", prefix_cache=cache, token_budget=96)
        base = BaseDistributions.compute(sharp, cal, top_k=16, lm=lm)
        scorer = KLScorer(sharp, cal, base, lm=lm)
        if cache:
            scorer.plan(paths)
        values[cache] = [scorer.score(p) for p in paths + [paths[2]]]
        if cache:
            assert lm.stats.layers_skipped > 0  # the cache really served sub-block paths
    assert values[True] == values[False]
    kls = [v["kl"] for v in values[False]]
    assert all(k > 0 for k in kls) and len(set(kls[:5])) == 5


def test_fast_scorer_equals_hflm_on_sub_block_views(sharp: Any) -> None:
    from gaprune_tui.engine.scoring import make_lm
    from gaprune_tui.engine.tasks import build_tasks

    tasks = [TaskSpec("hellaswag_offline"), TaskSpec("piqa_offline")]
    config = RunConfig(tasks=tasks, limit=8).validate()
    taskset = build_tasks(config)
    fast = make_lm(sharp, "fast", prefix_cache=True)
    hflm = make_lm(sharp, "hflm")
    for genome in SUB_GENOMES[2:]:
        path = kept_path(genome, sharp.n_layers, "sublayer")
        with sharp.view.view(path), torch.no_grad():
            ours = taskset.evaluate(fast, limit=None)
            reference = taskset.evaluate(hflm, limit=None)
        assert ours == reference, genome


def test_sub_block_influence_and_baselines(sharp: Any) -> None:
    from gaprune_tui.engine.baselines import layer_signals, sublayer_baselines
    from gaprune_tui.engine.calibration import load_calibration

    cal = load_calibration("offline", sharp.tokenizer, n_tokens=256, seq_len=32)
    signals = layer_signals(sharp, cal.input_ids, sublayer=True)
    n = sharp.n_layers

    def layer_io(dropped: list[int], i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output of base layer ``i`` in the view of a sub-block genome."""
        seen: dict[str, torch.Tensor] = {}

        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            seen["in"] = args[0] if args else kwargs["hidden_states"]
            seen["out"] = output[0] if isinstance(output, tuple) else output

        handle = sharp.view.base_layers[i].register_forward_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad(), sharp.view.view(kept_path(dropped, n, "sublayer")):
                sharp.model(input_ids=cal.input_ids, use_cache=False)
        finally:
            handle.remove()
        return seen["in"].float(), seen["out"].float()

    cosine = torch.nn.functional.cosine_similarity
    for i in (2, 5):
        # Independently of the signals' hooks: layer i with its MLP dropped outputs the stream
        # between its two branches; with its attention dropped it takes that stream to h_out.
        h_in, h_out = layer_io([], i)
        _, h_mid = layer_io([2 * i + 1], i)
        attention = 1 - cosine(h_in, h_mid, dim=-1).double().mean().item()
        mlp = 1 - cosine(h_mid, h_out, dim=-1).double().mean().item()
        assert signals.attention_influence[i] == pytest.approx(attention, abs=1e-5)
        assert signals.mlp_influence[i] == pytest.approx(mlp, abs=1e-5)
    space = GenomeSpace(sharp.n_layers, 1, "sublayer")
    picks = {b.name: b for b in sublayer_baselines(signals, space, 4)}
    influence = {2 * i: v for i, v in enumerate(signals.attention_influence)}
    influence |= {2 * i + 1: v for i, v in enumerate(signals.mlp_influence)}
    lowest = sorted(space.droppable, key=lambda u: (influence[u], u))[:4]
    assert picks["shortgpt"].dropped == sorted(lowest)
    # k = 4: whole-layer references of two layers too, ShortGPT's by block influence among them
    assert set(picks) == {"shortgpt", "shortgpt-layers", "angular", "last_k"}
    layer_bi = signals.block_influence
    two = sorted(sorted(range(1, sharp.n_layers), key=lambda i: (layer_bi[i], i))[:2])
    assert picks["shortgpt-layers"].dropped == units.to_units(two, "sublayer")
    assert split(picks["last_k"].dropped, "sublayer")[0] == [sharp.n_layers - 3, sharp.n_layers - 2]
    odd = {b.name for b in sublayer_baselines(signals, space, 3)}
    assert odd == {"shortgpt"}  # no whole-layer block of 1.5 layers
    quota = GenomeSpace(sharp.n_layers, 1, "sublayer", attention_drops=3)
    pick = sublayer_baselines(signals, quota, 4)[0]
    assert sum(1 for u in pick.dropped if u % 2 == 0) == 3


# ---- the CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sharp(tmp_path_factory.mktemp("tiny") / "llama")


def test_a_family_without_sub_block_support_is_refused(tmp_path: Path) -> None:
    gpt2 = build_tiny("gpt2", tmp_path / "gpt2")
    proc = cli("run", "--model", str(gpt2), "--granularity", "sublayer", "--prune", "2")
    assert_one_line_error(proc, "--granularity sublayer supports", "not gpt2")


def test_sub_block_run_end_to_end(tiny_llama: Path) -> None:
    args = ["run", "--model", str(tiny_llama), "--granularity", "sublayer", "--prune", "4"]
    args += ["--protect", "1", "--generations", "2", "--offspring", "4", "--population", "4"]
    args += ["--calibration-tokens", "384", "--selection-tokens", "all"]
    args += ["--baselines", "shortgpt,angular,greedy", "--finalists", "1", "--confirm-limit", "4"]
    args += ["--tasks", "hellaswag_offline,openbookqa_offline", "--limit", "4"]
    args += ["--holdout-tasks", "piqa_offline"]
    proc = cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    n = result["n_layers"]
    assert result["granularity"] == "sublayer"
    dropped = result["dropped_layers"]
    assert len(dropped) == 4 and min(dropped) >= 2
    whole, attention, mlp = split(dropped, "sublayer")
    assert result["dropped_split"] == {"layers": whole, "attention": attention, "mlp": mlp}
    assert result["dropped_text"] == describe(dropped, "sublayer")
    assert result["kept_layers"] == kept_path(dropped, n, "sublayer")
    # Parameters: the meta's per-unit counts add up to each layer's, and the pick's sum is removed.
    store = RunStore.open(result["run_id"])
    meta = store.meta()
    per_unit, per_layer = meta["params_per_unit"], meta["params_per_layer"]
    assert [per_unit[2 * i] + per_unit[2 * i + 1] for i in range(n)] == per_layer
    assert result["params_removed"] == sum(per_unit[u] for u in dropped)
    kv = result["kv_cache"]
    assert kv["attention_kept"] == n - len(whole) - len(attention)
    speed = result["speed"]
    assert speed["base"]["prompt_tokens_per_s"] > 0 and speed["pruned"]["generate_tokens_per_s"] > 0
    # Every evaluation's kept path is its genome's, and every baseline is a sub-block genome.
    for e in store.evaluations():
        assert e.kept == kept_path(e.dropped, n, "sublayer")
    names = {b["name"] for b in result["baselines"]}
    assert names == {"shortgpt", "shortgpt-layers", "angular", "greedy"}
    # The terminal names sub-blocks, not unit numbers.
    assert "sub-blocks" in proc.stderr and ("attn " in proc.stderr or "mlp " in proc.stderr)
    report = cli("show", result["run_id"])
    assert report.returncode == 0 and result["dropped_text"] in report.stdout
    assert "KV cache" in report.stdout and "measured on this cpu" in report.stdout
    # The UI tests' fake engine writes what this real sub-block run wrote, field for field.
    from fake_engine import FakeEngine, fake_store
    from test_fake_engine import OPTIONAL_KINDS, differences, event_shapes, shape

    fake = fake_store(
        granularity="sublayer",
        prune=4,
        protect=1,
        finalists=1,
        confirm_limit=4,
        fitness="kl",
        holdout_tasks=["piqa_offline"],
    )
    FakeEngine(fake, generations=2, population=4, prune=4, protect=1, faithful=True).run()
    real_events, fake_events = event_shapes(store), event_shapes(fake)
    assert real_events.keys() - OPTIONAL_KINDS <= fake_events.keys()
    problems = [
        p
        for kind in real_events.keys() & fake_events.keys()
        for p in differences(real_events[kind], fake_events[kind], kind)
    ]
    assert problems == []
    assert differences(shape(result), shape(fake.result()), "result") == []
    assert fake.result()["granularity"] == "sublayer"


def test_whole_layers_score_the_same_in_both_granularities(sharp: Any, tmp_path: Path) -> None:
    """The same whole-layer genome, as layers and as sub-block units: equal KL, and the second
    granularity's evaluation is the first's memo entry (the memo is keyed by the path)."""
    from gaprune_tui.core.store import Memo
    from gaprune_tui.engine.calibration import load_calibration
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.kl import BaseDistributions, KLScorer
    from gaprune_tui.engine.scoring import make_lm

    cal = load_calibration("offline", sharp.tokenizer, n_tokens=256, seq_len=32)
    lm = make_lm(sharp, "fast", prefix_cache=False)
    kl = KLScorer(sharp, cal, BaseDistributions.compute(sharp, cal, top_k=16, lm=lm), lm=lm)
    memo = Memo(tmp_path / "memo.db")
    evaluators = {}
    for granularity in ("layer", "sublayer"):
        config = RunConfig(fitness="kl", protect=1, granularity=granularity).validate()
        evaluators[granularity] = Evaluator(sharp, None, config, memo, lm=lm, kl=kl)
    as_layers = evaluators["layer"]([2, 5])
    as_units = evaluators["sublayer"](units.to_units([2, 5], "sublayer"))
    assert not as_layers.from_memo and as_units.from_memo
    assert as_units.scores == as_layers.scores and as_units.fitness == as_layers.fitness > 0
    # Scored afresh (no memo) as sub-blocks, the value is the same too.
    fresh, _ = evaluators["sublayer"].score(kept_path([4, 5, 10, 11], sharp.n_layers, "sublayer"))
    assert fresh == as_layers.scores
