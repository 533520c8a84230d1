"""Test environment: never touch the network, never touch the user's files.

Set before anything imports huggingface_hub or datasets. ``GAPRUNE_HOME`` is a fresh folder per test
(runs, memo, config); the converted embedded model is shared across tests and sessions through
``GAPRUNE_CACHE_DIR`` so that the 30 s GGUF conversion happens once per machine.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cores import cores

_HF_HOME = Path(tempfile.mkdtemp(prefix="gaprune-hf-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HF_HOME)
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Engine processes started by a test (the CLI, the TUI's launch) stay within this worker's share of
# the cores under pytest-xdist; a test that passes its own GAPRUNE_THREADS still wins.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("GAPRUNE_THREADS", str(cores()))
os.environ.setdefault(
    "GAPRUNE_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".test-cache")
)


# Under pytest-xdist (the README's command) whole files are dealt to the workers in collection order
# (`--dist loadfile --no-loadscope-reorder` in pyproject.toml). The files that take longest go first,
# so that the many short files fill in around them instead of one long file running alone at the end.
# Measured with `--durations` on 2 cores; the order changes only the wall time, never a result.
LONGEST_FIRST = (
    "test_backends.py",
    "test_cli.py",
    "test_scores_proven.py",
    "test_bf16_contract.py",
    "test_e2e_embedded.py",
    "test_vs_baselines.py",
    "test_pareto_cli.py",
    "test_heal.py",
    "test_tui_heal.py",
    "test_trust_cli.py",
    "test_export_verify.py",
    "test_fake_engine.py",
    "test_tui_setup.py",
    "test_scoring.py",
    "test_tasks.py",
    "test_export.py",
    "test_tui_history.py",
    "test_tui_snapshots_run.py",
    "test_model.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def gaprune_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "gaprune-home"
    home.mkdir()
    monkeypatch.setenv("GAPRUNE_HOME", str(home))
    return home


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults and notes as on a machine without a GPU, whatever this one has (the Setup screen
    asks ``core.devices``, which honours ``GAPRUNE_ASSUME_GPU``)."""
    monkeypatch.setenv("GAPRUNE_ASSUME_GPU", "0")


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Screens drawn the same every time (no ETA, no blinking), for snapshots."""
    monkeypatch.setenv("GAPRUNE_TUI_DETERMINISTIC", "1")


@pytest.fixture(scope="module")
def tiny12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-layer tiny Llama, built once per module: enough droppable layers that a run's
    generations are mostly fresh genomes, for the end-to-end CLI tests."""
    from tiny_models import build_tiny  # torch: only for the tests that ask for it

    return build_tiny("llama", tmp_path_factory.mktemp("tiny12") / "llama", n_layers=12)


@pytest.fixture(scope="module")
def embedded() -> Any:
    """The embedded SmolLM2-135M in float32 on the CPU, loaded once per module, for the tests
    that compare scorers on a real model."""
    import torch  # only for the tests that ask for it

    from gaprune_tui.engine.model import load_model

    torch.set_num_threads(cores())
    return load_model("demo", dtype="float32", device="cpu")
