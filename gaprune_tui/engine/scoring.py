"""Loglikelihood scoring of a layer view behind lm-eval's ``LM`` interface: same numbers, less compute.

lm-eval stays the source of truth for prompts, few-shot and metrics; this module only answers its
``loglikelihood`` requests. ``FastLM`` returns what lm-eval's ``HFLM`` returns (same tokenisation, same
context truncation, same ``is_greedy``) while doing less work:

* every ``(context, continuation)`` pair is tokenised once per run, not once per genome;
* requests that share a token prefix (the choices of one multiple-choice document, or Winogrande's
  two contexts up to the blank) are packed into ONE row: the shared prefix once, then each request's
  own tokens as a branch that sees the prefix and its own earlier tokens but not its siblings
  (a tree-shaped 4D attention mask, position ids restarting after the prefix for every branch).
  Measured here, scoring one document at a time against a KV cache was slower than lm-eval on CPU
  (each forward has a large fixed cost), so rows are batched across documents up to a token budget;
* short rows are merged side by side as independent segments of one row (``merge_rows``), so
  batches carry no padding;
* the LM head runs only at the positions whose log-probabilities are needed;
* across genomes, hidden states after a kept-layer prefix are cached per batch (``PrefixCache``), so a
  genome whose first dropped layer is ``j`` starts at layer ``j`` instead of 0; the search announces
  each generation (``plan``) and scores it in tree order, so a genome also starts where it branches
  off a genome scored before it;
* an out-of-memory error halves the token budget (then the merge width) and retries (logged).

Families whose attention ignores a custom mask (or whose head does something unusual) are detected
by a probe at start-up that compares against the model's own forward, and fall back to plain padded
rows and/or the model's full head: slower, never wrong.

Only multiple-choice scoring (``loglikelihood``) is implemented: the engine only uses such tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from torch import nn

from gaprune_tui.core.errors import ConfigError
from gaprune_tui.engine.control import StopRequested
from gaprune_tui.engine.layers import LayerLocation, LayerView, locate_layers

# Bump whenever a change could move a score: it is part of the fitness memo key.
# fast-3: log_softmax in float32 (logits upcast first): bfloat16 log-likelihoods move.
SCORER_VERSION = "fast-3"

logger = logging.getLogger(__name__)

_DEFAULT_MAX_LENGTH = 2048  # lm-eval's HFLM._DEFAULT_MAX_LENGTH
_CPU_TOKEN_BUDGET = 4096  # tokens per forward on CPU: big enough to amortise the fixed cost
_MAX_ROW_TOKENS = 1024  # a packed row never grows past this (unless one request alone is longer)
# Short rows are merged side by side up to this width: no padding, fewer and fuller batches, and
# attention stays narrow (measured on hellaswag + openbookqa: 256 beat 0, 64-192 and 320-1024).
_MERGE_WIDTH = 256
_SEGMENT = 1 << 20  # tree id = segment * _SEGMENT + branch + 1 (see FastLM._tensors)
_HEAD_CHUNK = 512  # positions per LM-head call: bounds the (positions x vocab) logits tensor


# --------------------------------------------------------------------------------------------
# Packing requests into tree-shaped rows


@dataclass(frozen=True)
class TokenRequest:
    """One request after lm-eval's tokenisation: the model input and the tokens to score.

    ``inp`` is ``(context + continuation)[-(max_length + 1):][:-1]`` exactly as ``HFLM`` builds it;
    position ``len(inp) - len(cont) + t`` of ``inp`` predicts ``cont[t]``.
    """

    inp: tuple[int, ...]
    cont: tuple[int, ...]

    def scored_positions(self) -> range:
        return range(len(self.inp) - len(self.cont), len(self.inp))


@dataclass
class Row:
    """One packed row: a shared prefix then one branch per member request."""

    tokens: list[int]
    positions: list[int]
    branches: list[int]  # -1 = shared prefix, i = member i's own tokens
    members: list[int]  # indices into the request list
    # Per member: the row index of each scored position (aligned with the member's ``cont``).
    gather: list[list[int]] = field(default_factory=list)
    # Independent groups side by side in one row (``merge_rows``): a token sees its own segment only.
    segments: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


def merge_rows(rows: Sequence[Row], width: int) -> list[Row]:
    """Put short rows side by side, as segments of one row no wider than ``width`` (or than its
    first row), first fit in order of decreasing length. Batched rows are padded to the widest
    one; segments fill that padding with real work instead. Returns rows longest first."""
    bins: list[list[Row]] = []
    room: list[int] = []
    for row in sorted(rows, key=lambda r: -len(r)):
        for b, free in enumerate(room):
            if len(row) <= free:
                bins[b].append(row)
                room[b] -= len(row)
                break
        else:
            bins.append([row])
            room.append(max(width, len(row)) - len(row))
    out = []
    for group in bins:
        if len(group) == 1:
            out.append(group[0])
            continue
        merged = Row([], [], [], [], [], [])
        for seg, row in enumerate(group):
            offset = len(merged.tokens)
            merged.tokens.extend(row.tokens)
            merged.positions.extend(row.positions)
            merged.branches.extend(row.branches)
            merged.segments.extend([seg] * len(row))
            merged.members.extend(row.members)
            merged.gather.extend([[offset + q for q in g] for g in row.gather])
        out.append(merged)
    out.sort(key=lambda r: (-len(r), r.tokens))
    return out


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _make_row(reqs: Sequence[TokenRequest], members: list[int], share: bool) -> Row:
    """Pack ``members`` into one row around their longest common token prefix."""
    if not share:
        (only,) = members
        r = reqs[only]
        n = len(r.inp)
        return Row(
            tokens=list(r.inp),
            positions=list(range(n)),
            branches=[0] * n,
            members=[only],
            gather=[list(r.scored_positions())],
        )
    prefix = reqs[members[0]].inp
    plen = len(prefix)
    for m in members[1:]:
        plen = min(plen, _lcp(prefix, reqs[m].inp))
    tokens = list(prefix[:plen])
    positions = list(range(plen))
    branches = [-1] * plen
    gather: list[list[int]] = []
    for b, m in enumerate(members):
        inp = reqs[m].inp
        offset = len(tokens)
        tokens.extend(inp[plen:])
        positions.extend(range(plen, len(inp)))
        branches.extend([b] * (len(inp) - plen))
        gather.append([q if q < plen else offset + q - plen for q in reqs[m].scored_positions()])
    return Row(tokens, positions, branches, list(members), gather)


def pack_rows(
    reqs: Sequence[TokenRequest], *, share: bool = True, max_row: int = _MAX_ROW_TOKENS
) -> list[Row]:
    """Group requests by shared token prefix (not by string) and pack each group into a row.

    Requests are sorted by their token ids so that the choices of one document (or the contexts
    of one Winogrande item) are neighbours; a request joins the current group when it shares at
    least half of its tokens with the group's prefix and the row stays under ``max_row``.
    Returns rows longest first, which keeps padding small when rows are batched.
    """
    order = sorted(range(len(reqs)), key=lambda i: reqs[i].inp)
    rows: list[Row] = []
    if not share:
        rows = [_make_row(reqs, [i], share=False) for i in order]
    else:
        group: list[int] = []
        prefix: tuple[int, ...] = ()
        length = 0
        for i in order:
            inp = reqs[i].inp
            if group:
                p = _lcp(prefix, inp)
                new_length = length + len(inp) - p
                # Existing members' branches grow when the shared prefix shrinks.
                new_length += (len(prefix) - p) * (len(group) - 1)
                if p >= max(1, math.ceil(0.5 * min(len(inp), len(reqs[group[0]].inp)))) and (
                    new_length <= max(max_row, len(inp))
                ):
                    group.append(i)
                    prefix = prefix[:p]
                    length = new_length
                    continue
                rows.append(_make_row(reqs, group, share=True))
            group, prefix, length = [i], inp, len(inp)
        if group:
            rows.append(_make_row(reqs, group, share=True))
    rows.sort(key=lambda r: (-len(r), r.tokens))
    return rows


def batch_rows(
    rows: Sequence[Row], token_budget: int, max_rows: int | None = None, *, min_fill: float = 0.7
) -> list[list[int]]:
    """Split rows (longest first) into batches whose padded size stays within ``token_budget``.

    A batch also ends when the next row is shorter than ``min_fill`` of the batch's width, so
    padding stays under ~17% on hellaswag + openbookqa (0.85 gave 6% padding but was slower:
    smaller matmuls run less efficiently on CPU; measured).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i, row in enumerate(rows):
        w = max(width, len(row))
        full = w * (len(current) + 1) > token_budget or (max_rows and len(current) >= max_rows)
        if current and (full or len(row) < min_fill * width):
            batches.append(current)
            current, w = [], len(row)
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------------------------
# Prefix cache across genomes


class PrefixCache:
    """Hidden states after a kept-layer prefix, per batch, within a byte budget.

    Key: (batch key, kept base-layer prefix). The input to the view's layer ``m`` depends only on the
    batch and on ``kept[:m]``, so any genome that starts with the same kept layers can start there.
    Base-model prefixes (``range(m)``) at a grid of boundaries chosen to fit 3/4 of the budget are
    kept per batch layout (the newest layouts win when a run alternates request sets, e.g. screening
    and full fidelity); other prefixes (where genomes of a population diverge) live in an LRU tier
    with what is left.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.base: dict[tuple[str, int], torch.Tensor] = {}
        self.lru: OrderedDict[tuple[str, tuple[int, ...]], torch.Tensor] = OrderedDict()
        # layout -> (base grid, estimated bytes of its base tier)
        self.layouts: OrderedDict[str, tuple[frozenset[int], int]] = OrderedDict()
        # Kept-layer prefixes where the planned genomes of a generation branch apart.
        self.planned: frozenset[tuple[int, ...]] = frozenset()
        self.pinned: set[tuple[str, tuple[int, ...]]] = set()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _bytes(tensors: Iterator[torch.Tensor] | list[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def used_bytes(self) -> int:
        return self._bytes(list(self.base.values())) + self._bytes(list(self.lru.values()))

    def use_layout(self, layout: str, n_layers: int, bytes_per_boundary: int) -> None:
        """Register a batch layout and choose its base grid; evict the oldest layouts to fit."""
        if layout in self.layouts:
            self.layouts.move_to_end(layout)
            return
        base_budget = int(self.budget_bytes * 0.75)
        fit = base_budget // max(1, bytes_per_boundary)
        grid: frozenset[int] = frozenset()
        if fit > 0 and n_layers > 1:
            stride = max(1, math.ceil((n_layers - 1) / fit))
            grid = frozenset(range(stride, n_layers, stride))
        self.layouts[layout] = (grid, len(grid) * bytes_per_boundary)
        while sum(b for _, b in self.layouts.values()) > base_budget and len(self.layouts) > 1:
            old, _ = self.layouts.popitem(last=False)
            for key in [k for k in self.base if k[0].startswith(old + ":")]:
                del self.base[key]
            for path_key in [k for k in self.lru if k[0].startswith(old + ":")]:
                del self.lru[path_key]

    def plan(self, paths: Sequence[Sequence[int]]) -> None:
        """Announce the kept-layer paths about to be scored (one generation), so that the state
        where two of them branch apart is recorded by whichever comes first.

        In lexicographic order, the longest prefix a path shares with any other is the one it shares
        with a neighbour, so the branch points of the population's tree are the neighbours'
        longest common prefixes. Replaces the previous plan."""
        ordered = sorted({tuple(p) for p in paths})
        points = set()
        for a, b in itertools.pairwise(ordered):
            n = _lcp(a, b)
            if n > 0:
                points.add(a[:n])
        self.planned = frozenset(points)
        # The states these paths will start from (often a parent's, from an earlier generation)
        # are evicted last while this plan stands.
        self.pinned = {
            key
            for key in self.lru
            if any(len(p) > len(key[1]) and p[: len(key[1])] == key[1] for p in ordered)
        }

    @staticmethod
    def _base_len(kept: tuple[int, ...]) -> int:
        n = 0
        while n < len(kept) and kept[n] == n:
            n += 1
        return n

    def lookup(self, batch: str, kept: tuple[int, ...]) -> tuple[int, torch.Tensor | None]:
        """The longest cached prefix of ``kept`` for this batch: (view index to start at, state)."""
        best_m, best = 0, None
        for m in range(self._base_len(kept), 0, -1):
            t = self.base.get((batch, m))
            if t is not None:
                best_m, best = m, t
                break
        for m in range(len(kept), best_m, -1):
            key = (batch, kept[:m])
            t = self.lru.get(key)
            if t is not None:
                self.lru.move_to_end(key)
                best_m, best = m, t
                break
        if best is None:
            self.misses += 1
        else:
            self.hits += 1
        return best_m, best

    def wanted(self, batch: str, kept: tuple[int, ...], start: int) -> dict[int, str]:
        """View indices ``m`` (> start) whose state is worth recording, and into which tier."""
        grid = self.layouts.get(batch.split(":", 1)[0], (frozenset(), 0))[0]
        base_len = self._base_len(kept)
        out: dict[int, str] = {}
        for m in grid:
            if start < m <= base_len and m < len(kept) and (batch, m) not in self.base:
                out[m] = "base"
        # Divergence points: just before each gap in the kept list (where genomes branch off), and
        # where the planned paths of this generation branch apart.
        for m in range(start + 1, len(kept)):
            branch = kept[m] != kept[m - 1] + 1 or kept[:m] in self.planned
            if branch and m not in out and (batch, kept[:m]) not in self.lru:
                out[m] = "lru"
        return out

    def store(
        self, batch: str, kept: tuple[int, ...], m: int, tier: str, state: torch.Tensor
    ) -> None:
        if tier == "base":
            self.base[(batch, m)] = state
            return
        room = self.budget_bytes - self._bytes(list(self.base.values()))
        if state.numel() * state.element_size() > room:
            return
        self.lru[(batch, kept[:m])] = state
        lru_bytes = self._bytes(list(self.lru.values()))
        if lru_bytes <= room:
            return
        # Least recently used first, states the current plan will start from last.
        victims = [k for k in self.lru if k not in self.pinned]
        victims += [k for k in self.lru if k in self.pinned]
        for key in victims:
            if lru_bytes <= room:
                break
            old = self.lru.pop(key)
            self.pinned.discard(key)
            lru_bytes -= old.numel() * old.element_size()


class _Inject(nn.Module):
    """Stands in for view layer 0 on a cache hit: returns the cached state, ignores its input."""

    def __init__(self, state: torch.Tensor) -> None:
        super().__init__()
        self.state = state

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.state


class _Skip(nn.Module):
    """Stands in for view layers 1..m-1 on a cache hit: passes the hidden state through."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


# --------------------------------------------------------------------------------------------
# The LM


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class ScoreStats:
    """What the last ``loglikelihood`` call pushed through the model (for the benchmark)."""

    requests: int = 0
    rows: int = 0
    batches: int = 0
    tokens: int = 0  # real (non-padding) token positions per forward
    layer_tokens: int = 0  # real token positions x decoder layers actually run
    padded_tokens: int = 0
    head_positions: int = 0
    cache_hits: int = 0
    layers_skipped: int = 0
    seconds: float = 0.0


def _multiple_choice_only(kind: str) -> NotImplementedError:
    """What FastLM says when lm-eval asks it for a request type other than loglikelihood."""
    return NotImplementedError(
        "FastLM scores multiple-choice tasks only (loglikelihood); use --scorer hflm for "
        f"{kind} tasks"
    )


def _last_hidden(out: Any) -> torch.Tensor:
    """A decoder's last hidden state, from its output object or its plain tuple."""
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


class FastLM(TemplateLM):
    """lm-eval ``LM`` that scores multiple-choice requests on an in-memory (layer-viewed) model."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        view: LayerView | None = None,
        prefix_cache: bool = True,
        prefix_cache_mb: float = 4096,
        batch_size: int | str = "auto",
        token_budget: int | None = None,
        max_length: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.view = view
        self.location: LayerLocation = view.location if view is not None else locate_layers(model)
        self.n_base_layers = (
            view.n_layers
            if view is not None
            else len(getattr(self.location.parent, self.location.attr))
        )
        self.config = model.config
        self._device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.should_stop = should_stop
        self.max_rows = None if batch_size == "auto" else int(batch_size)
        self.token_budget = int(token_budget) if token_budget else self._auto_budget()
        self.merge_width = _MERGE_WIDTH
        self.cache = PrefixCache(self._cache_budget(prefix_cache_mb)) if prefix_cache else None
        self._max_length = max_length
        self._layout = ""
        self._encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self.stats = ScoreStats()
        get_decoder = getattr(model, "get_decoder", None)
        self.decoder: nn.Module = get_decoder() if callable(get_decoder) else model
        head = getattr(model, "get_output_embeddings")()  # noqa: B009 - nn.Module typing
        if not isinstance(head, nn.Module):
            raise ValueError("the model has no output embeddings (LM head) to score with")
        self.head: nn.Module = head
        self.mask_types: tuple[str, ...] | None = self._mask_types()
        self.tree_ok, self.head_ok = self._probe()
        logger.info(
            "FastLM: tree packing %s, head-only %s, token budget %d, prefix cache %s",
            "on" if self.tree_ok else "off (plain rows)",
            "on" if self.head_ok else "off (full logits)",
            self.token_budget,
            f"{prefix_cache_mb:g} MB" if prefix_cache else "off",
        )

    def plan(self, paths: Sequence[Sequence[int]]) -> None:
        """The kept-layer paths of the genomes about to be scored: see ``PrefixCache.plan``."""
        if self.cache is not None:
            self.cache.plan(paths)

    def sequence_logits(self, ids: torch.Tensor, key: str) -> Iterator[tuple[int, torch.Tensor]]:
        """Logits of the current layer view on plain causal sequences, for scorers that read whole
        next-token distributions (the KL fitness) rather than answer lm-eval requests.

        ``ids`` is a LongTensor ``[N, L]`` without padding. Yields ``(start, logits)`` for chunks of
        the ``N * L`` positions in row-major order: ``logits`` is ``[chunk, vocab]`` in the model's
        dtype for positions ``start .. start + chunk``. Sequences are batched by the token budget;
        hidden states after kept-layer prefixes go through the same ``PrefixCache`` as task
        scoring, under ``key`` (it must name the content of ``ids``, e.g. a calibration
        fingerprint). ``should_stop`` is polled between batches. Out of memory in a forward, the
        token budget halves and that batch is redone, so a position may be yielded twice (the
        later chunk is the one to keep)."""
        n_seq, seq_len = ids.shape
        kept = self.view.kept if self.view is not None else tuple(range(self.n_base_layers))
        self.stats = ScoreStats(requests=n_seq, rows=n_seq)
        t0 = time.perf_counter()
        first = 0
        while first < n_seq:
            per_batch = max(1, self.token_budget // seq_len)
            layout = f"seq-{key}-{per_batch}"
            if self.cache is not None:
                per_boundary = n_seq * seq_len * self._hidden_size() * self.dtype.itemsize
                self.cache.use_layout(layout, self.n_base_layers, per_boundary)
            try:
                for s in range(first, n_seq, per_batch):
                    if self.should_stop is not None and self.should_stop():
                        raise StopRequested("stop requested")
                    batch = ids[s : s + per_batch].to(self.device)
                    yield from self._sequence_batch(batch, f"{layout}:{s}", kept, s * seq_len)
                    first = s + len(batch)
            except Exception as exc:
                if not _is_oom(exc) or per_batch == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.token_budget = max(seq_len, self.token_budget // 2)
                logger.warning(
                    "out of memory on a batch of sequences (%s); token budget halved to %d",
                    type(exc).__name__,
                    self.token_budget,
                )
        self.stats.seconds = time.perf_counter() - t0

    def _sequence_batch(
        self, ids: torch.Tensor, batch_key: str, kept: tuple[int, ...], offset: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        with self._through_cache(batch_key, kept) as start:
            # An explicit all-ones mask: EOS separators inside the text are not padding (without
            # it transformers warns that they might be).
            mask = torch.ones_like(ids)
            if self.head_ok:
                out = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)
                hidden = _last_hidden(out)
                hidden = hidden.reshape(-1, hidden.shape[-1])
            else:
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                logits = logits.reshape(-1, logits.shape[-1])
        st = self.stats
        st.batches += 1
        st.tokens += ids.numel()
        st.padded_tokens += ids.numel()
        st.layer_tokens += ids.numel() * (len(kept) - start)
        st.head_positions += ids.numel()
        st.cache_hits += 1 if start else 0
        st.layers_skipped += start
        for c in range(0, ids.numel(), _HEAD_CHUNK):
            if self.head_ok:
                with torch.inference_mode():
                    chunk = self._head(hidden[c : c + _HEAD_CHUNK])
            else:
                chunk = logits[c : c + _HEAD_CHUNK]
            yield offset + c, chunk

    # ---- lm-eval plumbing (mirrors HFLM) --------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        from lm_eval.models.utils import resolve_max_length

        return resolve_max_length(self.config, self.tokenizer, default=_DEFAULT_MAX_LENGTH)

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        """HFLM.tok_encode with ``add_bos_token=None``: the tokenizer's own special-token default,
        except that a string already starting with the BOS text gets no second BOS."""
        special: dict[str, bool] = {}
        if add_special_tokens is not None:
            special["add_special_tokens"] = add_special_tokens
        elif string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def loglikelihood(
        self, requests: list[Any], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """TemplateLM.loglikelihood with a per-run tokenisation cache (later genomes pay nothing)."""
        new_reqs = []
        for req in requests:
            key = tuple(req.args)
            enc = self._encoded.get(key)
            if enc is None:
                enc = self._encode(*key)
                self._encoded[key] = enc
            new_reqs.append((key, enc[0], enc[1]))
        return self._loglikelihood_tokens(new_reqs, disable_tqdm=disable_tqdm)

    def _encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if self.prefix_token_id != cont[0]:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        return self._encode_pair(context, continuation)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise _multiple_choice_only("perplexity-style")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        raise _multiple_choice_only("generative")

    # ---- scoring ---------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **_: Any
    ) -> list[tuple[float, bool]]:
        t0 = time.perf_counter()
        L = self.max_length
        uniq: dict[TokenRequest, int] = {}
        index: list[int] = []
        for _key, ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("a loglikelihood request needs a context and a continuation token")
            if len(cont) > L:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds max length {L}")
            tr = TokenRequest(tuple((ctx + cont)[-(L + 1) :][:-1]), tuple(cont))
            index.append(uniq.setdefault(tr, len(uniq)))
        reqs = list(uniq)
        self.stats = ScoreStats(requests=len(requests))
        results = self.score(reqs)
        self.stats.seconds = time.perf_counter() - t0
        return [results[i] for i in index]

    def score(self, reqs: Sequence[TokenRequest]) -> list[tuple[float, bool]]:
        """Score tokenised requests on the current layer view: (sum log p(cont), is_greedy).

        Out of memory, the batch shrinks (token budget, then rows per batch, then the width up to
        which short rows are merged) and the unscored rows are retried; a lone unmerged row that
        does not fit is raised."""
        groups = pack_rows(reqs, share=self.tree_ok)
        self.stats.rows = len(groups)
        out: list[tuple[float, bool] | None] = [None] * len(reqs)
        kept = self.view.kept if self.view is not None else tuple(range(self.n_base_layers))
        while True:
            pending = [g for g in groups if out[g.members[0]] is None]
            if not pending:
                break
            rows = merge_rows(pending, self.merge_width) if self.tree_ok else pending
            self._score_rows(rows, reqs, kept, out)
        if any(r is None for r in out):
            raise RuntimeError("internal error: some requests were not scored")
        return out  # type: ignore[return-value]

    def _score_rows(
        self,
        rows: Sequence[Row],
        reqs: Sequence[TokenRequest],
        kept: tuple[int, ...],
        out: list[tuple[float, bool] | None],
    ) -> None:
        """Score ``rows`` in batches. Out of memory, a smaller token budget re-batches the rows
        left here; a narrower merge width returns early, and ``score`` re-merges what is left."""
        done = 0
        while done < len(rows):
            first = done
            batches = batch_rows(rows[first:], self.token_budget, self.max_rows)
            self._reset_cache_layout(rows, first, batches)
            try:
                for batch in batches:
                    if self.should_stop is not None and self.should_stop():
                        raise StopRequested("stop requested")
                    picked = [rows[first + i] for i in batch]
                    self._run_batch(picked, reqs, kept, out)
                    done += len(batch)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                widest = len(rows[done])
                if self.token_budget > widest or (self.max_rows and self.max_rows > 1):
                    self.token_budget = max(widest, self.token_budget // 2)
                    if self.max_rows and self.token_budget == widest:
                        self.max_rows = max(1, self.max_rows // 2)
                    logger.warning(
                        "out of memory on a batch (%s); token budget halved to %d, retrying",
                        type(exc).__name__,
                        self.token_budget,
                    )
                elif rows[done].segments:
                    self.merge_width = max(1, min(self.merge_width, widest) // 2)
                    logger.warning(
                        "out of memory on one row (%s); rows now merged up to %d tokens, retrying",
                        type(exc).__name__,
                        self.merge_width,
                    )
                    return  # ``score`` re-merges what is left at the new width
                else:
                    raise

    def _reset_cache_layout(self, rows: Sequence[Row], done: int, batches: list[list[int]]) -> None:
        if self.cache is None:
            return
        digest = hashlib.blake2b(digest_size=16)
        for b in batches:
            digest.update(repr([tuple(rows[done + i].tokens) for i in b]).encode())
        per_boundary = (
            sum(max(len(rows[done + i]) for i in b) * len(b) for b in batches)
            * self._hidden_size()
            * torch.finfo(self.dtype).bits
            // 8
        )
        self._layout = digest.hexdigest()
        self.cache.use_layout(self._layout, self.n_base_layers, per_boundary)

    def _hidden_size(self) -> int:
        for attr in ("hidden_size", "n_embd", "d_model"):
            value = getattr(self.config, attr, None)
            if isinstance(value, int):
                return value
        return 4096

    def _tensors(self, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        # Tree ids: segment * _SEGMENT + (branch + 1); 0 within a segment is its shared prefix.
        # Padding is -1: segment -1, seen by no real token.
        br = torch.full((len(rows), width), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r)
            ids[i, :n] = torch.tensor(r.tokens)
            pos[i, :n] = torch.tensor(r.positions)
            tree = torch.tensor(r.branches) + 1
            if r.segments:
                tree += torch.tensor(r.segments) * _SEGMENT
            br[i, :n] = tree
        return ids.to(self.device), pos.to(self.device), br.to(self.device)

    def _masks(self, pos: torch.Tensor, br: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Tree-shaped additive masks: a token sees earlier tokens of its segment's shared prefix
        and of its own branch. Sliding-window layers also cut by position distance (positions
        restart per branch, so the distance is the one the request has on its own)."""
        width = pos.shape[1]
        idx = torch.arange(width, device=pos.device)
        causal = idx[None, :, None] >= idx[None, None, :]
        seg, branch = br // _SEGMENT, br % _SEGMENT
        same_seg = seg[:, None, :] == seg[:, :, None]
        visible = (branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None])
        tree = causal & same_seg & visible
        neg = torch.finfo(self.dtype).min

        def additive(allowed: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=pos.device)
            return mask.masked_fill_(~allowed, neg)[:, None, :, :]

        if not self.mask_types:
            return additive(tree)
        out: dict[str, torch.Tensor] = {}
        for kind in self.mask_types:
            if kind == "sliding_attention":
                window = int(getattr(self.config, "sliding_window"))  # noqa: B009
                near = (pos[:, :, None] - pos[:, None, :]) < window
                out[kind] = additive(tree & near)
            else:
                out[kind] = additive(tree)
        return out

    def _mask_types(self) -> tuple[str, ...] | None:
        types = getattr(self.config, "layer_types", None)
        if not types:
            return None
        return tuple(sorted(set(types)))

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        scale = getattr(self.model, "logit_scale", None)
        if isinstance(scale, int | float):
            logits = logits * scale
        div = getattr(self.config, "logits_scaling", None)
        if isinstance(div, int | float) and div != 1:
            logits = logits / div
        return logits

    @contextlib.contextmanager
    def _through_cache(self, batch_key: str, kept: tuple[int, ...]) -> Iterator[int]:
        """Run one batch's forward (inside the block, under inference mode) from the deepest layer
        state the prefix cache holds for it, yielding that layer (0 on a miss or with no cache);
        after the forward, store the layer states the cache wants. An error stores nothing."""
        start, state, wanted = 0, None, {}
        if self.cache is not None:
            start, state = self.cache.lookup(batch_key, kept)
            wanted = self.cache.wanted(batch_key, kept, start)
        recorded: dict[int, torch.Tensor] = {}
        with (
            torch.inference_mode(),
            self._layers_from(start, state),
            self._record(wanted, recorded),
        ):
            yield start
        if self.cache is not None:
            for m, tensor in recorded.items():
                self.cache.store(batch_key, kept, m, wanted[m], tensor)

    @contextlib.contextmanager
    def _layers_from(self, m: int, state: torch.Tensor | None) -> Iterator[None]:
        """Run the current view from its layer ``m`` on, fed ``state`` (a prefix-cache hit)."""
        if state is None or m == 0:
            yield
            return
        parent, attr = self.location.parent, self.location.attr
        current: nn.ModuleList = getattr(parent, attr)
        stand_ins = [_Inject(state)] + [_Skip() for _ in range(m - 1)]
        setattr(parent, attr, nn.ModuleList(stand_ins + list(current[m:])))
        try:
            yield
        finally:
            setattr(parent, attr, current)

    @contextlib.contextmanager
    def _record(self, wanted: dict[int, str], sink: dict[int, torch.Tensor]) -> Iterator[None]:
        """Keep the output of view layer ``m - 1`` (= the input of layer ``m``) for each wanted m."""
        current: nn.ModuleList = getattr(self.location.parent, self.location.attr)
        handles = []
        for m in wanted:

            def hook(_mod: nn.Module, _args: Any, output: Any, m: int = m) -> None:
                sink[m] = (output[0] if isinstance(output, tuple) else output).detach()

            handles.append(current[m - 1].register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _inputs(self, ids: torch.Tensor, pos: torch.Tensor, br: torch.Tensor) -> dict[str, Any]:
        """A batch's model inputs: merged rows need their tree masks and positions (``tree_ok``);
        otherwise the ids alone."""
        if self.tree_ok:
            return {
                "input_ids": ids,
                "attention_mask": self._masks(pos, br),
                "position_ids": pos,
                "use_cache": False,
            }
        return {"input_ids": ids, "use_cache": False}

    def _forward_hidden(
        self, ids: torch.Tensor, pos: torch.Tensor, br: torch.Tensor
    ) -> torch.Tensor:
        return _last_hidden(self.decoder(**self._inputs(ids, pos, br)))

    def _forward_logits(
        self, ids: torch.Tensor, pos: torch.Tensor, br: torch.Tensor
    ) -> torch.Tensor:
        return self.model(**self._inputs(ids, pos, br)).logits

    def _run_batch(
        self,
        rows: Sequence[Row],
        reqs: Sequence[TokenRequest],
        kept: tuple[int, ...],
        out: list[tuple[float, bool] | None],
    ) -> None:
        ids, pos, br = self._tensors(rows)
        n_real = sum(len(r) for r in rows)
        rows_idx: list[int] = []
        cols_idx: list[int] = []
        for i, r in enumerate(rows):
            for g in r.gather:
                rows_idx.extend([i] * len(g))
                cols_idx.extend(g)
        ri = torch.tensor(rows_idx, device=self.device)
        ci = torch.tensor(cols_idx, device=self.device)
        targets = torch.tensor(
            [t for r in rows for m in r.members for t in reqs[m].cont], device=self.device
        )
        batch_key = ""
        if self.cache is not None:
            content = hashlib.blake2b(digest_size=16)
            for r in rows:
                content.update(repr((r.tokens, r.positions, r.branches, r.segments)).encode())
            batch_key = f"{self._layout}:{content.hexdigest()}"
        with self._through_cache(batch_key, kept) as start:
            if self.head_ok:
                hidden = self._forward_hidden(ids, pos, br)[ri, ci]
                lp_parts, greedy_parts = [], []
                for s in range(0, hidden.shape[0], _HEAD_CHUNK):
                    # float32 log_softmax whatever the model's dtype (a no-op in float32, where
                    # HFLM is matched exactly): in bfloat16 it keeps rounding out of the reduction.
                    logits = self._head(hidden[s : s + _HEAD_CHUNK]).float()
                    logp = torch.log_softmax(logits, dim=-1)
                    tgt = targets[s : s + _HEAD_CHUNK]
                    lp_parts.append(logp.gather(1, tgt[:, None])[:, 0])
                    greedy_parts.append(logp.argmax(dim=-1) == tgt)
                lp = torch.cat(lp_parts)
                greedy = torch.cat(greedy_parts)
            else:
                logits = self._forward_logits(ids, pos, br)[ri, ci].float()
                logp = torch.log_softmax(logits, dim=-1)
                lp = logp.gather(1, targets[:, None])[:, 0]
                greedy = logp.argmax(dim=-1) == targets
        lp_list = lp.cpu().tolist()
        greedy_list = greedy.cpu().tolist()
        k = 0
        for r in rows:
            for m in r.members:
                n = len(reqs[m].cont)
                # float32 terms, summed in Python's double precision
                out[m] = (float(sum(lp_list[k : k + n])), all(greedy_list[k : k + n]))
                k += n
        st = self.stats
        st.batches += 1
        st.tokens += n_real
        st.layer_tokens += n_real * (len(kept) - start)
        st.padded_tokens += ids.numel()
        st.head_positions += len(rows_idx)
        st.cache_hits += 1 if start else 0
        st.layers_skipped += start

    # ---- start-up --------------------------------------------------------------------------

    def _cache_budget(self, mb: float) -> int:
        """The prefix cache's byte budget: ``mb``, but at most a quarter of the memory free now
        (GPU memory on a GPU, RAM on the CPU), so the cache cannot starve the forward passes."""
        wanted = int(mb * 2**20)
        free: int | None = None
        if self._device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self._device)
        elif hasattr(os, "sysconf"):
            with contextlib.suppress(ValueError, OSError):
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if free is not None and free // 4 < wanted:
            logger.info(
                "prefix cache: %d MB asked, %d MB used (a quarter of the free memory)",
                wanted >> 20,
                (free // 4) >> 20,
            )
            return free // 4
        return wanted

    def _auto_budget(self) -> int:
        """Tokens per forward: a fixed budget on CPU, a share of free memory on a GPU."""
        if self.device.type != "cuda":
            return _CPU_TOKEN_BUDGET
        free, _total = torch.cuda.mem_get_info(self.device)
        hidden = self._hidden_size()
        inter = int(getattr(self.config, "intermediate_size", 4 * hidden) or 4 * hidden)
        elem = torch.finfo(self.dtype).bits // 8
        per_token = elem * (8 * hidden + 3 * inter) + 4 * _MAX_ROW_TOKENS
        return int(max(_MAX_ROW_TOKENS, min(1 << 17, 0.4 * free / per_token)))

    def _probe(self) -> tuple[bool, bool]:
        """Check on a tiny input that tree masks and the head-only path reproduce the model's own
        forward; fall back (plain rows / full logits) for whatever does not."""
        vocab = int(getattr(self.config, "vocab_size", 0) or 2)
        g = torch.Generator().manual_seed(0)
        base = torch.randint(0, vocab, (12,), generator=g).tolist()
        a = tuple(base[:9] + [base[9]])
        b = tuple(base[:9] + base[10:12])
        c = tuple([(base[0] + 1) % vocab] + base[3:8])  # another document: its own segment
        reqs = [TokenRequest(a, a[-3:]), TokenRequest(b, b[-3:]), TokenRequest(c, c[-2:])]
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2

        def reference(r: TokenRequest) -> torch.Tensor:
            ids = torch.tensor([r.inp], device=self.device)
            logp = torch.log_softmax(
                self.model(input_ids=ids, use_cache=False).logits[0].float(), -1
            )
            q = torch.tensor(list(r.scored_positions()), device=self.device)
            return logp[q, torch.tensor(r.cont, device=self.device)]

        def ours(tree: bool, head: bool) -> list[torch.Tensor]:
            rows = pack_rows(reqs, share=tree)
            if tree:  # both documents side by side in one row: checks segments too
                rows = merge_rows(rows, sum(len(r) for r in rows))
            ids, pos, br = self._tensors(rows)
            self.tree_ok, self.head_ok = tree, head
            if head:
                hidden = self._forward_hidden(ids, pos, br)
                logits = self._head(hidden)
            else:
                logits = self._forward_logits(ids, pos, br)
            logp = torch.log_softmax(logits.float(), -1)
            res: list[torch.Tensor | None] = [None] * len(reqs)
            for i, r in enumerate(rows):
                for m, gat in zip(r.members, r.gather, strict=True):
                    tgt = torch.tensor(reqs[m].cont, device=self.device)
                    res[m] = logp[i, torch.tensor(gat, device=self.device), tgt]
            return res  # type: ignore[return-value]

        def close(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
            return all(
                bool(torch.allclose(p, q, atol=tol, rtol=tol)) for p, q in zip(x, y, strict=True)
            )

        with torch.inference_mode():
            want = [reference(r) for r in reqs]
            head_ok = False
            if self.head is not None:
                with contextlib.suppress(Exception):
                    head_ok = close(ours(False, True), want)
            tree_ok = False
            with contextlib.suppress(Exception):
                tree_ok = close(ours(True, head_ok), want)
        if not tree_ok:
            logger.warning(
                "%s: tree-masked packing not reproducible; using plain rows",
                type(self.model).__name__,
            )
        if not head_ok:
            logger.warning(
                "%s: head-only path not reproducible; using full logits", type(self.model).__name__
            )
        return tree_ok, head_ok


# --------------------------------------------------------------------------------------------
# Factory


def make_lm(
    loaded: Any,
    kind: str = "fast",
    *,
    prefix_cache: bool = True,
    prefix_cache_mb: float = 4096,
    batch_size: int | str = "auto",
    should_stop: Callable[[], bool] | None = None,
    token_budget: int | None = None,
) -> Any:
    """The lm-eval ``LM`` for a loaded model: ``"fast"`` (FastLM) or ``"hflm"`` (lm-eval's HFLM on
    the same in-memory model, the reference path). Both follow whatever layer view is applied."""
    if kind == "fast":
        return FastLM(
            loaded.model,
            loaded.tokenizer,
            view=getattr(loaded, "view", None),
            prefix_cache=prefix_cache,
            prefix_cache_mb=prefix_cache_mb,
            batch_size=batch_size,
            token_budget=token_budget,
            should_stop=should_stop,
        )
    if kind == "hflm":
        return _make_hflm(loaded, batch_size, should_stop)
    raise ConfigError(f"unknown scorer {kind!r}: use 'fast' or 'hflm'")


def _make_hflm(loaded: Any, batch_size: int | str, should_stop: Callable[[], bool] | None) -> Any:
    from lm_eval.models.huggingface import HFLM

    class _StoppableHFLM(HFLM):
        """HFLM that polls ``should_stop`` before every model call (i.e. between batches)."""

        def _model_call(self, inps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if should_stop is not None and should_stop():
                raise StopRequested("stop requested")
            return super()._model_call(inps, *args, **kwargs)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = True) -> list[Any]:
            # lm-eval draws two progress bars per call: one search would flood engine.log.
            return super().loglikelihood(requests, disable_tqdm=True)

    model = loaded.model
    device = next(model.parameters()).device
    if batch_size == "auto" and device.type != "cuda":
        # HFLM's auto detection probes max_length-wide batches: far too slow and big on a CPU.
        batch_size = 16
    return _StoppableHFLM(pretrained=model, tokenizer=loaded.tokenizer, batch_size=batch_size)
