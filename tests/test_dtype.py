"""``--dtype auto`` and bfloat16: detection, the choice and its reason, the memo, closeness.

``auto`` is bfloat16 where the hardware does it natively (a CPU flag in /proc/cpuinfo, a fake text
here; a CUDA GPU torch says does it, passed in here: no GPU on this project's machines) and float32
otherwise; bfloat16 scores hold the bfloat16 contract (tests/test_bf16_contract.py), not float32's
HFLM identity. Explicit bfloat16 on a CPU without native support is logged as a warning (slow). What
else holds in bfloat16 is tested: the memo keeps the two dtypes apart, and on the tiny models the
fast scorer's per-request loglikelihoods agree with HFLM's within a measured bound (not exactly).
"""

from __future__ import annotations

import logging
from dataclasses import astuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_scoring import _TEXT_REQUESTS, REL_TOL, _genome_sequence, _instances
from tiny_models import FAMILIES, build_tiny, kept_views

from gaprune_tui.cli.report import _summary
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.devices import auto_dtype, cpu_bf16_flags, expected_dtype, gpu_bf16_native
from gaprune_tui.core.estimate import TimingSample, estimate_cost
from gaprune_tui.core.store import Memo
from gaprune_tui.engine.evaluator import Evaluator
from gaprune_tui.engine.layers import LayerView
from gaprune_tui.engine.model import choose_dtype, load_model, resolve_dtype
from gaprune_tui.engine.scoring import make_lm

CPU = torch.device("cpu")
# A Zen 4 core's line, trimmed; and one of a CPU without bfloat16 (AVX2 only).
ZEN4 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n\n"
    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
)
SAPPHIRE = "flags\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
# Measured on the three tiny families (fp32 weights cast to bf16, 11 requests x 3 views):
# largest relative loglikelihood difference fast vs HFLM 3.6e-3; the bound leaves ~3x room.
BF16_REL_TOL = 1e-2


def test_bf16_flags_from_cpuinfo() -> None:
    assert cpu_bf16_flags(ZEN4) == ["avx512_bf16"]
    assert cpu_bf16_flags(SAPPHIRE) == ["avx512_bf16", "amx_bf16"]
    assert cpu_bf16_flags(AVX2) == []
    assert cpu_bf16_flags("") == []
    assert cpu_bf16_flags("model name\t: avx512_bf16 in a name, not a flag\n") == []


def test_auto_is_bfloat16_where_the_hardware_does_it_natively() -> None:
    assert astuple(auto_dtype("cpu", cpuinfo=ZEN4)) == (
        "bfloat16",
        "bfloat16: native on this CPU (avx512_bf16)",
    )
    assert astuple(auto_dtype("cpu", cpuinfo=AVX2)) == (
        "float32",
        "float32: no native bfloat16 on this CPU",
    )
    assert astuple(auto_dtype("cuda", cuda_bf16=True)) == (
        "bfloat16",
        "bfloat16: native on this GPU",
    )
    assert auto_dtype("cuda", cuda_bf16=False).dtype == "float32"
    assert auto_dtype("cuda").dtype == "auto"  # not known without asking the GPU
    assert auto_dtype("mps").dtype == "float32"
    dtype, reason = choose_dtype("auto", CPU, {"torch_dtype": "float16"}, cpuinfo=SAPPHIRE)
    assert (dtype, reason) == (
        torch.bfloat16,
        "bfloat16: native on this CPU (avx512_bf16/amx_bf16)",
    )
    # the checkpoint's dtype does not decide, on a CPU or a GPU
    assert choose_dtype("auto", CPU, {"torch_dtype": "bfloat16"}, cpuinfo=AVX2)[0] == torch.float32
    gpu = torch.device("cuda")
    assert (
        choose_dtype("auto", gpu, {"torch_dtype": "float32"}, cuda_bf16=True)[0] == torch.bfloat16
    )
    assert choose_dtype("auto", gpu, {"torch_dtype": "float16"}, cuda_bf16=False) == (
        torch.float32,
        "float32: no native bfloat16 on this GPU",
    )


def test_auto_on_this_machine() -> None:
    """The real /proc/cpuinfo: bfloat16 exactly when it lists a native flag."""
    dtype, reason = choose_dtype("auto", CPU, {})
    flags = cpu_bf16_flags()
    assert dtype == (torch.bfloat16 if flags else torch.float32)
    assert resolve_dtype("auto", CPU, {}) == dtype
    assert reason == auto_dtype("cpu").reason
    assert (
        ("/".join(flags) in reason) if flags else reason.endswith("no native bfloat16 on this CPU")
    )


def test_explicit_dtypes_and_their_reasons() -> None:
    dtype, reason = choose_dtype("bfloat16", CPU, {}, cpuinfo=ZEN4)
    assert (dtype, reason) == (
        torch.bfloat16,
        "bfloat16: asked for, native on this CPU (avx512_bf16)",
    )
    assert "emulated" in choose_dtype("bf16", CPU, {}, cpuinfo=AVX2)[1]
    assert choose_dtype("float32", CPU, {}) == (torch.float32, "float32: asked for")
    assert choose_dtype(torch.float16, CPU, {}) == (torch.float16, "float16: asked for")


def test_expected_dtype_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Setup screen's prediction matches ``choose_dtype`` on a CPU; on a GPU it asks
    ``nvidia-smi`` (none here: not known)."""
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "0")
    for cpuinfo in (ZEN4, AVX2):
        for asked in ("auto", "bfloat16", "bf16", "float32"):
            ours = expected_dtype(asked, "auto", cpuinfo)
            dtype, reason = choose_dtype(asked, CPU, {}, cpuinfo=cpuinfo)
            assert (ours.dtype, ours.reason) == (str(dtype).removeprefix("torch."), reason)
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "1")
    assert expected_dtype("auto", "auto", ZEN4) == auto_dtype("cuda", cuda_bf16=gpu_bf16_native())
    assert expected_dtype("auto", "cpu", ZEN4).dtype == "bfloat16"
    assert expected_dtype("auto", "cpu", AVX2).dtype == "float32"


def test_estimate_uses_runs_of_the_expected_dtype() -> None:
    """bfloat16 and float32 differ several-fold in speed: the estimate takes the runs measured in
    the dtype the run will use (and those that recorded none), or all when it is not known."""
    config = RunConfig(
        tasks=[TaskSpec("hellaswag_offline")], limit=10, fitness="squared_mean"
    ).validate()
    tasks = frozenset({"hellaswag_offline"})
    samples = [
        TimingSample(tasks, 0.1, dtype="float32"),
        TimingSample(tasks, 0.5, dtype="bfloat16"),
        TimingSample(tasks, 0.5, dtype="bfloat16"),
    ]
    fp32 = estimate_cost(config, samples, dtype="float32")
    assert (fp32.samples, fp32.seconds) == (1, pytest.approx(0.1 * 10 * config.max_evaluations))
    assert "1 measured evaluation in float32 on this machine" in fp32.text()
    bf16 = estimate_cost(config, samples, dtype="bfloat16")
    assert (bf16.samples, bf16.seconds) == (2, pytest.approx(0.5 * 10 * config.max_evaluations))
    unknown = estimate_cost(config, samples, dtype="auto")
    assert unknown.samples == 3 and " in float32" not in unknown.text()
    assert estimate_cost(config, [TimingSample(tasks, 0.2)], dtype="float32").samples == 1


def test_load_records_the_reason_and_warns_for_bf16(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.set_num_threads(1)
    path = build_tiny("llama", tmp_path / "llama")
    with caplog.at_level(logging.INFO, logger="gaprune_tui.engine.model"):
        auto = load_model(str(path), device="cpu")
        bf16 = load_model(str(path), dtype="bfloat16", device="cpu")
    native = bool(cpu_bf16_flags())  # this machine's CPU
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    assert auto.dtype_reason == choose_dtype("auto", CPU, {})[1]
    assert bf16.dtype == torch.bfloat16 and bf16.dtype_reason.startswith("bfloat16: asked for")
    levels = {
        r.getMessage(): r.levelno for r in caplog.records if r.getMessage().startswith("dtype")
    }
    assert levels[f"dtype {auto.dtype_reason}"] == logging.INFO
    # explicit bfloat16 warns where it is emulated (slow), not where it is native
    assert levels[f"dtype {bf16.dtype_reason}"] == (logging.INFO if native else logging.WARNING)


def test_memo_keeps_bf16_and_fp32_apart(tmp_path: Path) -> None:
    """Same weights, same tasks, one memo: the bf16 evaluator never gets the fp32 score."""
    torch.set_num_threads(1)
    path = build_tiny("llama", tmp_path / "llama")
    config = RunConfig(tasks=[TaskSpec("winogrande_offline")], limit=3, prune=2).validate()
    from gaprune_tui.engine.tasks import build_tasks

    taskset = build_tasks(config)
    memo = Memo(tmp_path / "memo.db")
    fp32 = Evaluator(load_model(str(path), dtype="float32"), taskset, config, memo)
    bf16 = Evaluator(load_model(str(path), dtype="bfloat16"), taskset, config, memo)
    assert fp32.loaded.fingerprint != bf16.loaded.fingerprint
    assert fp32.context() != bf16.context()
    first = fp32([2, 3])
    assert not first.from_memo and fp32([2, 3]).from_memo
    other = bf16([2, 3])
    assert (
        not other.from_memo and bf16.evaluations == 1
    )  # scored in bf16, not taken from fp32's row
    assert bf16([2, 3]).from_memo and bf16.cache_hits == 1
    assert memo.get(fp32.context(), fp32.kept_of([2, 3])) is not None
    assert memo.get(bf16.context(), bf16.kept_of([2, 3])) is not None


def test_memo_keeps_devices_apart(tmp_path: Path) -> None:
    """CPU and GPU kernels round differently, so the memo key names the device: a genome scored
    on the CPU is no memo hit for the same model, tasks and dtype on a GPU. No GPU here: the
    second evaluator's model only claims ``cuda`` (nothing runs on it; it reads the memo)."""
    torch.set_num_threads(1)
    path = build_tiny("llama", tmp_path / "llama")
    config = RunConfig(tasks=[TaskSpec("winogrande_offline")], limit=3, prune=2).validate()
    from dataclasses import replace

    from gaprune_tui.engine.tasks import build_tasks

    taskset = build_tasks(config)
    memo = Memo(tmp_path / "memo.db")
    cpu = Evaluator(load_model(str(path), dtype="float32", device="cpu"), taskset, config, memo)
    gpu_model = replace(cpu.loaded, device=torch.device("cuda", 0))
    gpu = Evaluator(gpu_model, taskset, config, memo, lm=cpu.lm)
    assert gpu.loaded.fingerprint == cpu.loaded.fingerprint  # only the device differs
    assert not cpu([2, 3]).from_memo and cpu.lookup([2, 3]) is not None
    assert gpu.lookup([2, 3]) is None
    # What one device records, that device finds and the other does not.
    gpu.record([4, 5], None, {"winogrande_offline": {"acc": 0.5}}, 1.0)
    assert gpu.lookup([4, 5]) is not None and cpu.lookup([4, 5]) is None


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_bf16(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny(request.param, tmp_path_factory.mktemp(request.param))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return SimpleNamespace(model=model, tokenizer=tokenizer, view=LayerView(model))


def test_bf16_fast_vs_hflm_within_a_bound_not_exact(tiny_bf16: Any) -> None:
    """bf16: the fast scorer's loglikelihoods are HFLM's within BF16_REL_TOL, same is_greedy,
    but not within float32's REL_TOL: its shared prefixes and packed rows round differently."""
    torch.set_num_threads(1)
    fast = make_lm(tiny_bf16, "fast")
    assert fast.tree_ok and fast.head_ok
    hflm = make_lm(tiny_bf16, "hflm", batch_size=4)
    worst = 0.0
    for kept in (None, (0, 1, 3, 5), (0, 2, 3, 4)):
        if kept is not None:
            tiny_bf16.view.apply(kept)
        try:
            ours = fast.loglikelihood(_instances(_TEXT_REQUESTS))
            ref = hflm.loglikelihood(_instances(_TEXT_REQUESTS), disable_tqdm=True)
        finally:
            tiny_bf16.view.restore()
        for (lp, greedy), (ref_lp, ref_greedy) in zip(ours, ref, strict=True):
            assert lp == pytest.approx(ref_lp, rel=BF16_REL_TOL)
            assert greedy == ref_greedy
            worst = max(worst, abs(lp - ref_lp) / abs(ref_lp))
    assert worst > REL_TOL  # not exact: bfloat16 has its own contract (test_bf16_contract.py)


def test_show_summary_names_the_dtype_and_reason() -> None:
    result = {
        "dropped_layers": [2],
        "kept_layers": [0, 1, 3],
        "n_layers": 4,
        "fitness": 0.5,
        "base_fitness": 0.6,
        "evaluations": 3,
        "cache_hits": 1,
        "eval_seconds": 2.0,
        "wall_seconds": 3.0,
        "dtype": "float32",
        "dtype_reason": "float32: no native bfloat16 on this CPU",
    }
    text = _summary(result, "r1")
    assert "2.0 s evaluating, 3.0 s in all in float32 (no native bfloat16 on this CPU)" in text
    del result["dtype_reason"]  # a result.json written before the reason existed
    assert "3.0 s in all in float32\n" in _summary(result, "r1")


def test_bf16_prefix_cache_and_tree_order_exact(tiny_bf16: Any) -> None:
    """In bf16 too, starting a genome from a cached base/branch state changes no loglikelihood:
    the cached state is the very tensor the full forward would have computed."""
    torch.set_num_threads(1)
    n = tiny_bf16.view.n_layers
    views = kept_views(n, (3, 5), (2, 4), (3, 4))
    on = make_lm(tiny_bf16, "fast", prefix_cache=True, token_budget=64)
    on.plan(views)
    off = make_lm(tiny_bf16, "fast", prefix_cache=False, token_budget=64)
    requests = _instances(_TEXT_REQUESTS)
    got_on = _genome_sequence(on, tiny_bf16.view, requests, views)
    got_off = _genome_sequence(off, tiny_bf16.view, requests, views)
    assert got_on[0::2] == got_off[0::2]  # exactly equal, not approximately
    assert all(skipped > 0 for skipped in got_on[3::2])  # later genomes did start from the cache
