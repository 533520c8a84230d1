"""Export through MergeKit on tiny real models: exact logits, KV-cache generate, sliced configs,
atomic writes, and ``export_run`` on a real run store scored with the real tasks and scorer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cores import cores
from scored_runs import ScoredRun, score_tasks, tiny_run_config
from tiny_models import build_families

from gaprune_tui.core.errors import ExportError
from gaprune_tui.core.store import Evaluation, RunStore
from gaprune_tui.engine.export import (
    FAILED_FILE,
    check_target,
    contiguous_runs,
    export_genome,
    export_run,
    partial_dir,
)
from gaprune_tui.engine.layers import LayerView

torch.set_num_threads(cores())

KEPT = [0, 1, 3, 5]  # drops 2 and 4: three slices
PROMPT = "The quick brown fox jumps over the lazy dog and"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_families(tmp_path_factory.mktemp("tiny-src"))


@pytest.fixture(scope="module")
def exported(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-exports")
    return {
        family: export_genome(src, KEPT, root / family, dtype=None) for family, src in tiny.items()
    }


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_card_front_matter_is_yaml_whatever_the_names(tmp_path: Path) -> None:
    """A hub id or license with YAML syntax in it stays a plain string in the front matter."""
    import yaml

    from gaprune_tui.engine.export.card import front_matter

    base = {"hub_id": 'org/model: "x"\n- y', "license": "apache-2.0 # not a comment"}
    text = front_matter(base)
    assert text.startswith("---\n") and text.endswith("\n---")
    meta = yaml.safe_load(text.strip("-\n"))
    assert meta["base_model"] == base["hub_id"] and meta["license"] == base["license"]
    assert meta["tags"] == ["gaprune-tui", "mergekit", "layer-pruning", "passthrough"]
    assert "base_model" not in yaml.safe_load(front_matter({}).strip("-\n"))


def test_contiguous_runs() -> None:
    assert contiguous_runs([0, 1, 3, 4, 5, 9]) == [(0, 2), (3, 6), (9, 10)]
    assert contiguous_runs([2]) == [(2, 3)]


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt2"])
def test_export_matches_the_layer_view(
    family: str, tiny: dict[str, Path], exported: dict[str, Path]
) -> None:
    out = exported[family]
    base, tok = _load(tiny[family])
    pruned, pruned_tok = _load(out)
    view = LayerView(base)
    view.apply(KEPT)
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    assert torch.equal(pruned_tok(PROMPT, return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        expected = base(ids).logits
        got = pruned(ids).logits
    assert torch.equal(got, expected)  # fp32: bit-identical

    gen_kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=True)
    with torch.no_grad():
        from_export = pruned.generate(ids, attention_mask=torch.ones_like(ids), **gen_kwargs)
        from_view = base.generate(ids, attention_mask=torch.ones_like(ids), **gen_kwargs)
    assert from_export.shape[1] == ids.shape[1] + 8
    assert torch.equal(from_export, from_view)

    config = json.loads((out / "config.json").read_text())
    assert config["n_layer" if family == "gpt2" else "num_hidden_layers"] == len(KEPT)
    assert pruned.config.num_hidden_layers == len(KEPT)
    if family == "qwen3":
        base_types = json.loads((tiny[family] / "config.json").read_text())["layer_types"]
        assert config["layer_types"] == [base_types[i] for i in KEPT]
        assert len(set(config["layer_types"])) == 2  # both kinds survive the slicing
    yaml_text = (out / "mergekit_config.yml").read_text()
    assert "passthrough" in yaml_text and str(tiny[family]) in yaml_text
    assert "layer_range: [3, 4]" in yaml_text and "layer_range: [5, 6]" in yaml_text
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_mergekit_hook_is_restored_after_export(exported: dict[str, Path]) -> None:
    import mergekit.merge as mk

    assert mk._model_out_config.__module__ == "mergekit.merge"


def test_bfloat16_export_is_cast_and_loads(tiny: dict[str, Path], tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []  # progress(stage, message): always given the stage
    out = export_genome(
        tiny["qwen3"],
        KEPT,
        tmp_path / "bf16",
        dtype="bfloat16",
        progress=lambda stage, message: seen.append((stage, message)),
    )
    assert any(s == "merge" and "3 slices (bfloat16)" in m for s, m in seen)
    assert ("merge", "sliced per-layer config fields: layer_types") in seen
    assert seen[-1] == ("done", f"wrote {out}")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_refuses_a_non_empty_target_unless_forced(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists and is not empty: pass --force"):
        export_genome(tiny["llama"], KEPT, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".taken.partial-*"))

    export_genome(tiny["llama"], KEPT, out, force=True)
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    export_genome(tiny["llama"], KEPT, empty)
    assert (empty / "model.safetensors").is_file()


def test_never_replaces_the_base_model(tiny: dict[str, Path]) -> None:
    with pytest.raises(ExportError, match="would replace"):
        check_target(tiny["llama"].parent, True, protect=[tiny["llama"]])


def test_bad_genomes_are_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(ExportError, match="not distinct indices of the 6-layer model"):
        export_genome(tiny["llama"], [0, 7], work / "x")
    with pytest.raises(ExportError, match="keeps no layer"):
        export_genome(tiny["llama"], [], work / "x")
    with pytest.raises(ExportError, match="unknown export dtype"):
        export_genome(tiny["llama"], KEPT, work / "x", dtype="int8")
    assert not work.exists()


@pytest.mark.parametrize("error", [RuntimeError("No space left on device"), KeyboardInterrupt()])
def test_interrupted_export_leaves_the_target_untouched(
    error: BaseException, tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is injected inside MergeKit after the weights and tokenizer are written."""
    import mergekit.merge as mk

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(mk, "_copy_tagalong_files", fail)
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else ExportError
    with pytest.raises(expected) as info:
        export_genome(tiny["llama"], KEPT, out, force=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    failed = list(tmp_path.glob("model.failed-*"))
    assert len(failed) == 1
    assert (failed[0] / "model.safetensors").is_file()  # it had written something
    reason = (failed[0] / FAILED_FILE).read_text()
    assert "left untouched" in reason
    if expected is ExportError:
        assert "No space left on device" in reason
        assert "No space left on device" in str(info.value) and str(failed[0]) in str(info.value)
        assert "\n" not in str(info.value)
    else:
        assert "interrupted" in reason
    assert not list(tmp_path.glob(".model.partial-*"))


def test_killed_export_leaves_a_recognisable_partial_folder(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from gaprune_tui.engine.export import export_genome
        def die(folder):
            os.kill(os.getpid(), signal.SIGKILL)
        export_genome(Path({str(tiny["llama"])!r}), {KEPT!r}, Path({str(out)!r}), finalize=die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists()
    partials = list(tmp_path.glob(".killed.partial-*"))
    assert len(partials) == 1 and (partials[0] / "model.safetensors").is_file()
    assert partial_dir(out).name.startswith(".killed.partial-")


# ---------------------------------------------------------------------------------------------
# export_run on a real run store


@pytest.fixture(scope="module")
def scored_run_data(tiny: dict[str, Path]) -> ScoredRun:
    """Real scores of a few genomes of the tiny Llama on a bundled task, computed once."""
    return score_tasks(tiny_run_config(tiny["llama"]), [[2, 4], [3, 5], [1, 2]])


def _make_run(data: ScoredRun, *, corrupt: bool = False, base_event: bool = True) -> RunStore:
    store = data.store(base_event=base_event, fitness_offset=0.5 if corrupt else 0.0)
    # A screening-fidelity row never counts as a ranked genome.
    store.add_evaluation(Evaluation(0, [0, 1], [2, 3, 4, 5], 9.0, {}, 0.1, False, "screen:2"))
    return store


@pytest.fixture
def run_store(scored_run_data: ScoredRun) -> RunStore:
    """A fresh run store of the scored genomes, with the base model's scores."""
    return _make_run(scored_run_data)


def test_export_run_verifies_and_documents(scored_run_data: ScoredRun, tmp_path: Path) -> None:
    store = _make_run(scored_run_data)
    ranked = store.best_evaluations()
    lines: list[tuple[str, str]] = []
    result = export_run(store.id, progress=lambda stage, msg: lines.append((stage, msg)))
    best = ranked[0]
    assert result.plan.dropped == best.dropped and result.plan.rank == 1
    assert result.path == (
        store.path / "exports" / f"rank1-drop-{best.dropped[0]}-{best.dropped[1]}"
    )
    assert result.verified is True
    ver = result.verification
    assert ver is not None and ver.logits_max_abs_diff == 0.0 and ver.generate_matches_view
    assert ver.fitness_export == pytest.approx(best.fitness, abs=1e-12) and ver.fitness_required
    assert ver.scores_export == best.scores
    task = best.scores["hellaswag_offline"]  # verified with standard errors and counts stored
    assert f"{next(iter(task))}_stderr" in task and task["n"] == 6
    assert result.params_after < result.params_before
    stages = [s for s, _ in lines]
    for stage in ("select", "load", "reference", "merge", "verify", "rescore", "card", "done"):
        assert stage in stages

    lineage = json.loads((result.path / "gaprune.json").read_text())
    assert lineage["dropped_layers"] == best.dropped and lineage["verified"] is True
    assert lineage["scores"]["base"] == scored_run_data.base
    assert lineage["run"]["id"] == store.id and lineage["run"]["evaluated_genomes"] == 3
    card = (result.path / "README.md").read_text()
    assert f"Dropped layers | {best.dropped[0]}, {best.dropped[1]}" in card
    assert "**Passed**" in card and "max |diff| = 0" in card
    assert "gaprune-tui run --model" in card and "--tasks hellaswag_offline" in card
    assert "gaprune-tui export RUN_ID" in card and "% removed" in card
    assert (result.path / "gaprune-run-config.toml").is_file()
    finished = [e for e in store.events() if e.kind == "export_finished"]
    assert finished and finished[-1].payload["verified"] is True

    with pytest.raises(ExportError, match="already exists"):
        export_run(store.id, verify=False)

    # Rank 2 without verification and no base_scores event: still a complete card.
    plain = export_run(store.id, rank=2, out=tmp_path / "r2", verify=False)
    assert plain.verified is None and plain.plan.dropped == ranked[1].dropped
    assert "Not run (exported with `--no-verify`)" in (plain.path / "README.md").read_text()


def test_export_run_computes_base_scores_when_the_run_lacks_them(
    scored_run_data: ScoredRun, tmp_path: Path
) -> None:
    store = _make_run(scored_run_data, base_event=False)
    result = export_run(store.id, rank=3, out=tmp_path / "r3")
    assert result.verified is True
    assert result.lineage["scores"]["base"] == scored_run_data.base


def test_export_run_refuses_when_the_fitness_does_not_reproduce(
    scored_run_data: ScoredRun, tmp_path: Path
) -> None:
    store = _make_run(scored_run_data, corrupt=True)
    out = tmp_path / "bad"
    with pytest.raises(ExportError, match="verification failed: NOT verified") as info:
        export_run(store.id, out=out)
    assert "\n" not in str(info.value)
    assert not out.exists()
    failed = list(tmp_path.glob("bad.failed-*"))
    assert len(failed) == 1 and "fitness differs" in (failed[0] / FAILED_FILE).read_text()
    assert any(e.kind == "export_failed" for e in store.events())


def test_bad_rank_and_unknown_run(scored_run_data: ScoredRun) -> None:
    store = _make_run(scored_run_data)
    with pytest.raises(
        ExportError, match=rf"run {store.id} has only 3 evaluated genomes: use --rank 1..3"
    ):
        export_run(store.id, rank=4)
    with pytest.raises(ExportError, match="use --rank 1..3"):
        export_run(store.id, rank=0)
    with pytest.raises(ExportError, match="no run 'nope'"):
        export_run("nope")
    empty = RunStore.create(scored_run_data.config)
    with pytest.raises(ExportError, match="no fully evaluated genome yet"):
        export_run(empty.id)


def test_cli_export_json_progress_and_errors(
    run_store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gaprune_tui.cli.main import main

    code = main(
        ["export", run_store.id, "--no-verify", "--out", str(tmp_path / "e"), "--progress-json"]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all("stage" in r for r in rows[:-1]) and rows[-1]["done"] is True
    assert rows[-1]["path"] == str(tmp_path / "e") and rows[-1]["verified"] is None

    assert main(["export", run_store.id, "--rank", "9"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: run {run_store.id} has only 3 evaluated genomes: use --rank 1..3"

    assert main(["export", "nope", "--progress-json"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["error"].startswith("no run 'nope'")


def test_bfloat16_export_run_is_exact_against_a_bfloat16_view(
    run_store: RunStore, tmp_path: Path
) -> None:
    result = export_run(run_store.id, out=tmp_path / "bf16", dtype="bfloat16")
    ver = result.verification
    assert ver is not None and result.verified is True
    assert ver.dtype == "bfloat16" and ver.search_dtype == "float32"
    assert ver.logits_max_abs_diff == 0.0 and ver.generate_matches_view
    assert ver.fitness_required is False  # the search scored in float32: reported, not required
    assert "informational" in ver.summary()


def test_a_tokenizer_mergekit_failed_to_copy_fails_the_export(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MergeKit logs a failed tokenizer copy and carries on; we refuse the tokenizer-less model."""
    import mergekit.merge as mk

    def fail(*args, **kwargs):
        raise OSError("tokenizer.json: permission denied")

    monkeypatch.setattr(mk, "_copy_tokenizer", fail)
    with pytest.raises(ExportError, match="MergeKit wrote no tokenizer"):
        export_genome(tiny["gpt2"], KEPT, tmp_path / "notok")
    assert not (tmp_path / "notok").exists()
    assert len(list(tmp_path.glob("notok.failed-*"))) == 1


def test_cli_export_below_a_regular_file_is_one_line_before_any_work(
    run_store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gaprune_tui.cli.main import main

    work = tmp_path / "work"  # tmp_path also holds the test's GAPRUNE_HOME
    work.mkdir()
    blocker = work / "notes.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "deeper" / "export"
    assert main(["export", run_store.id, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: export folder {out} cannot be created: {blocker} is a file, not a folder; "
        "choose another --out folder"
    )
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]  # no partial, no failed
    with pytest.raises(ExportError, match="is a file, not a folder"):
        check_target(blocker / "x", force=True)
