"""FastLM against lm-eval's own HFLM on the same in-memory layer view.

Same per-request loglikelihoods (1e-4 relative, fp32), same ``is_greedy``, same task scores; the
prefix cache changes nothing; an out-of-memory error shrinks the batch and retries; a stop request
raises between batches. Tiny models of all three families run fast; the embedded SmolLM2 on four
real offline tasks is marked slow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from cores import cores
from lm_eval.api.instance import Instance
from tiny_models import FAMILIES, build_tiny, forward_sizes, kept_views

from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.engine.layers import LayerView
from gaprune_tui.engine.scoring import (
    SCORER_VERSION,
    FastLM,
    PrefixCache,
    StopRequested,
    TokenRequest,
    make_lm,
    merge_rows,
    pack_rows,
)

REL_TOL = 1e-4

# Multiple-choice (shared context), Winogrande-style (contexts differ after a shared prefix,
# continuation shared), one-token continuations, a continuation sharing its first word with a
# sibling, an empty context (BOS/EOS stands in) and a lone request.
_TEXT_REQUESTS = [
    ("The quick brown fox jumps over the lazy dog. A man is", " sitting on a roof."),
    ("The quick brown fox jumps over the lazy dog. A man is", " cooking dinner for everyone."),
    ("The quick brown fox jumps over the lazy dog. A man is", " sitting in the kitchen."),
    ("The quick brown fox jumps over the lazy dog. A man is", " eating plants"),
    ("Question: What is the capital of France? Answer:", " Paris"),
    ("Question: What is the capital of France? Answer:", " Rome"),
    ("Question: What is the capital of France? Answer:", " water"),
    ("She opened the door because the dog", " was hungry and cold."),
    ("She opened the door because the fox", " was hungry and cold."),
    ("", " Plants need sunlight."),
    ("0 1 2 3 4 5 6 7 8 9", " ,"),
]


def _instances(pairs: list[tuple[str, str]]) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def _compare(fast: list[tuple[float, bool]], ref: list[tuple[float, bool]]) -> None:
    assert len(fast) == len(ref)
    for (lp, greedy), (ref_lp, ref_greedy) in zip(fast, ref, strict=True):
        assert lp == pytest.approx(ref_lp, rel=REL_TOL, abs=1e-6)
        assert greedy == ref_greedy


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cores())
    path = build_tiny(request.param, tmp_path_factory.mktemp(request.param))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return SimpleNamespace(
        model=model, tokenizer=tokenizer, view=LayerView(model), family=request.param
    )


@pytest.fixture(scope="module")
def tiny_tasks() -> Any:
    from gaprune_tui.engine.tasks import build_tasks

    names = ["hellaswag_offline", "winogrande_offline"]
    return build_tasks(RunConfig(tasks=[TaskSpec(n) for n in names], limit=4).validate())


def test_tiny_matches_hflm_per_request_and_per_view(tiny: Any) -> None:
    fast = make_lm(tiny, "fast")
    assert fast.tree_ok and fast.head_ok, "tree packing and head-only must work for this family"
    hflm = make_lm(tiny, "hflm", batch_size=4)
    requests = _instances(_TEXT_REQUESTS)
    for kept in (None, (0, 1, 3, 5), (0, 2, 3, 4), None):
        if kept is not None:
            tiny.view.apply(kept)
        try:
            _compare(fast.loglikelihood(requests), hflm.loglikelihood(requests, disable_tqdm=True))
        finally:
            tiny.view.restore()
    # The shared contexts were packed: fewer rows than requests, fewer tokens than HFLM's inputs.
    assert fast.stats.rows < len(_TEXT_REQUESTS)
    assert fast.stats.head_positions < sum(len(fast.tok_encode(c + o)) for c, o in _TEXT_REQUESTS)


def test_tiny_task_scores_identical(tiny: Any, tiny_tasks: Any) -> None:
    fast = make_lm(tiny, "fast")
    hflm = make_lm(tiny, "hflm", batch_size=4)
    with tiny.view.view((0, 1, 2, 4)):
        assert tiny_tasks.evaluate(fast) == tiny_tasks.evaluate(hflm)


def test_context_truncation_matches_hflm(tiny: Any) -> None:
    """A request longer than max_length is left-truncated exactly as HFLM does."""
    from lm_eval.models.huggingface import HFLM

    long_ctx = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    pairs = [(long_ctx, " A man is sitting."), (long_ctx, " Paris"), ("Short one", " two")]
    fast = FastLM(tiny.model, tiny.tokenizer, view=tiny.view, max_length=24)
    hflm = HFLM(pretrained=tiny.model, tokenizer=tiny.tokenizer, batch_size=2, max_length=24)
    requests = _instances(pairs)
    _compare(fast.loglikelihood(requests), hflm.loglikelihood(requests, disable_tqdm=True))


def test_plain_rows_fallback_matches(tiny: Any) -> None:
    """Families whose attention ignores a custom mask use plain rows: still the same numbers."""
    fast = make_lm(tiny, "fast", prefix_cache=False)
    fast.tree_ok = False
    fast.head_ok = False
    hflm = make_lm(tiny, "hflm", batch_size=4)
    requests = _instances(_TEXT_REQUESTS)
    _compare(fast.loglikelihood(requests), hflm.loglikelihood(requests, disable_tqdm=True))
    assert fast.stats.rows == len(_TEXT_REQUESTS)


def _genome_sequence(lm: Any, view: LayerView, requests: list[Instance], views: list) -> list:
    out = []
    for kept in views:
        with view.view(kept):
            out.append(lm.loglikelihood(requests))
            # Layers skipped per batch (every batch starts at the same cached boundary).
            assert lm.stats.layers_skipped % lm.stats.batches == 0
            out.append(lm.stats.layers_skipped // lm.stats.batches)
    return out


def test_prefix_cache_on_off_identical_over_genomes(tiny: Any) -> None:
    n = tiny.view.n_layers
    views = kept_views(n, (3, 5), (2, 4), (3, 4), (3, 5))
    requests = _instances(_TEXT_REQUESTS)
    on = make_lm(tiny, "fast", prefix_cache=True, token_budget=64)
    off = make_lm(tiny, "fast", prefix_cache=False, token_budget=64)
    got_on = _genome_sequence(on, tiny.view, requests, views)
    got_off = _genome_sequence(off, tiny.view, requests, views)
    for i in range(0, len(got_on), 2):
        assert [r[1] for r in got_on[i]] == [r[1] for r in got_off[i]]
        for (a, _), (b, _) in zip(got_on[i], got_off[i], strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
    skipped_on = got_on[1::2]
    assert skipped_on[0] == 0  # the base model fills the cache
    assert all(s > 0 for s in skipped_on[1:])  # every later genome starts past layer 0
    assert all(s == 0 for s in got_off[1::2])
    assert on.cache.hits > 0 and on.cache.used_bytes > 0


def test_population_plan_records_branch_points(tiny: Any) -> None:
    """Two genomes that branch apart where only the second one has a gap: the first records the
    state at the branch point only when the generation was announced (``plan``)."""
    n = tiny.view.n_layers
    first = tuple(i for i in range(n) if i not in (2, n - 1))  # 0 1 3 4 ...
    second = tuple(i for i in range(n) if i not in (2, 4))  # 0 1 3 5 ...
    assert first[:3] == second[:3] and first[3] != second[3]
    requests = _instances(_TEXT_REQUESTS)
    runs = {}
    for planned in (False, True):
        lm = make_lm(tiny, "fast", prefix_cache=True, token_budget=64)
        if planned:
            lm.plan([first, second])
        runs[planned] = _genome_sequence(lm, tiny.view, requests, [first, second])
    off = _genome_sequence(
        make_lm(tiny, "fast", prefix_cache=False, token_budget=64),
        tiny.view,
        requests,
        [first, second],
    )
    assert runs[False][3] == 2  # the base prefix (0, 1) only
    assert runs[True][3] == 3  # (0, 1, 3): the branch point
    for got in (runs[False], runs[True]):
        for i in (0, 2):
            assert [r[1] for r in got[i]] == [r[1] for r in off[i]]
            for (a, _), (b, _) in zip(got[i], off[i], strict=True):
                assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_planned_states_are_evicted_last() -> None:
    """A state that an announced genome will start from outlives newer, unneeded ones."""
    state = torch.zeros(256)  # 1 KiB
    cache = PrefixCache(budget_bytes=3 * 1024)
    cache.use_layout("L", 8, bytes_per_boundary=10**9)  # no base grid: everything is LRU
    parent = (0, 1, 3, 4, 6, 7)
    cache.store("L:b", parent, 3, "lru", state)  # state after (0, 1, 3): the oldest entry
    cache.store("L:b", (0, 2, 3, 4, 5, 7), 2, "lru", state)
    cache.plan([(0, 1, 3, 5, 6, 7), (0, 1, 4, 5, 6, 7)])  # a child of ``parent`` comes next
    for m in (3, 4, 5):
        cache.store("L:b", (0, 2, 3, 4, 5, 6), m, "lru", state)
    assert ("L:b", (0, 1, 3)) in cache.lru  # pinned by the plan: the oldest, yet kept
    assert ("L:b", (0, 2)) not in cache.lru  # not needed: evicted before it
    assert ("L:b", (0, 2, 3, 4, 5)) in cache.lru
    assert cache.used_bytes <= 3 * 1024
    assert cache.lookup("L:b", (0, 1, 3, 5, 6, 7)) == (3, state)


def test_oom_halves_the_batch_and_retries(tiny: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Equal-length requests, nothing shared: merged side by side into one row of all eight.
    pairs = [(f"Question {i}: what grows in soil?", " Plants") for i in range(8)]
    ref_lm = make_lm(tiny, "fast", prefix_cache=False, token_budget=4096)
    with forward_sizes(ref_lm) as seen:
        ref = ref_lm.loglikelihood(_instances(pairs))
    assert len(seen) == 1, "the reference must score everything in one merged row"
    limit = seen[0] // 2  # tokens per forward this "device" can hold

    fast = make_lm(tiny, "fast", prefix_cache=False, token_budget=4096)
    with (
        forward_sizes(fast, limit),
        caplog.at_level(logging.WARNING, logger="gaprune_tui.engine.scoring"),
    ):
        got = fast.loglikelihood(_instances(pairs))
    _compare(got, ref)
    # The batch shrank (token budget) and the merged row was split (merge width), both logged.
    assert fast.token_budget < 4096 and fast.merge_width < 256
    messages = [r.getMessage() for r in caplog.records]
    assert any("token budget halved" in m for m in messages)
    assert any("rows now merged up to" in m for m in messages)


def test_oom_on_a_single_row_is_raised(tiny: Any) -> None:
    fast = make_lm(tiny, "fast", prefix_cache=False, token_budget=8)

    def always_oom(*_: Any, **__: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = fast.decoder.register_forward_pre_hook(always_oom)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            fast.loglikelihood(_instances(_TEXT_REQUESTS))
    finally:
        handle.remove()


def test_stop_between_batches(tiny: Any) -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    fast = make_lm(tiny, "fast", token_budget=32, should_stop=should_stop)
    fast.merge_width = 1  # one request group per row: several batches to stop between
    with pytest.raises(StopRequested):
        fast.loglikelihood(_instances(_TEXT_REQUESTS))
    assert fast.stats.batches == 2

    hflm = make_lm(tiny, "hflm", batch_size=2, should_stop=lambda: True)
    with pytest.raises(StopRequested):
        hflm.loglikelihood(_instances(_TEXT_REQUESTS), disable_tqdm=True)


def test_make_lm_kinds(tiny: Any) -> None:
    from lm_eval.models.huggingface import HFLM

    assert isinstance(make_lm(tiny, "hflm"), HFLM)
    assert isinstance(make_lm(tiny, "fast"), FastLM)
    with pytest.raises(ConfigError, match="unknown scorer"):
        make_lm(tiny, "turbo")
    assert isinstance(SCORER_VERSION, str) and SCORER_VERSION
    with pytest.raises(NotImplementedError, match="multiple-choice"):
        make_lm(tiny, "fast").generate_until([])


def assert_members_in_place(row: Any, reqs: list[TokenRequest]) -> None:
    """Every scored position of each of the row's members sees exactly its own request's tokens,
    at the right positions."""
    for member, gather in zip(row.members, row.gather, strict=True):
        req = reqs[member]
        for q, g in zip(req.scored_positions(), gather, strict=True):
            assert row.tokens[g] == req.inp[q]
            assert row.positions[g] == q


def test_pack_rows_shares_prefixes_not_strings() -> None:
    ctx = tuple(range(10, 30))
    mc = [TokenRequest(ctx + c[:-1], c) for c in ((1, 2, 3), (4, 5), (6,))]
    wino = [
        TokenRequest(tuple(range(40, 60)) + (7,) + (90, 91), (90, 91, 92)),
        TokenRequest(tuple(range(40, 60)) + (8,) + (90, 91), (90, 91, 92)),
    ]
    other = [TokenRequest((5, 6, 7), (8,))]
    reqs = mc + wino + other
    rows = pack_rows(reqs)
    assert sorted(len(r.members) for r in rows) == [1, 2, 3]
    for row in rows:
        assert_members_in_place(row, reqs)
    mc_row = next(r for r in rows if len(r.members) == 3)
    assert len(mc_row) == len(ctx) + 2 + 1 + 0  # the context once, then each branch's own tokens


def test_merge_rows_puts_short_rows_side_by_side() -> None:
    reqs = [
        TokenRequest(tuple(range(b, b + n)), (b + n,)) for b, n in ((0, 30), (100, 12), (200, 9))
    ]
    reqs += [TokenRequest(tuple(range(300, 320)) + (c,), (c + 1,)) for c in (1, 2)]
    rows = pack_rows(reqs)
    merged = merge_rows(rows, 32)
    # Longest first, first fit: 30 | 22 (room 10) | 12 (room 20); then 9 joins the 22.
    assert [len(r) for r in merged] == [31, 30, 12]
    assert [len(r.members) for r in merged] == [3, 1, 1]
    assert sorted(m for r in merged for m in r.members) == list(range(len(reqs)))
    for row in merged:
        assert not row.segments or len(row.segments) == len(row)
        assert_members_in_place(row, reqs)
        for gather in row.gather:  # a member's tokens all lie in one segment
            assert not row.segments or len({row.segments[g] for g in gather}) == 1


# ---- the embedded model on real offline benchmarks ------------------------------------------

EMBEDDED_TASKS = [
    "hellaswag_offline",
    "openbookqa_offline",
    "arc_easy_offline",
    "winogrande_offline",
]


@pytest.fixture(scope="module")
def embedded_tasks() -> Any:
    from gaprune_tui.engine.tasks import build_tasks

    config = RunConfig(tasks=[TaskSpec(n) for n in EMBEDDED_TASKS], limit=4).validate()
    return build_tasks(config)


def _task_instances(taskset: Any, limit: int) -> dict[str, list[Instance]]:
    out = {}
    for rt in taskset.tasks:
        rt.task.build_all_requests(limit=limit, rank=0, world_size=1)
        out[rt.name] = list(rt.task.instances)
    return out


@pytest.mark.slow
def test_embedded_matches_hflm_on_four_tasks(embedded: Any, embedded_tasks: Any) -> None:
    fast = make_lm(embedded, "fast")
    hflm = make_lm(embedded, "hflm", batch_size=16)
    per_task = _task_instances(embedded_tasks, limit=4)
    kept = [i for i in range(embedded.n_layers) if i not in (20, 24, 27)]
    for kept_view in (None, kept):
        if kept_view is not None:
            embedded.view.apply(kept_view)
        try:
            for name, requests in per_task.items():
                got = fast.loglikelihood(requests)
                ref = hflm.loglikelihood(requests, disable_tqdm=True)
                _compare(got, ref)
                assert fast.stats.rows < len(requests), name  # every task shared something
            if kept_view is not None:  # task scores once, on the pruned view (HFLM is slow)
                assert embedded_tasks.evaluate(fast) == embedded_tasks.evaluate(hflm)
        finally:
            embedded.view.restore()


@pytest.mark.slow
def test_embedded_prefix_cache_genome_sequence(embedded: Any, embedded_tasks: Any) -> None:
    n = embedded.n_layers
    views = [
        tuple(range(n)),
        tuple(i for i in range(n) if i not in (20, 24, 27)),
        tuple(i for i in range(n) if i not in (3, 5, 11, 17)),
        tuple(i for i in range(n) if i not in (20, 25, 27)),
    ]
    per_task = _task_instances(embedded_tasks, limit=2)
    requests = per_task["hellaswag_offline"] + per_task["winogrande_offline"]
    on = make_lm(embedded, "fast", prefix_cache=True)
    off = make_lm(embedded, "fast", prefix_cache=False)
    got_on = _genome_sequence(on, embedded.view, requests, views)
    got_off = _genome_sequence(off, embedded.view, requests, views)
    for i in range(0, len(got_on), 2):
        for (a, ga), (b, gb) in zip(got_on[i], got_off[i], strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
            assert ga == gb
    assert got_on[3] >= 18  # drop {20, 24, 27} starts near layer 20 from the base model's states
    assert got_on[7] == 23  # drop {20, 25, 27} shares kept[:23] with drop {20, 24, 27}


def test_loaded_model_interface_is_enough(tmp_path: Path) -> None:
    """make_lm needs only model, tokenizer and view from a LoadedModel."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny("llama", tmp_path / "m", n_layers=3)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    loaded = SimpleNamespace(model=model, tokenizer=AutoTokenizer.from_pretrained(path))
    lm = make_lm(loaded, "fast")
    ((lp, greedy),) = lm.loglikelihood(_instances([("Hello there", " friend")]))
    assert lp < 0 and isinstance(greedy, bool)
