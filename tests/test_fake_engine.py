"""The fake engine that drives the UI tests writes what the real engine writes.

The UI tests run against ``tests/fake_engine.py`` in milliseconds; they only prove something about
the real product if the fake's events and ``result.json`` have the real ones' kinds and fields.
Here the real engine runs a search on a tiny model and the fake runs the same config; the event
kinds, each kind's payload fields and result.json's structure (keys at every level, value types)
must agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine, fake_store
from tiny_models import build_tiny

from gaprune_tui.core.events import UnknownEvent
from gaprune_tui.core.store import RunStore

# The run both engines follow (the fake's defaults stand in for a model: 30 layers).
CONFIG = {
    "fitness": "squared_mean",  # the fake scores tasks
    "generations": 2,
    "population": 4,
    "prune": 2,
    "protect": 1,
    "limit": 6,
    "finalists": 2,
    "confirm_limit": 6,
    "holdout_tasks": ["piqa_offline"],
}
# Events that only some runs write (control requests, failures, exports) are not compared.
OPTIONAL_KINDS = {
    "run_paused",
    "run_resumed",
    "run_stopped",
    "run_failed",
    "evaluation_task",
    "log",
}


def shape(value: Any) -> Any:
    """The structure of a JSON value: dicts by key, lists by their first item, scalars by type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return None
    return type(value).__name__


def differences(real: Any, fake: Any, where: str = "") -> list[str]:
    """Where two shapes disagree; None (a value not known yet) and [] agree with anything."""
    if real is None or fake is None or real == [] or fake == []:
        return []
    if isinstance(real, dict) and isinstance(fake, dict):
        out = [f"{where}.{k}: only in the real engine's" for k in real.keys() - fake.keys()]
        out += [f"{where}.{k}: only in the fake engine's" for k in fake.keys() - real.keys()]
        for key in real.keys() & fake.keys():
            out += differences(real[key], fake[key], f"{where}.{key}")
        return out
    if isinstance(real, list) and isinstance(fake, list):
        return differences(real[0], fake[0], f"{where}[0]")
    return [] if real == fake else [f"{where}: {real} in the real engine's, {fake} in the fake's"]


def event_shapes(store: RunStore) -> dict[str, Any]:
    """Per event kind, the shape of its payloads (merged over every event of the kind)."""
    out: dict[str, Any] = {}
    for event in store.events():
        assert not isinstance(event, UnknownEvent), event.kind
        payload = shape(event.to_payload())
        merged = out.setdefault(event.kind, {})
        for key, value in payload.items():
            if merged.get(key) in (None, []):
                merged[key] = value
    return out


def run_real(home: Path, model: Path, config: dict[str, Any]) -> RunStore:
    """The real engine through the CLI on ``model`` with ``config`` (RunConfig fields)."""
    args = ["run", "--model", str(model), "--tasks", "hellaswag_offline,openbookqa_offline"]
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if key == "prune_range":
            args += [flag, ":".join(map(str, value))]
        else:
            args += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    proc = subprocess.run(
        [sys.executable, "-m", "gaprune_tui", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GAPRUNE_HOME": str(home), "GAPRUNE_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (home / "data" / "runs").iterdir()
    return RunStore(run_dir)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    home = tmp_path_factory.mktemp("real-home")
    model = build_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")
    return run_real(home, model, CONFIG)


@pytest.fixture
def fake_run() -> RunStore:
    store = fake_store(**CONFIG)
    shape = {k: CONFIG[k] for k in ("generations", "population", "prune", "protect")}
    FakeEngine(store, **shape, faithful=True).run()
    return store


def test_the_fake_writes_the_real_event_kinds_and_fields(
    real_store: RunStore, fake_run: RunStore
) -> None:
    real, fake = event_shapes(real_store), event_shapes(fake_run)
    assert real.keys() - OPTIONAL_KINDS == fake.keys() - OPTIONAL_KINDS
    problems = [
        p for kind in real.keys() & fake.keys() for p in differences(real[kind], fake[kind], kind)
    ]
    assert problems == []


def test_the_fake_writes_the_real_result_json(real_store: RunStore, fake_run: RunStore) -> None:
    real, fake = real_store.result(), fake_run.result()
    assert real is not None and fake is not None
    assert differences(shape(real), shape(fake), "result") == []
    assert real_store.state == fake_run.state == "finished"


def test_the_compact_fake_still_writes_every_result_key(real_store: RunStore) -> None:
    """The UI tests' default fake (no baselines, no confirmation, scores without standard
    errors) still writes every top-level key of the real result.json."""
    store = fake_store(**CONFIG)
    FakeEngine(store, generations=2, population=4, prune=2, protect=1).run()
    real, fake = real_store.result(), store.result()
    assert real is not None and fake is not None
    assert real.keys() == fake.keys()


# ---- Pareto, KL and several workers: compared whole ------------------------------------------
# A Pareto run on KL with two workers: the front and hypervolume on each generation event,
# calibration scores, WorkerStatus events. Task run's limits as above; confirmation on tasks.
PARETO_KL_WORKERS = {
    **CONFIG,
    "objective": "pareto",
    "prune_range": [1, 2],
    "fitness": "kl",
    "calibration_tokens": 256,
    "workers": 2,
}


def strict_shape(value: Any) -> Any:
    """The structure of a JSON value, whole: dicts by key, lists by the set of their items'
    shapes (every item, an empty list its own shape), None, bools, numbers and strings apart."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, strict_shape(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(sorted({strict_shape(v) for v in value}, key=repr)))
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def strict_event_shapes(store: RunStore) -> dict[str, dict[str, set[Any]]]:
    """Per event kind and field, every shape the field took over the run's events."""
    out: dict[str, dict[str, set[Any]]] = {}
    for event in store.events():
        assert not isinstance(event, UnknownEvent), event.kind
        fields = out.setdefault(event.kind, {})
        for key, value in event.to_payload().items():
            fields.setdefault(key, set()).add(strict_shape(value))
    return out


@pytest.fixture(scope="module")
def real_pareto_kl_workers(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    home = tmp_path_factory.mktemp("real-pkw-home")
    model = build_tiny("llama", tmp_path_factory.mktemp("tiny-pkw") / "llama")
    return run_real(home, model, PARETO_KL_WORKERS)


def test_the_fake_writes_the_real_pareto_kl_and_worker_events(
    real_pareto_kl_workers: RunStore,
) -> None:
    fake = fake_store(**PARETO_KL_WORKERS)
    FakeEngine(fake, generations=2, population=4, protect=1, faithful=True).run()
    real, got = strict_event_shapes(real_pareto_kl_workers), strict_event_shapes(fake)
    for kind in ("generation_finished", "worker_status", "evaluation_finished", "base_scores"):
        assert kind in real and kind in got, kind
    assert real.keys() - OPTIONAL_KINDS == got.keys() - OPTIONAL_KINDS
    problems = {
        f"{kind}.{key}": (real[kind].get(key), got[kind].get(key))
        for kind in real.keys() & got.keys()
        if kind not in OPTIONAL_KINDS | {"run_finished"}  # its result: result.json, below
        for key in real[kind].keys() | got[kind].keys()
        if real[kind].get(key) != got[kind].get(key)
    }
    assert problems == {}
    # result.json's keys at every level (which workers scored is the run's data; whether a
    # front member came from the search or a baseline too, so its rows are compared loosely).
    real_result, fake_result = real_pareto_kl_workers.result(), fake.result()
    assert real_result is not None and fake_result is not None
    for result in (real_result, fake_result):
        counts = result.pop("worker_evaluations")
        assert counts and set(counts) <= {"worker-1", "worker-2"}
    assert differences(shape(real_result), shape(fake_result), "result") == []
