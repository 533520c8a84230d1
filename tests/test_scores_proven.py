"""Task scores, proven: the fast scorer through the evaluator's real path equals lm-eval's HFLM.

docs/trustworthy-picks.md: "The fast scorer answers lm-eval's requests with identical numbers". Checked here the way a
search scores: ``Evaluator.plan`` announces one generation's genomes, they are scored in tree order
(sorted, as ``Search`` does) with the prefix cache on, at full fidelity and at ``--screen``
fidelity (``Evaluator(dropped, limit=N)``); the same genomes go through an ``Evaluator`` with
``scorer="hflm"`` (lm-eval's own HFLM on the same in-memory layer view). Every bundled offline task
(all eight), at 0-shot and at 2-shot:

* the task scores (metric, stderr, n) are exactly equal;
* every per-request log-likelihood is recorded on both sides and the largest difference is
  bounded by what lm-eval itself moves when only HFLM's batch size changes (1 vs 8 on the same
  view), measured in the same test. Both are float32 rounding noise, which grows with the size of
  the log-likelihood (a sum over the continuation's tokens), so both are measured relative to
  ``max(1, |loglik|)``; the bound is ``DRIFT_FACTOR`` times that drift (never below one float32
  epsilon, for a view where the drift happens to be 0).

Measured on the reference machine (2 CPU cores, torch 2.13, fp32; ``pytest -s`` prints these lines;
"rel" is relative to max(1, |loglik|); the drift is on each task's first 5 items, same view):

=============================================  =======================  =======================
pass (all 8 tasks)                             fast vs HFLM, max        HFLM batch 1 vs 8, max
=============================================  =======================  =======================
tiny Llama 0-shot, limit 20, 4 genomes         8.8e-5 abs, 1.7e-7 rel   1.9e-6 abs, 1.1e-7 rel
tiny Llama 0-shot, screen 5, 4 genomes         7.7e-5 abs, 1.5e-7 rel   (same)
tiny Llama 2-shot, limit 20, 2 genomes         9.3e-5 abs, 1.9e-7 rel   7.6e-6 abs, 1.2e-7 rel
SmolLM2-135M 0-shot, limit 20, HFLM 1 genome   9.9e-5 abs, 1.3e-6 rel   4.6e-5 abs, 5.5e-7 rel
SmolLM2-135M 0-shot, screen 5                  4.6e-5 abs, 4.9e-7 rel   (same)
SmolLM2-135M 2-shot, limit 5, HFLM 1 genome   4.4e-5 abs, 1.0e-6 rel   (0-shot's; 2-shot's: 6.9e-7 rel)
=============================================  =======================  =======================

(The embedded 2-shot line was measured when the test ran that pass; it no longer does, see below.)

(On the 0-shot tiny pass at limit 20 the drift over all 20 items was 7.6e-6 abs, 1.7e-7 rel.) So
the fast scorer moves a log-likelihood by at most ~2.4x what lm-eval's own batch-size change moves
it (relative), ~1-10 float32 ulps; every task score is identical.

Cost, measured while other jobs loaded the 2 cores (load average ~11, so wall times were 5-10x the
idle ones and only CPU seconds are comparable): the two tiny tests 238 CPU-s in all (2-shot ~60% of
it); the embedded test ~450 CPU-s when it also measured a 2-shot drift (HFLM ~2/3 of it; ~330
estimated as committed, drift measured once). That was more than the ~3 minutes asked for,
and the whole suite ran past its 15 minutes: the embedded 2-shot pass (``EMBEDDED_PASSES``,
~80 CPU-s) was dropped first, as planned here; 2-shot equality on every task is the tiny
model's pass at limit 20.

What the CI budget (about 3 minutes extra on 2 cores) did not allow, said plainly: the embedded
model is not checked at 2-shot (it was, at limit 5, with the numbers above, until the suite's
time asked for it back); HFLM scores one genome of the embedded model's
generation, not every one (HFLM on a 6-of-30-layer view costs ~80 CPU-s per genome at 0-shot limit
20 here: it pushes every request's full context through the kept layers and the 49k-vocabulary head
at every position); the drift is measured on 5 items per task, once per test; genomes that keep
most of the 30 layers (what a real search scores) are not run against HFLM here (a full forward
costs ~2.3 ms/token), only in ``test_scoring.py``'s four-task test; the tiny model's 2-shot
generation is two genomes, not four.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from cores import cores
from tiny_models import build_tiny

from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.store import Memo
from gaprune_tui.core.tasknames import BUNDLED_TASKS
from gaprune_tui.engine.evaluator import Evaluator
from gaprune_tui.engine.scoring import make_lm

ALL_TASKS = sorted(BUNDLED_TASKS)
# The fast scorer's largest per-request difference from HFLM, relative to max(1, |loglik|), may be
# at most this many times HFLM's own batch-size drift (measured: up to 2.4x, see above).
DRIFT_FACTOR = 4.0
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)

RequestKey = tuple[str, int, int]  # task, document, choice


@dataclass
class Recorded:
    """One genome's task scores and every request's log-likelihood, as an evaluator produced them."""

    dropped: list[int]
    scores: dict[str, dict[str, Any]]
    lls: dict[RequestKey, float] = field(default_factory=dict)


def record_loglikelihoods(lm: Any, sink: dict[RequestKey, float]) -> None:
    """Make ``lm`` (FastLM or HFLM) copy every answer into ``sink`` as lm-eval receives it."""
    original = type(lm).loglikelihood.__get__(lm)

    def loglikelihood(requests: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        answers = original(requests, *args, **kwargs)
        for request, (ll, _greedy) in zip(requests, answers, strict=True):
            key = (request.task_name, request.doc_id, request.idx)
            assert key not in sink, f"request {key} scored twice in one evaluation"
            sink[key] = float(ll)
        return answers

    lm.loglikelihood = loglikelihood


def score_generation(
    loaded: Any,
    taskset: Any,
    config: RunConfig,
    scorer: str,
    genomes: list[list[int]],
    memo: Path,
    limit: int | None = None,
) -> list[Recorded]:
    """Score one generation as ``Search`` does: announced with ``plan``, then in tree order."""
    evaluator = Evaluator(loaded, taskset, dataclasses.replace(config, scorer=scorer), Memo(memo))
    order = sorted(genomes)
    evaluator.plan(order)
    out = []
    for dropped in order:
        lls: dict[RequestKey, float] = {}
        record_loglikelihoods(evaluator.lm, lls)
        outcome = evaluator(dropped, limit)
        assert not outcome.from_memo and outcome.fidelity == (
            "full" if limit is None else f"screen:{limit}"
        )
        out.append(Recorded(dropped, outcome.scores, lls))
    assert evaluator.evaluations == len(order)
    if scorer == "fast" and len(order) > 1:
        assert evaluator.lm.cache is not None and evaluator.lm.cache.hits > 0
    return out


def rel_diff(a: dict[RequestKey, float], b: dict[RequestKey, float]) -> tuple[float, float]:
    """The largest per-request difference: absolute, and relative to ``max(1, |b|)``."""
    assert a.keys() == b.keys() and a
    worst_abs = max(abs(a[k] - b[k]) for k in b)
    worst_rel = max(abs(a[k] - b[k]) / max(1.0, abs(b[k])) for k in b)
    return worst_abs, worst_rel


def batch_size_drift(
    loaded: Any, taskset: Any, kept: list[int], limit: int | None = None
) -> tuple[float, float]:
    """How far lm-eval's HFLM moves its own answers when only the batch size changes (1 vs 8) on
    the same view: the noise floor any other scorer is measured against."""
    runs = []
    for batch_size in (1, 8):
        lm = make_lm(loaded, "hflm", batch_size=batch_size)
        lls: dict[RequestKey, float] = {}
        record_loglikelihoods(lm, lls)
        with loaded.view.view(kept), torch.no_grad():
            taskset.evaluate(lm, limit=limit)
        runs.append(lls)
    return rel_diff(runs[1], runs[0])


@dataclass
class Proof:
    """What one comparison measured, for the assertion message and the ``-s`` report."""

    label: str
    fast_abs: float
    fast_rel: float
    drift_abs: float
    drift_rel: float
    requests: int

    def line(self) -> str:
        return (
            f"{self.label}: {self.requests} requests; fast vs HFLM max {self.fast_abs:.2g} abs, "
            f"{self.fast_rel:.2g} rel; HFLM batch 1 vs 8: {self.drift_abs:.2g} abs, "
            f"{self.drift_rel:.2g} rel"
        )


def prove(
    label: str,
    fast: list[Recorded],
    hflm: list[Recorded],
    drift: tuple[float, float],
) -> Proof:
    """Assert equal task scores and the per-request bound for every genome HFLM scored (all of
    the generation, or the ones the budget allowed); return the numbers."""
    ours_by_genome = {tuple(r.dropped): r for r in fast}
    worst_abs = worst_rel = 0.0
    for ref in hflm:
        ours = ours_by_genome[tuple(ref.dropped)]
        assert set(ours.scores) == set(ALL_TASKS)
        assert ours.scores == ref.scores, f"{label}: drop {ours.dropped}"
        got_abs, got_rel = rel_diff(ours.lls, ref.lls)
        worst_abs, worst_rel = max(worst_abs, got_abs), max(worst_rel, got_rel)
    proof = Proof(label, worst_abs, worst_rel, *drift, len(hflm[0].lls))
    print(proof.line(), file=sys.stderr)
    bound = DRIFT_FACTOR * max(proof.drift_rel, FLOAT32_EPS)
    assert proof.fast_rel <= bound, proof.line()
    return proof


def _config(model: str, shots: int, limit: int) -> RunConfig:
    return RunConfig(
        model=model,
        tasks=[TaskSpec(name) for name in ALL_TASKS],
        fitness="squared_mean",
        num_fewshot=shots,
        limit=limit,
        prune=2,
        device="cpu",
        dtype="float32",
    ).validate()


# ---- a tiny model: every task, 0- and 2-shot, limit 20, a generation, screening ----------------

TINY_LIMIT = 20
# lm-eval's batch-size drift is measured on each task's first 5 items (HFLM at batch 1 is the
# slowest scorer in these tests).
DRIFT_LIMIT = 5
# One generation of a 6-layer model dropping 2: pairs that share their first dropped layer (tree
# order starts the second from the first's cached branch point), one that drops the first layer.
TINY_GENOMES = [[2, 4], [3, 5], [2, 3], [0, 5]]
# (shots, genomes, screen): 2-shot prompts are ~3x longer (up to the tiny model's 512 positions,
# truncated alike on both sides), so that generation is the two genomes that share a branch.
TINY_PASSES = [(0, TINY_GENOMES, 5), (2, [[2, 3], [2, 4]], None)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gaprune_tui.engine.model import load_model

    torch.set_num_threads(cores())
    path = build_tiny("llama", tmp_path_factory.mktemp("llama"))
    return load_model(str(path), dtype="float32", device="cpu")


@pytest.mark.parametrize(("shots", "genomes", "screen"), TINY_PASSES)
def test_tiny_scores_equal_hflm_on_every_task(
    tiny_llama: Any, shots: int, genomes: list[list[int]], screen: int | None, tmp_path: Path
) -> None:
    from gaprune_tui.engine.tasks import build_tasks

    config = _config(str(tiny_llama.source), shots, TINY_LIMIT)
    taskset = build_tasks(config)
    assert {t.num_fewshot for t in taskset.tasks} == {shots}
    kept = [i for i in range(tiny_llama.n_layers) if i not in genomes[0]]
    drift = batch_size_drift(tiny_llama, taskset, kept, DRIFT_LIMIT)
    for limit in [None] + ([screen] if screen else []):
        fast = score_generation(
            tiny_llama, taskset, config, "fast", genomes, tmp_path / f"f{limit}.db", limit
        )
        hflm = score_generation(
            tiny_llama, taskset, config, "hflm", genomes, tmp_path / f"h{limit}.db", limit
        )
        assert all(s["n"] == (limit or TINY_LIMIT) for r in fast for s in r.scores.values())
        label = "full" if limit is None else f"screen {limit}"
        prove(f"tiny llama {shots}-shot {label}", fast, hflm, drift)


# ---- the embedded SmolLM2-135M: every task, 0-shot, genomes that keep few layers ---------------

# One generation of two genomes that keep 6 of 30 layers (a search's cost falls with the kept
# layers; HFLM pushes every request through every kept layer and the 49k-vocabulary head). They
# share kept[:3] = (0, 1, 9): in tree order the second starts from the first's cached branch point.
_KEEP = ((0, 1, 9, 20, 27, 29), (0, 1, 9, 21, 27, 29))
EMBEDDED_GENOMES = [[i for i in range(30) if i not in keep] for keep in _KEEP]
# (shots, limit, screen): what fits the CI budget (see the test's docstring).
EMBEDDED_PASSES = [(0, 20, 5)]


@pytest.mark.slow
def test_embedded_scores_equal_hflm(embedded: Any, tmp_path: Path) -> None:
    """The embedded model, all eight tasks: the fast evaluator scores the whole generation in tree
    order with the prefix cache; HFLM scores its second genome (the one that starts from the
    first's cached branch point: the path only the fast scorer has). 0-shot at limit 20 plus the
    screening pass at limit 5 (2-shot is the tiny model's, above). lm-eval's batch-size drift is
    measured once, on the first 5 items. Cost: see the module docstring.
    """
    from gaprune_tui.engine.tasks import build_tasks

    assert embedded.n_layers == 30
    checked = EMBEDDED_GENOMES[1]
    kept = [i for i in range(30) if i not in checked]
    drift: tuple[float, float] | None = None
    for shots, limit, screen in EMBEDDED_PASSES:
        config = _config("demo", shots, limit)
        taskset = build_tasks(config)
        if drift is None:
            drift = batch_size_drift(embedded, taskset, kept, DRIFT_LIMIT)
        for pass_limit in [None] + ([screen] if screen else []):
            memo = tmp_path / f"{shots}-{pass_limit}"
            fast = score_generation(
                embedded, taskset, config, "fast", EMBEDDED_GENOMES, memo / "f.db", pass_limit
            )
            hflm = score_generation(
                embedded, taskset, config, "hflm", [checked], memo / "h.db", pass_limit
            )
            label = "full" if pass_limit is None else f"screen {pass_limit}"
            prove(f"embedded {shots}-shot limit {limit} {label}", fast, hflm, drift)
