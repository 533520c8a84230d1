"""What a genome drops: whole decoder layers, or attention and MLP sub-blocks (``granularity``).

A genome is always a sorted list of distinct *unit* indices. With ``granularity = "layer"`` a unit is
a decoder layer (``0 .. n_layers - 1``), as in the original method. With ``"sublayer"`` every layer
``i`` has two units: ``2 i``, its attention sub-block, and ``2 i + 1``, its MLP sub-block. Dropping a
sub-block skips its residual branch (the residual stream passes through unchanged); dropping both
units of a layer is dropping the layer.

The scorer, the memo and the prefix cache see a *path*: the view's layers in order, one code each.
Code ``i`` is layer ``i`` whole, ``i + n_layers`` is layer ``i`` with only its attention (its MLP
dropped) and ``i + 2 n_layers`` is layer ``i`` with only its MLP. A layer whose two units are both
dropped is not in the path. So a genome of whole layers has the same path in both granularities,
and therefore the same scores and memo entries.

``GenomeSpace`` is where the search draws, checks, repairs and mutates genomes: one or two pools of
droppable units (``attention_drops`` fixes how many of a sub-block genome's units are attention),
each with the number of units a genome takes from it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ATTENTION",
    "GRANULARITIES",
    "MLP",
    "SUBLAYER_FAMILIES",
    "GenomeSpace",
    "decode_path",
    "describe",
    "kept_path",
    "kv_cache",
    "mut_swap",
    "split",
    "swap_count_weights",
    "to_units",
    "units_per_layer",
    "whole_layers",
]

GRANULARITIES = ("layer", "sublayer")
# Families whose decoder layer adds ``self_attn``'s and ``mlp``'s outputs to the residual stream
# (what a skipped branch relies on) and that the exported modeling file covers.
SUBLAYER_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
ATTENTION, MLP = 0, 1  # a sub-block unit's kind: unit % 2
FULL, ATTENTION_ONLY, MLP_ONLY = 0, 1, 2  # a path code's variant: code // n_layers


def family_error(model_type: str | None) -> str | None:
    """Why a model family cannot be pruned by sub-blocks (one line naming the fix), or None."""
    if model_type is None or model_type in SUBLAYER_FAMILIES:
        return None
    return (
        f"--granularity sublayer supports the {', '.join(SUBLAYER_FAMILIES)} families, not "
        f"{model_type}: use --granularity layer"
    )


def units_per_layer(granularity: str) -> int:
    return 2 if granularity == "sublayer" else 1


def split(dropped: Iterable[int], granularity: str) -> tuple[list[int], list[int], list[int]]:
    """(whole layers, layers whose attention alone is dropped, layers whose MLP alone is dropped)."""
    units = set(dropped)
    if granularity != "sublayer":
        return sorted(units), [], []
    layers = sorted({u // 2 for u in units})
    whole = [i for i in layers if 2 * i in units and 2 * i + 1 in units]
    attention = [i for i in layers if 2 * i in units and 2 * i + 1 not in units]
    mlp = [i for i in layers if 2 * i + 1 in units and 2 * i not in units]
    return whole, attention, mlp


def whole_layers(dropped: Iterable[int], granularity: str) -> list[int] | None:
    """The dropped layers when every drop is a whole layer (a MergeKit export), else None."""
    whole, attention, mlp = split(dropped, granularity)
    return None if attention or mlp else whole


def to_units(layers: Iterable[int], granularity: str) -> list[int]:
    """The units of whole ``layers`` in this granularity."""
    if granularity != "sublayer":
        return sorted(set(layers))
    return sorted(u for i in set(layers) for u in (2 * i, 2 * i + 1))


def kept_path(dropped: Iterable[int], n_layers: int, granularity: str) -> list[int]:
    """The path (see the module doc) of a genome: what the scorer runs, in order."""
    units = set(dropped)
    if granularity != "sublayer":
        return [i for i in range(n_layers) if i not in units]
    path = []
    for i in range(n_layers):
        attn, mlp = 2 * i not in units, 2 * i + 1 not in units
        if attn and mlp:
            path.append(i)
        elif attn:
            path.append(i + n_layers * ATTENTION_ONLY)
        elif mlp:
            path.append(i + n_layers * MLP_ONLY)
    return path


def decode_path(path: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    """(base layer, variant) per path code, checked: distinct layers in increasing order."""
    out: list[tuple[int, int]] = []
    for code in path:
        code = int(code)
        layer, variant = code % n_layers, code // n_layers
        if code < 0 or variant > MLP_ONLY:
            raise ValueError(f"path code {code} is not a layer of a {n_layers}-layer model")
        if out and layer <= out[-1][0]:
            raise ValueError(f"path {list(path)} does not name distinct layers in order")
        out.append((layer, variant))
    return out


def kv_cache(path: Sequence[int], n_layers: int) -> dict[str, int | float]:
    """The KV cache a path keeps against the base model's: every attention sub-block holds keys
    and values for each token, so the cache shrinks by the share of attention removed (whole
    layers dropped, or attention sub-blocks)."""
    attention = sum(1 for _, variant in decode_path(path, n_layers) if variant != MLP_ONLY)
    return {
        "layers": n_layers,
        "attention_kept": attention,
        "reduction": round(1.0 - attention / n_layers, 6),
    }


def describe(dropped: Iterable[int], granularity: str) -> str:
    """A genome as a person reads it: ``layers 3, 9 · attn 12, 14 · mlp 20`` (sub-blocks), or
    ``layers 3, 9`` (whole layers); ``nothing`` for the base model."""
    whole, attention, mlp = split(dropped, granularity)
    parts = []
    if whole:
        parts.append(("layer " if len(whole) == 1 else "layers ") + ", ".join(map(str, whole)))
    if attention:
        parts.append("attn " + ", ".join(map(str, attention)))
    if mlp:
        parts.append("mlp " + ", ".join(map(str, mlp)))
    return " · ".join(parts) if parts else "nothing"


def swap_count_weights(max_swaps: int) -> list[float]:
    """P(s swaps) for s = 1..max_swaps, proportional to 1/2^s: fewer swaps more likely."""
    if max_swaps < 1:
        raise ValueError(f"max_swaps must be at least 1, got {max_swaps}")
    raw = [0.5**s for s in range(1, max_swaps + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def mut_swap(
    genome: Sequence[int],
    n_layers: int,
    protect: int,
    rng: random.Random,
    max_swaps: int = 3,
) -> list[int]:
    """Swap 1..``max_swaps`` dropped layers with kept droppable ones; return the sorted child.

    The number of swaps s is drawn with P(s) proportional to 1/2^s and capped by the number of
    dropped and of kept droppable layers, so a genome that drops every droppable layer but one
    still mutates by one swap. Every draw comes from ``rng`` over sorted lists, so a seeded run
    repeats exactly. ``genome`` must be valid (k distinct layers in [protect, n_layers)).
    """
    dropped = sorted(set(genome))
    if len(dropped) != len(genome) or any(not protect <= g < n_layers for g in dropped):
        raise ValueError(
            f"mut_swap needs distinct layers in [{protect}, {n_layers}), got {list(genome)}"
        )
    drop_set = set(dropped)
    kept = [i for i in range(protect, n_layers) if i not in drop_set]
    cap = min(max_swaps, len(dropped), len(kept))
    if cap == 0:  # nothing dropped, or every droppable layer dropped: no swap keeps k
        return dropped
    weights = swap_count_weights(max_swaps)[:cap]
    swaps = rng.choices(range(1, cap + 1), weights=weights)[0]
    out = rng.sample(dropped, swaps)
    into = rng.sample(kept, swaps)
    child = (drop_set - set(out)) | set(into)
    return sorted(child)


@dataclass(frozen=True)
class GenomeSpace:
    """The genomes a run may evaluate: ``k`` distinct droppable units, taken ``counts[j]`` from
    ``pools[j]`` (one pool, or attention and MLP pools when ``attention_drops`` is fixed)."""

    n_layers: int
    protect: int
    granularity: str = "layer"
    attention_drops: int | None = None

    @property
    def n_units(self) -> int:
        return self.n_layers * units_per_layer(self.granularity)

    @property
    def first_unit(self) -> int:
        """Units below this belong to the protected leading layers."""
        return self.protect * units_per_layer(self.granularity)

    @property
    def droppable(self) -> list[int]:
        return list(range(self.first_unit, self.n_units))

    def pools(self, k: int) -> list[tuple[list[int], int]]:
        """(pool, how many of the genome's ``k`` units come from it)."""
        allowed = self.droppable
        if self.granularity != "sublayer" or self.attention_drops is None:
            return [(allowed, k)]
        a = self.attention_drops
        return [
            ([u for u in allowed if u % 2 == ATTENTION], a),
            ([u for u in allowed if u % 2 == MLP], k - a),
        ]

    def kept(self, dropped: Iterable[int]) -> list[int]:
        return kept_path(dropped, self.n_layers, self.granularity)

    def valid(self, genome: Sequence[int], k: int) -> bool:
        if len(genome) != k or len(set(genome)) != k:
            return False
        chosen = set(genome)
        return all(len(chosen & set(pool)) == n for pool, n in self.pools(k)) and chosen <= set(
            self.droppable
        )

    def draw(self, k: int, rng: random.Random) -> list[int]:
        out: list[int] = []
        for pool, n in self.pools(k):
            out.extend(rng.sample(pool, n))
        return sorted(out)

    def repair(self, genome: Sequence[int], k: int, rng: random.Random) -> list[int]:
        """The nearest valid genome: repeats, protected units and a pool's excess are dropped (in
        genome order), then each pool is filled from its unused units, drawn from sorted lists
        under ``rng`` (deterministic)."""
        out: list[int] = []
        for pool, n in self.pools(k):
            members = set(pool)
            mine: list[int] = []
            for g in genome:
                if g in members and g not in mine and len(mine) < n:
                    mine.append(g)
            if len(mine) < n:
                unused = [u for u in pool if u not in set(mine)]
                mine.extend(rng.sample(unused, n - len(mine)))
            out.extend(mine)
        return sorted(out)

    def swap(self, genome: Sequence[int], rng: random.Random, max_swaps: int = 3) -> list[int]:
        """EvoPress's swap mutation within one pool (chosen at random among those where a swap is
        possible): the child keeps every pool's count."""
        k = len(genome)
        movable = [
            (pool, n) for pool, n in self.pools(k) if 0 < len(set(genome) & set(pool)) < len(pool)
        ]
        if not movable:
            return sorted(genome)
        pool, _ = movable[0] if len(movable) == 1 else rng.choice(movable)
        index = {u: j for j, u in enumerate(pool)}
        inside = [index[g] for g in genome if g in index]
        moved = mut_swap(inside, len(pool), 0, rng, max_swaps)
        rest = [g for g in genome if g not in index]
        return sorted(rest + [pool[j] for j in moved])

    def check(self, k: int) -> str | None:
        """Why ``k`` units cannot be dropped (one line naming the fix), or None."""
        unit = "sub-blocks" if self.granularity == "sublayer" else "layers"
        droppable = len(self.droppable)
        if droppable < 1:
            return f"--protect {self.protect} leaves no droppable {unit}: lower --protect"
        if k >= droppable:
            return (
                f"--prune {k} must be below the {droppable} droppable {unit}: "
                f"use --prune 1..{droppable - 1}"
            )
        for pool, n in self.pools(k):
            if n < 0 or n > len(pool):
                return (
                    f"--attention-drops {self.attention_drops} does not fit --prune {k} "
                    f"({len(pool)} droppable of that kind): use --attention-drops 0..{min(k, len(pool))}"
                )
        return None
