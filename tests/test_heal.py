"""Healing (``engine/heal.py``, ``engine/heal_job.py``, ``gaprune-tui heal``, ``export --healed``).

In-process tests on a tiny Llama whose weights are scaled up (``build_sharp``: dropping layers moves
its KL): healing lowers KL to the base on text it never trained on, the base model is left bit for
bit as it was, ``partial`` trains exactly the tensors it names, a merged LoRA computes what the
adapters computed, a stopped heal resumes to the same weights. Then the real CLI on a real run:
bad input is one line and exit 2 before any work, and (slow) a heal killed with SIGKILL resumes to
the weights of an uninterrupted heal, and its export loads in plain transformers with the healed
model's logits.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_run import cli, copy_run, run_in_home
from tiny_models import build_sharp, build_tiny
from tui_wait import wait_until

from gaprune_tui.core import events
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.heal import HealConfig, heals_dir, read_json, unfinished_heal
from gaprune_tui.core.store import ControlAction, RunStore
from gaprune_tui.engine.control import StopRequested
from gaprune_tui.engine.heal import (
    HealData,
    Trainer,
    build_student,
    healed_tensors,
    kd_loss,
    load_healed,
    lr_at,
    offline_sources,
)
from gaprune_tui.engine.model import load_model

KEPT = [0, 1, 3, 5]  # layers 2 and 4 of 6 dropped
VOCAB = 300


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_model(str(build_sharp(tmp_path_factory.mktemp("sharp") / "llama")), dtype="float32")


def token_batches(n: int, seq_len: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, seq_len), generator=gen)


def per_sequence_kl(
    base: torch.nn.Module, model: torch.nn.Module, ids: torch.Tensor
) -> list[float]:
    """KL(base || model) per sequence, computed here from the two models' logits."""
    with torch.no_grad():
        p = torch.log_softmax(base(ids).logits.float(), -1)
        q = torch.log_softmax(model(ids).logits.float(), -1)
    return (p.exp() * (p - q)).sum(-1).mean(-1).tolist()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert sorted(now) == sorted(before)
    changed = [n for n in before if not torch.equal(before[n], now[n])]
    assert changed == [], changed


def train(loaded: Any, config: HealConfig, folder: Path, data: torch.Tensor, **kw: Any) -> Any:
    student = build_student(loaded.view, KEPT, config)
    trainer = Trainer(loaded.model, student, HealData(data, "test", "x"), config, folder, **kw)
    trainer.load()
    trainer.run()
    return student, trainer


def test_heal_lowers_kl_on_unseen_text_and_leaves_the_base_intact(
    sharp: Any, tmp_path: Path
) -> None:
    base = snapshot(sharp.model)
    held_out = token_batches(12, 32, seed=99)
    with sharp.view.view(KEPT):
        # The pruned genome before healing: KL measured on text the heal never sees.
        before = per_sequence_kl_from_view(sharp, held_out)
    config = HealConfig(
        method="partial", tokens=64 * 32, seq_len=32, batch_size=4, lr=3e-3, warmup=0.1
    ).validate()
    student, trainer = train(sharp, config, tmp_path, token_batches(64, 32, seed=1))
    after = per_sequence_kl(sharp.model, student.model, held_out)
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    assert mean < -2 * sd / math.sqrt(len(diffs)), (before, after)  # lower beyond noise, paired
    assert trainer.losses[-1] < trainer.losses[0]
    assert_unchanged(sharp.model, base)
    assert sharp.view.is_base and len(sharp.view.base_layers) == 6


def per_sequence_kl_from_view(loaded: Any, ids: torch.Tensor) -> list[float]:
    """KL(base || view) with the base computed with every layer, the view with the applied one."""
    kept = loaded.view.kept
    loaded.view.restore()
    with torch.no_grad():
        p = torch.log_softmax(loaded.model(ids).logits.float(), -1)
    loaded.view.apply(kept)
    with torch.no_grad():
        q = torch.log_softmax(loaded.model(ids).logits.float(), -1)
    return (p.exp() * (p - q)).sum(-1).mean(-1).tolist()


def test_partial_trains_exactly_the_last_kept_layers_the_norm_and_the_head(
    sharp: Any, tmp_path: Path
) -> None:
    config = HealConfig(
        method="partial", tokens=8 * 32, seq_len=32, batch_size=4, train_layers=2
    ).validate()
    student = build_student(sharp.view, KEPT, config)
    # Kept layers 3 and 5 are the student's layers 2 and 3 (renumbered from 0).
    expected = {
        n
        for n, _ in student.model.named_parameters()
        if n.startswith(("model.layers.2.", "model.layers.3.", "model.norm.", "lm_head."))
    }
    assert set(student.trainable()) == expected
    shared = {id(p) for p in sharp.model.parameters()}
    for name, p in student.model.named_parameters():
        # Frozen tensors are the base model's own (no copy); trained ones are copies.
        assert (id(p) in shared) == (name not in expected), name
    start = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    trainer = Trainer(
        sharp.model, student, HealData(token_batches(8, 32, 2), "t", "x"), config, tmp_path
    )
    trainer.run()
    for name, p in student.model.named_parameters():
        if name in expected:
            continue
        assert torch.equal(p, start[name]), name
    trained = student.trainable()
    assert all(not torch.equal(trained[n], start[n]) for n in expected if n.endswith("weight"))


def test_lora_merged_weights_compute_what_the_adapters_computed(sharp: Any, tmp_path: Path) -> None:
    config = HealConfig(
        method="lora", tokens=16 * 32, seq_len=32, batch_size=4, lora_rank=4, lr=1e-2
    ).validate()
    base = snapshot(sharp.model)
    student, _ = train(sharp, config, tmp_path, token_batches(16, 32, seed=3))
    assert all("lora_" in n for n in student.trainable())
    merged = load_healed(sharp.view, KEPT, healed_tensors(student))
    ids = token_batches(3, 24, seed=7)
    with torch.no_grad():
        adapters = student.model(ids).logits
        plain = merged.model(ids).logits
        with sharp.view.view(KEPT):
            unhealed = sharp.model(ids).logits
    assert torch.allclose(adapters, plain, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(plain, unhealed, atol=1e-3)  # the heal changed the model
    assert not any(".lora_" in n for n in dict(merged.model.named_parameters()))
    assert_unchanged(sharp.model, base)


def test_a_stopped_heal_resumes_from_its_checkpoint_to_the_same_weights(
    sharp: Any, tmp_path: Path
) -> None:
    config = HealConfig(
        method="partial", tokens=40 * 16, seq_len=16, batch_size=4, checkpoint_every=3, lr=2e-3
    ).validate()
    data = token_batches(40, 16, seed=4)
    (tmp_path / "whole").mkdir()
    whole, _ = train(sharp, config, tmp_path / "whole", data)

    calls = {"n": 0}

    def stop_at_step_8() -> None:
        calls["n"] += 1
        if calls["n"] == 8:  # before step 8: steps 1-7 done, the last checkpoint at step 6
            raise StopRequested("stop")

    folder = tmp_path / "stopped"
    folder.mkdir()
    with pytest.raises(StopRequested):
        train(sharp, config, folder, data, between=stop_at_step_8)
    saved = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 6 and len(saved["losses"]) == 6
    resumed, trainer = train(sharp, config, folder, data)
    assert trainer.step == trainer.steps == 10
    a, b = healed_tensors(whole), healed_tensors(resumed)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_tied_head_is_untied_when_trained(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    path = build_tiny("llama", tmp_path / "tied")
    model = AutoModelForCausalLM.from_pretrained(path)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(path)
    loaded = load_model(str(path), dtype="float32")
    m = loaded.model
    assert m.get_output_embeddings().weight is m.get_input_embeddings().weight
    embed = m.get_input_embeddings().weight.detach().clone()
    config = HealConfig(method="partial", tokens=8 * 16, seq_len=16, batch_size=4, lr=1e-2)
    student, _ = train(loaded, config.validate(), tmp_path, token_batches(8, 16, seed=5))
    s = student.model
    assert student.untied and s.config.tie_word_embeddings is False
    assert s.get_output_embeddings().weight is not s.get_input_embeddings().weight
    assert s.get_input_embeddings().weight is m.get_input_embeddings().weight  # shared, frozen
    assert torch.equal(m.get_input_embeddings().weight, embed)
    assert not torch.equal(s.get_output_embeddings().weight, embed)  # the head was trained
    assert m.config.tie_word_embeddings is True  # the base model's config is its own


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    steps, warm = 10, 2
    got = [lr_at(s, steps, warm) for s in range(steps)]
    assert got[:2] == [0.5, 1.0]
    assert got[2] == 1.0 and all(a > b for a, b in zip(got[2:], got[3:], strict=False))
    assert lr_at(steps, steps, warm) == pytest.approx(0.0, abs=1e-12)


def test_kd_loss_is_kl_of_teacher_to_student() -> None:
    t = torch.tensor([[[2.0, 0.0, -1.0]]])
    s = torch.tensor([[[0.0, 1.0, 0.0]]])
    p = torch.softmax(t[0, 0], -1)
    q = torch.softmax(s[0, 0], -1)
    expected = float((p * (p / q).log()).sum())
    assert float(kd_loss(s, t)) == pytest.approx(expected, rel=1e-6)
    assert float(kd_loss(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_offline_heal_text_never_reads_a_measured_task_or_the_calibration_text() -> None:
    from gaprune_tui.engine.calibration import _offline_documents as calibration_documents
    from gaprune_tui.engine.heal import _offline_documents as heal_documents

    everything = offline_sources([])
    assert "hails/mmlu_no_train/*/*" in everything
    without = offline_sources(["mmlu_abstract_algebra", "triviaqa", "hellaswag_offline"])
    assert "hails/mmlu_no_train/*/*" not in without and "trivia_qa/*/validation" not in without
    assert len(without) == len(everything) - 2
    # No bundled task's data is a healing source at all.
    bundled = ("arc", "boolq", "hellaswag", "openbookqa", "piqa", "sciq", "winogrande")
    assert not any(folder.startswith(bundled) for folder in everything)
    calibration = set(calibration_documents())
    heal = set(heal_documents([]))
    assert len(heal) > 20_000 and not (heal & calibration)


def test_bad_heal_settings_are_one_line_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"method": "full"}, "unknown heal method 'full'"),
        ({"objective": "mse"}, "unknown heal objective"),
        ({"tokens": 0}, "--heal-tokens must be"),
        ({"tokens": 100}, "less than one step"),
        ({"lora_rank": 0}, "--lora-rank 0 is out of range"),
        ({"lora_rank": 4096}, "--lora-rank 4096 is out of range"),
        ({"data": "/nonexistent/heal.txt"}, "not found"),
        ({"data": "notes.csv"}, "unknown heal data"),
    ]
    for fields, fragment in cases:
        with pytest.raises(ConfigError) as info:
            HealConfig(**fields).validate()
        assert fragment in str(info.value) and "\n" not in str(info.value), (fields, info.value)


# ---- the CLI on a real run ----------------------------------------------------------------------
HEAL_FLAGS = ["--heal-tokens", "4096", "--heal-seq-len", "32", "--heal-batch", "4"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real finished KL run on a tiny Llama, in its own GAPRUNE_HOME."""
    root = tmp_path_factory.mktemp("heal-run")
    model = build_sharp(root / "llama")
    home = root / "home"
    _, store = run_in_home(
        home,
        model,
        "--fitness",
        "kl",
        "--tasks",
        "hellaswag_offline",
        "--prune",
        "2",
        "--protect",
        "1",
        "--population",
        "4",
        "--generations",
        "1",
        "--finalists",
        "1",
        "--confirm-limit",
        "5",
        "--limit",
        "5",
        "--holdout-tasks",
        "piqa_offline",
        "--calibration-tokens",
        "512",
        "--baselines",
        "shortgpt",
    )
    store.close()  # a test copies the run folder: no connection of ours may hold its WAL
    return home, store.id


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--method", "full"], ["unknown heal method 'full'", "--method partial or lora"]),
        (["--heal-tokens", "0"], ["--heal-tokens must be"]),
        (["--lora-rank", "0", "--method", "lora"], ["--lora-rank 0 is out of range"]),
        (["--rank", "999"], ["evaluated genomes: use --rank 1.."]),
        (["--heal-data", "MISSING.txt"], ["not found"]),
        (["--heal-data", "EMPTY.txt"], ["is empty"]),
    ],
)
def test_bad_heal_input_is_one_line_and_exit_2(
    finished_run: tuple[Path, str], tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    home, run_id = finished_run
    (tmp_path / "EMPTY.txt").write_text("\n\n", encoding="utf-8")
    args = [str(tmp_path / a) if a.endswith(".txt") else a for a in args]
    proc = cli("heal", run_id, *args, env={"GAPRUNE_HOME": str(home)})
    assert_one_line_error(proc, *fragments)
    assert not heals_dir(open_store(home, run_id)).exists()


def open_store(home: Path, run_id: str) -> RunStore:
    return RunStore(home / "data" / "runs" / run_id)


def heal_weights(run_dir: Path, heal: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(heals_dir(run_dir) / heal / "weights.safetensors"))


@pytest.mark.slow
def test_heal_killed_mid_training_resumes_to_the_weights_of_an_uninterrupted_heal(
    finished_run: tuple[Path, str], tmp_path: Path
) -> None:
    home, run_id = finished_run
    env = {"GAPRUNE_HOME": str(home)}
    # 512 one-sequence steps: training lasts long enough for the pause to land inside it.
    flags = ["--rank", "1", *HEAL_FLAGS, "--heal-tokens", "16384", "--heal-batch", "1"]
    flags += ["--checkpoint-every", "16"]
    # A copy of the finished run gets the uninterrupted heal (same engine, same threads).
    runs = home / "data" / "runs"
    copy_id = run_id + "-copy"
    copy_run(runs / run_id, runs / copy_id)
    whole = cli("heal", copy_id, *flags, "--json", env=env)
    assert whole.returncode == 0, whole.stderr
    record = json.loads(whole.stdout)

    proc = cli("heal", run_id, *flags, "--detach", env=env)
    assert proc.returncode == 0, proc.stderr
    heal = proc.stdout.strip().splitlines()[-1]
    store = open_store(home, run_id)

    def steps_done() -> int:
        done = [e.step for e in store.events() if isinstance(e, events.HealStep)]
        return max(done, default=0)

    wait_until(lambda: steps_done() >= 20, "the heal to pass step 20", 240, every=0.01)
    store.request(ControlAction.PAUSE)  # held between two steps, then killed there
    wait_until(lambda: store.state == "paused", "the heal to pause", 60)
    at = steps_done()
    assert 20 <= at < record["steps"], (at, record["steps"])
    os.kill(store.meta()["pid"], signal.SIGKILL)
    wait_until(lambda: store.display_state() == "crashed", "the killed heal to show crashed", 30)
    assert unfinished_heal(store) == heal
    checkpoint = torch.load(heals_dir(store) / heal / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == at // 16 * 16 > 0

    resumed = cli("resume", run_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    starts = [e for e in store.events() if isinstance(e, events.HealStarted) and e.heal == heal]
    assert [s.from_step for s in starts] == [0, checkpoint["step"]]
    a = heal_weights(runs / copy_id, record["id"])
    b = heal_weights(runs / run_id, heal)
    assert record["id"] == heal and sorted(a) == sorted(b)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert unfinished_heal(store) is None
    final = json.loads(resumed.stdout)
    assert final["losses"] == record["losses"]
    assert store.state == "finished"
    (entry,) = [h for h in store.result()["heals"] if h["id"] == heal]
    assert entry["after"]["kl"] == record["after"]["kl"]


@pytest.mark.slow
def test_healed_export_loads_in_plain_transformers_with_the_healed_logits(
    finished_run: tuple[Path, str], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    home, run_id = finished_run
    env = {"GAPRUNE_HOME": str(home)}
    proc = cli("heal", run_id, "--method", "lora", "--lr", "5e-3", *HEAL_FLAGS, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    store = open_store(home, run_id)
    # Measured before and after on the same text; the record says how they compare.
    assert record["before"]["kl"] > 0 and record["after"]["kl"] > 0
    assert record["verdicts"]["kl"]["outcome"] in ("better", "within noise", "worse")
    assert record["after"]["fitness"] == record["after"]["kl"]  # a KL run's fitness is its KL
    out = tmp_path / "healed"
    exported = cli("export", run_id, "--healed", record["id"], "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert "logits identical" in exported.stdout and "fitness reproduced" in exported.stdout
    lineage = json.loads((out / "gaprune.json").read_text())
    assert lineage["heal"]["id"] == record["id"] and lineage["dropped_layers"] == record["dropped"]
    assert "## Healing" in (out / "README.md").read_text()

    # Independently of the export's own check: the folder in plain transformers against the
    # healed model rebuilt here from the base model and the heal's tensors.
    config = store.config()
    base = load_model(config.model, dtype="float32")
    healed = load_healed(base.view, record["kept"], heal_weights(store.path, record["id"]))
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert plain.config.num_hidden_layers == len(record["kept"])
    ids = token_batches(2, 20, seed=11)
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, healed.model(ids).logits)
        with base.view.view(record["kept"]):
            assert not torch.equal(plain(ids).logits, base.model(ids).logits)


def test_show_lists_the_heals(finished_run: tuple[Path, str]) -> None:
    home, run_id = finished_run
    env = {"GAPRUNE_HOME": str(home)}
    store = open_store(home, run_id)
    if not (store.result() or {}).get("heals"):
        proc = cli("heal", run_id, *HEAL_FLAGS, env=env)
        assert proc.returncode == 0, proc.stderr
    shown = cli("show", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    for heal in store.result()["heals"]:
        assert f"heal {heal['id']}" in shown.stdout
        assert "KL to base" in shown.stdout


def test_worker_rejects_a_heal_without_a_request(finished_run: tuple[Path, str]) -> None:
    home, run_id = finished_run
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gaprune_tui.engine.worker",
            str(home / "data" / "runs" / run_id),
            "--heal",
            "nope",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "GAPRUNE_HOME": str(home)},
        timeout=120,
    )
    assert proc.returncode != 0
    assert read_json(heals_dir(home / "data" / "runs" / run_id) / "nope" / "state.json") is None


def test_too_little_healing_text_is_refused_by_the_engine_in_one_line(
    finished_run: tuple[Path, str], tmp_path: Path
) -> None:
    home, run_id = finished_run
    short = tmp_path / "short.txt"
    short.write_text("A few words of text.\n\nAnd a second document.\n", encoding="utf-8")
    proc = cli(
        "heal", run_id, "--heal-data", str(short), *HEAL_FLAGS, env={"GAPRUNE_HOME": str(home)}
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "has only" in errors[0] and "--heal-tokens" in errors[0], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    store = open_store(home, run_id)
    assert unfinished_heal(store) is None  # bad input is not offered for resume
    assert store.state == "finished" and not store.alive()
