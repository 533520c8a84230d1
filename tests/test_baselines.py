"""One-shot baselines on real tiny models against a hand-written computation.

The reference path is independent of engine/baselines.py: layer inputs come from the model's own
``output_hidden_states`` (entry j is what layer j receives), the last layer's output from a plain
forward hook (the last ``hidden_states`` entry is after the final norm), cosines are computed per
sequence and token in Python loops, and the picks by brute force over every allowed genome.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny

from gaprune_tui.engine.baselines import (
    BASELINE_NAMES,
    Baseline,
    LayerSignals,
    baselines,
    layer_signals,
)
from gaprune_tui.engine.model import LoadedModel, load_model
from gaprune_tui.engine.search import is_valid

N_LAYERS = 8
SEQS, LENGTH = 5, 12


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    family = request.param
    path = build_tiny(family, tmp_path_factory.mktemp("tiny") / family, n_layers=N_LAYERS, seed=3)
    return load_model(str(path), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def input_ids(loaded: LoadedModel) -> torch.Tensor:
    # token 0 is the pad token, whose embedding a fresh model zeroes: a zero vector has no angle
    vocab = loaded.model.get_input_embeddings().weight.shape[0]
    return torch.randint(1, vocab, (SEQS, LENGTH), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def signals(loaded: LoadedModel, input_ids: torch.Tensor) -> LayerSignals:
    return layer_signals(loaded, input_ids, batch_size=2)  # 3 batches, one of them short


def reference_states(loaded: LoadedModel, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """h_0..h_n, each [N, L, hidden]: layer inputs from hidden_states, the last output by hook."""
    model = loaded.model
    captured: list[torch.Tensor] = []
    last_layer = loaded.view.base_layers[-1]

    def grab(module: torch.nn.Module, args: tuple, output: object) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[arg-type]

    handle = last_layer.register_forward_hook(grab)
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hidden = list(out.hidden_states)
    assert len(hidden) == N_LAYERS + 1
    # the pitfall the module avoids: the last hidden_states entry has the final norm applied
    assert not torch.allclose(hidden[-1], captured[0], atol=1e-4)
    return hidden[:-1] + [captured[0]]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float(a64 @ b64 / (a64.norm() * b64.norm()))


def test_signals_equal_hand_computation(
    loaded: LoadedModel, input_ids: torch.Tensor, signals: LayerSignals
) -> None:
    states = reference_states(loaded, input_ids)
    assert signals.n_layers == N_LAYERS
    assert (signals.n_sequences, signals.n_tokens) == (SEQS, SEQS * LENGTH)
    for layer in range(N_LAYERS):
        h_in, h_out = states[layer], states[layer + 1]
        cosines = [cos(h_in[s, t], h_out[s, t]) for s in range(SEQS) for t in range(LENGTH)]
        expected = 1 - sum(cosines) / len(cosines)
        assert signals.block_influence[layer] == pytest.approx(expected, abs=1e-5), layer
    for start in range(N_LAYERS):
        for k in range(1, N_LAYERS - start + 1):
            a, b = states[start], states[start + k]
            dists = [
                math.acos(max(-1.0, min(1.0, cos(a[s, -1], b[s, -1])))) / math.pi
                for s in range(SEQS)
            ]
            expected = sum(dists) / SEQS
            assert signals.angular_distance(start, k) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("k", "protect"), [(1, 0), (2, 2), (3, 1), (5, 2), (7, 0), (1, 6)])
def test_baselines_equal_brute_force(signals: LayerSignals, k: int, protect: int) -> None:
    picks = {b.name: b for b in baselines(signals, N_LAYERS, k, protect)}
    assert tuple(picks) == BASELINE_NAMES
    for pick in picks.values():
        assert is_valid(pick.dropped, N_LAYERS, protect, k), pick
        assert pick.dropped == sorted(pick.dropped)

    bi = signals.block_influence
    best = min(
        itertools.combinations(range(protect, N_LAYERS), k), key=lambda c: sum(bi[i] for i in c)
    )
    assert picks["shortgpt"].dropped == list(best)
    assert picks["shortgpt"].signal == pytest.approx(sum(bi[i] for i in best) / k)

    blocks = {s: signals.angular_distance(s, k) for s in range(protect, N_LAYERS - k + 1)}
    start = min(blocks, key=blocks.__getitem__)
    assert picks["angular"] == Baseline("angular", list(range(start, start + k)), blocks[start])

    assert picks["last_k"] == Baseline("last_k", list(range(N_LAYERS - 1 - k, N_LAYERS - 1)))


def test_edge_cases_refused(signals: LayerSignals) -> None:
    with pytest.raises(ValueError, match=r"use k in 1\.\.5"):
        baselines(signals, N_LAYERS, 6, 2)  # k = droppable count: nothing would be left
    with pytest.raises(ValueError, match=r"use k in 1\.\.5"):
        baselines(signals, N_LAYERS, 0, 2)
    with pytest.raises(ValueError, match="not 9"):
        baselines(signals, 9, 2, 2)
    with pytest.raises(ValueError, match="no block"):
        signals.angular_distance(N_LAYERS - 1, 2)


def test_needs_base_model_and_2d_ids(loaded: LoadedModel, input_ids: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        layer_signals(loaded, input_ids[0])
    with loaded.view.view([0, 1, 2]), pytest.raises(ValueError, match="restore the layer view"):
        layer_signals(loaded, input_ids)
    # hooks were removed: a second pass measures the same thing
    again = layer_signals(loaded, input_ids, batch_size=SEQS)
    first = layer_signals(loaded, input_ids, batch_size=1)
    assert again.block_influence == pytest.approx(first.block_influence, abs=1e-6)
    assert torch.allclose(again.last_token_states, first.last_token_states, atol=1e-5)


def test_one_token_sequences_on_qwen3(tmp_path: Path) -> None:
    """Sequences of one token (BI over N tokens) on a model with per-layer attention types."""
    path = build_tiny("qwen3", tmp_path / "qwen3", n_layers=4, seed=1)
    loaded = load_model(str(path), device="cpu", dtype="float32")
    ids = torch.tensor([[5], [9], [11]])
    sig = layer_signals(loaded, ids)
    assert sig.n_tokens == 3 and len(sig.block_influence) == 4
    assert sig.last_token_states.shape == (5, 3, 32)
    names = [b.name for b in baselines(sig, 4, 2, 1)]
    assert names == list(BASELINE_NAMES)
