"""KL and perplexity fitness: how far a pruned model's next-token distributions move from the base's.

Task scores at small limits are mostly sample noise (on the embedded model at limit 20 the task
fitness does not predict held-out quality); EvoPress (ICML 2025) searches on KL(base || pruned) of
next-token distributions on calibration text instead, which every token informs.

The base model runs once per run (``BaseDistributions.compute``) and keeps, per scored position, its
top-K log-probabilities with their token ids and the log of the remaining mass as one bin, plus its
NLL: ``N * L * (8 * K + 8)`` bytes (16 x 128 positions at K = 256: 4.2 MB), logged with K.

Per genome (``KLScorer.score``), with ``p`` the base and ``q`` the pruned distribution at a
position, ``T`` the base's top-K tokens and the rest bin ``p_rest = 1 - sum_T p_i``:

    KL_K = sum_{i in T} p_i (log p_i - log q_i) + p_rest (log p_rest - log q_rest)

This is the KL between the two distributions coarsened to K + 1 bins, so by the log-sum inequality
it is a LOWER bound of the full-vocabulary KL, equal to it when K is the vocabulary size; the bound
is tight when the base puts little mass outside its top K (measured in ``bench/bench_kl.py``).
``log q_rest`` is a log-sum-exp over the pruned model's non-top-K log-probabilities, not
``log(1 - sum q_i)``, which loses everything to rounding when the top K hold almost all the mass.

Each sequence of L tokens scores its first L - 1 positions (the last has no next token for the
NLL). Means are over all scored positions; standard errors are over the N sequences (the
sequences are the independent samples, tokens within one are not): ``kl_stderr = sd(per-sequence
mean KL) / sqrt(N)``, and for perplexity ``exp(mean NLL)`` the delta method gives
``ppl_stderr = ppl * sd(per-sequence mean NLL) / sqrt(N)``.

Logits come from ``FastLM.sequence_logits``: the same layer views, prefix cache (a genome whose
first dropped layer is ``j`` starts from the cached base state at layer ``j``), stop polling and
out-of-memory handling as task scoring. Log-softmax is always computed in fp32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gaprune_tui.core.errors import ConfigError
from gaprune_tui.engine.calibration import Calibration
from gaprune_tui.engine.layers import LayerView
from gaprune_tui.engine.scoring import FastLM, make_lm

# Bump whenever a change could move a KL or perplexity value: it is part of the memo key.
KL_VERSION = "kl-2"
DEFAULT_TOP_K = 256

logger = logging.getLogger(__name__)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def _rest_logp(logp: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside ``top_ids`` (``-inf`` when they cover everything)."""
    return logp.scatter(1, top_ids, float("-inf")).logsumexp(dim=-1)


@dataclass
class BaseDistributions:
    """The base model's next-token distributions on the calibration text, kept compactly.

    Row ``r`` of each tensor is flat position ``r`` of the ``[N, L]`` calibration (row-major); all
    live on the model's device.
    """

    top_logp: torch.Tensor  # float32 [N * L, K]: base log-probabilities of its top K tokens
    top_ids: torch.Tensor  # int32 [N * L, K]: those tokens
    rest_logp: torch.Tensor  # float32 [N * L]: log of the remaining mass (-inf if none)
    nll: torch.Tensor  # float32 [N * L]: base NLL of the next token (0 at each last position)
    fingerprint: str  # the calibration's

    @property
    def top_k(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held: ``N * L * (8 * K + 8)``."""
        tensors = (self.top_logp, self.top_ids, self.rest_logp, self.nll)
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def compute(
        cls,
        loaded: Any,
        calibration: Calibration,
        top_k: int = DEFAULT_TOP_K,
        *,
        lm: FastLM | None = None,
    ) -> BaseDistributions:
        """One pass of the base model (all layers) over ``calibration``.

        Pass the ``lm`` the ``KLScorer`` will use: this pass then also fills its prefix cache with
        the base model's states, which is where every genome starts."""
        lm = lm if lm is not None else _make_lm(loaded)
        view = _view_of(loaded, lm)
        if calibration.seq_len > lm.max_length:
            raise ConfigError(
                f"calibration sequences of {calibration.seq_len} tokens are longer than the "
                f"model's {lm.max_length}: use a shorter sequence length"
            )
        vocab = 0
        ids = calibration.input_ids
        n_pos = ids.numel()
        targets = _targets(ids).to(lm.device)
        parts: dict[int, tuple[torch.Tensor, ...]] = {}
        with view.view(range(view.n_layers)):
            for start, logits in lm.sequence_logits(ids, calibration.fingerprint):
                with torch.inference_mode():
                    logp = _log_softmax(logits)
                    k = min(top_k, logp.shape[-1])
                    top_logp, top_ids = logp.topk(k, dim=-1)
                    rest = _rest_logp(logp, top_ids)
                    nll = _nll(logp, targets[start : start + len(logp)])
                parts[start] = (top_logp, top_ids, rest, nll)
                vocab = logp.shape[-1]
        ordered = [parts[s] for s in sorted(parts)]
        base = cls(
            top_logp=torch.cat([p[0] for p in ordered]),
            top_ids=torch.cat([p[1] for p in ordered]).to(torch.int32),
            rest_logp=torch.cat([p[2] for p in ordered]),
            nll=torch.cat([p[3] for p in ordered]),
            fingerprint=calibration.fingerprint,
        )
        if base.nll.shape[0] != n_pos:
            raise RuntimeError("internal error: base distributions do not cover the calibration")
        logger.info(
            "KL base distributions: top-%d of %s tokens at %d positions, %.1f MB",
            base.top_k,
            vocab,
            n_pos,
            base.nbytes / 2**20,
        )
        return base


def _targets(ids: torch.Tensor) -> torch.Tensor:
    """Next token of each flat position; -1 at each sequence's last position (not scored)."""
    nxt = torch.full_like(ids, -1)
    nxt[:, :-1] = ids[:, 1:]
    return nxt.reshape(-1)


def _nll(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    scored = targets >= 0
    picked = logp.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return torch.where(scored, -picked, torch.zeros_like(picked))


def _make_lm(loaded: Any, **kwargs: Any) -> FastLM:
    lm = make_lm(loaded, "fast", **kwargs)
    assert isinstance(lm, FastLM)
    return lm


def _view_of(loaded: Any, lm: FastLM) -> LayerView:
    view = lm.view if lm.view is not None else getattr(loaded, "view", None)
    if view is None:
        raise ValueError("KL scoring needs a model with a LayerView (load it with load_model)")
    return view


def kl_to_base(
    logits: torch.Tensor,
    top_logp: torch.Tensor,
    top_ids: torch.Tensor,
    rest_logp: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position KL(base || model) over the base's top-K bins plus the rest, and the model's
    log-probabilities (fp32) for the caller's NLL. See the module docstring for the bound."""
    logq = _log_softmax(logits)
    top_q = logq.gather(1, top_ids)
    rest_q = _rest_logp(logq, top_ids)
    top_term = (top_logp.exp() * (top_logp - top_q)).sum(dim=-1)
    rest_p = rest_logp.exp()
    # No rest bin (K = vocabulary): 0 * (-inf - -inf) would be NaN, the term is 0.
    rest_term = torch.where(rest_p > 0, rest_p * (rest_logp - rest_q), torch.zeros_like(rest_p))
    return top_term + rest_term, logq


def _mean_stderr(per_sequence: torch.Tensor) -> tuple[float, float]:
    values = per_sequence.double()
    n = values.numel()
    mean = float(values.mean())
    sd = float(values.std(unbiased=True)) if n > 1 else float("nan")
    return mean, sd / math.sqrt(n)


class KLScorer:
    """KL(base || pruned) and perplexity of kept-layer sets on one calibration set.

    Built once per run; ``score`` applies the layer view itself. Pass ``lm`` to share a ``FastLM``
    (and its prefix cache) with ``BaseDistributions.compute``; the other keyword arguments only
    build a ``FastLM`` when none is passed (a shared one keeps its own ``should_stop``).
    """

    def __init__(
        self,
        loaded: Any,
        calibration: Calibration,
        base: BaseDistributions,
        *,
        lm: FastLM | None = None,
        prefix_cache: bool = True,
        prefix_cache_mb: float = 4096,
        token_budget: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        if base.fingerprint != calibration.fingerprint:
            raise ValueError("base distributions were computed on another calibration set")
        self.lm = (
            lm
            if lm is not None
            else _make_lm(
                loaded,
                prefix_cache=prefix_cache,
                prefix_cache_mb=prefix_cache_mb,
                token_budget=token_budget,
                should_stop=should_stop,
            )
        )
        self.view = _view_of(loaded, self.lm)
        self.calibration = calibration
        self.base = base
        self._targets = _targets(calibration.input_ids).to(self.lm.device)

    def context(self) -> dict[str, Any]:
        """What besides the model, device and kept layers decides a value: for the memo key."""
        return {
            "kl": KL_VERSION,
            "top_k": self.base.top_k,
            "calibration": self.calibration.fingerprint,
        }

    def plan(self, paths: Sequence[Sequence[int]]) -> None:
        """The kept-layer paths about to be scored: see ``PrefixCache.plan``."""
        self.lm.plan(paths)

    @property
    def n_sequences(self) -> int:
        """The calibration sequences a full score reads."""
        return int(self.calibration.input_ids.shape[0])

    def subset_sequences(self, tokens: int | None) -> int:
        """How many calibration sequences a ``tokens`` budget scores: the first
        ``tokens // seq_len`` of them (at least one, at most all); None means all."""
        n_seq, seq_len = self.calibration.input_ids.shape
        if tokens is None:
            return int(n_seq)
        return max(1, min(int(n_seq), int(tokens) // int(seq_len)))

    def score(self, kept: Sequence[int], tokens: int | None = None) -> dict[str, Any]:
        """Score the model with only ``kept`` layers (base indices).

        ``tokens`` scores only the first ``subset_sequences(tokens)`` sequences: the cheap first
        step of multi-step selection (a different fidelity: its own memo key, never a full score).
        Returns ``kl`` (mean per-token KL(base || pruned), lower is better), ``kl_stderr``, ``ppl``
        (exp of the mean NLL), ``ppl_stderr``, ``nll``, ``tokens`` (positions scored) and the
        per-sequence ``kl_seq`` and ``nll_seq`` (for paired comparisons). Raises
        ``StopRequested`` between batches when the run must stop."""
        n_all = int(self.calibration.input_ids.shape[0])
        n_seq = self.subset_sequences(tokens)
        ids = self.calibration.input_ids[:n_seq]
        key = self.calibration.fingerprint
        if n_seq < n_all:
            # Its own prefix-cache layout: the subset's batches are not the full set's.
            key = f"{key}:first{n_seq}"
        seq_len = ids.shape[1]
        kl = torch.zeros(ids.numel(), dtype=torch.float32, device=self.lm.device)
        nll = torch.zeros_like(kl)
        b = self.base
        with self.view.view(kept):
            for start, logits in self.lm.sequence_logits(ids, key):
                end = start + logits.shape[0]
                with torch.inference_mode():
                    kl_part, logq = kl_to_base(
                        logits,
                        b.top_logp[start:end],
                        b.top_ids[start:end].long(),
                        b.rest_logp[start:end],
                    )
                    kl[start:end] = kl_part
                    nll[start:end] = _nll(logq, self._targets[start:end])
        per_seq_kl = kl.reshape(n_seq, seq_len)[:, :-1].mean(dim=1).cpu()
        per_seq_nll = nll.reshape(n_seq, seq_len)[:, :-1].mean(dim=1).cpu()
        kl_mean, kl_se = _mean_stderr(per_seq_kl)
        nll_mean, nll_se = _mean_stderr(per_seq_nll)
        ppl = math.exp(nll_mean)
        return {
            "kl": kl_mean,
            "kl_stderr": kl_se,
            "ppl": ppl,
            "ppl_stderr": ppl * nll_se,
            "nll": nll_mean,
            "tokens": float(n_seq * (seq_len - 1)),
            # Per sequence, for paired comparisons of two genomes on the same sequences.
            "kl_seq": [float(v) for v in per_seq_kl.double()],
            "nll_seq": [float(v) for v in per_seq_nll.double()],
        }
