"""Verification catches a wrong export: a kept layer swapped for a dropped one, a layer whose
weights are missing, one tensor moved by one ulp. Each fails ``export_run`` with a one-line
"verification failed" naming the check that failed, and leaves no folder at the target (the
partial export is kept as ``<target>.failed-*``). A correct ``export_run`` verifies on every tiny
family (Llama in test_export.py; Qwen3 and GPT-2 here).

The faults are injected after MergeKit wrote the folder and before verification reads it, by
wrapping ``run_mergekit`` where ``export_genome`` calls it: nothing else of the export changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cores import cores
from safetensors.torch import load_file, save_file
from scored_runs import score_tasks, tiny_run_config
from tiny_models import build_families, build_tiny

from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.store import RunStore
from gaprune_tui.engine.export import FAILED_FILE, export_run
from gaprune_tui.engine.export import genome as genome_module

torch.set_num_threads(cores())

DROPPED = [2, 4]
KEPT = [0, 1, 3, 5]


def scored_run(model: Path) -> RunStore:
    """A run store of ``model`` with one genome (drop 2 and 4) really scored on a bundled task."""
    return score_tasks(tiny_run_config(model), [DROPPED]).store()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_families(tmp_path_factory.mktemp("tiny-verify"))


def _weights(folder: Path) -> Path:
    (file,) = folder.glob("*.safetensors")
    return file


def _layer_prefix(name: str) -> str | None:
    """``model.layers.3.`` / ``transformer.h.3.`` of a per-layer tensor name, else None."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h") and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2]) + "."
    return None


def drop_layer_weights(folder: Path) -> None:
    """Remove every tensor of the export's last layer (its config still counts the layer)."""
    file = _weights(folder)
    tensors = load_file(file)
    last = max(
        (p for p in map(_layer_prefix, tensors) if p),
        key=lambda p: int(p.rstrip(".").split(".")[-1]),
    )
    kept = {k: v for k, v in tensors.items() if not k.startswith(last)}
    assert len(kept) < len(tensors)
    save_file(kept, file, metadata={"format": "pt"})


def nudge_one_tensor(folder: Path) -> None:
    """Move every element of one layer's MLP output projection to the next float32 up: one ulp,
    the smallest change a tensor can take."""
    file = _weights(folder)
    tensors = load_file(file)
    name = next(k for k in sorted(tensors) if k.startswith("model.layers.1.mlp.down_proj"))
    before = tensors[name]
    after = torch.nextafter(before, torch.full_like(before, float("inf")))
    assert before.dtype == torch.float32 and bool((after != before).all())
    assert torch.equal(torch.nextafter(after, torch.full_like(after, float("-inf"))), before)
    tensors[name] = after
    save_file(tensors, file, metadata={"format": "pt"})


def inject(
    monkeypatch: pytest.MonkeyPatch,
    *,
    kept: list[int] | None = None,
    after: Callable[[Path], None] | None = None,
) -> None:
    """Make ``export_genome``'s MergeKit step merge ``kept`` instead of the genome's layers and/or
    damage the written folder with ``after``."""
    real = genome_module.run_mergekit

    def faulty(
        source: Path,
        genome_kept: list[int],
        n: int,
        dtype: str,
        folder: Path,
        trust: bool,
        hub_id: str | None = None,
    ) -> list[str]:
        sliced = real(source, kept or genome_kept, n, dtype, folder, trust, hub_id)
        if after is not None:
            after(folder)
        return sliced

    monkeypatch.setattr(genome_module, "run_mergekit", faulty)


@pytest.mark.parametrize(
    ("fault", "kwargs"),
    [
        # Layer 3 (kept) replaced by layer 2 (dropped): same count, config valid, wrong weights.
        ("swapped", {"kept": [0, 1, 2, 5]}),
        ("missing", {"after": drop_layer_weights}),
        ("one-ulp", {"after": nudge_one_tensor}),
    ],
)
def test_a_wrong_export_fails_verification_and_leaves_no_target(
    fault: str,
    kwargs: dict[str, Any],
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = scored_run(tiny["llama"])
    inject(monkeypatch, **kwargs)
    out = tmp_path / fault
    with pytest.raises(ExportError, match="verification failed: NOT verified") as info:
        export_run(store.id, out=out)
    message = str(info.value)
    assert "\n" not in message
    # The logits check is the one that names the fault (float32: any difference fails).
    assert "logits max |diff|" in message and "(tolerance 0)" in message, message
    assert not out.exists()
    failed = list(tmp_path.glob(f"{fault}.failed-*"))
    assert len(failed) == 1 and "verification failed" in (failed[0] / FAILED_FILE).read_text()
    assert [e.kind for e in store.events()][-1] == "export_failed"


@pytest.mark.parametrize("family", ["qwen3", "gpt2"])
def test_export_run_verifies_every_tiny_family(
    family: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    store = scored_run(tiny[family])
    result = export_run(store.id, out=tmp_path / family)
    ver = result.verification
    assert result.verified is True and ver is not None and ver.passed
    assert ver.logits_max_abs_diff == 0.0 and ver.generate_matches_view and ver.tokenizer_ok
    assert ver.fitness_required and ver.fitness_ok
    assert ver.fitness_export == pytest.approx(result.plan.genome.fitness, abs=1e-12)
    assert result.plan.dropped == DROPPED and (tmp_path / family / "gaprune.json").is_file()


@pytest.mark.parametrize(
    ("family", "reason"),
    [
        # MergeKit 0.1.5's GPT-NeoX definition wants the attention.bias buffer, which current
        # transformers no longer saves.
        ("gpt_neox", "attention.bias required but not present"),
        # MergeKit 0.1.5 has no OPT definition: it infers one and keeps all layers in the config.
        ("opt", "MergeKit wrote a config with 6 layers instead of 4"),
    ],
)
def test_families_mergekit_cannot_export_fail_in_one_line(
    family: str, reason: str, tmp_path: Path
) -> None:
    """docs/cli.md names these families for the search (the layer view is tested in
    test_model.py) and says their export is not supported: it fails cleanly, no target left."""
    from gaprune_tui.engine.export import export_genome

    src = build_tiny(family, tmp_path / family)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=reason) as info:
        export_genome(src, KEPT, out)
    assert "\n" not in str(info.value)
    assert not out.exists() and len(list(tmp_path.glob("out.failed-*"))) == 1
