"""The MergeKit recipe saved beside an export runs anywhere (issue 20): it names the base model by
its hub id where one is known, keeps the local folder it was built from as a comment, and
``mergekit-yaml`` on it rebuilds the same weights where the hub model can be had.

"Where the hub model can be had" is a Hugging Face cache here (tests never touch the network): a
tiny model is put in the hub cache layout (``models--ORG--NAME/snapshots/REV`` with ``refs/main``).
MergeKit 0.1.5 lists a hub repository's files online before it reads its cache, so offline the test
resolves the recipe's hub id through that cache itself (``snapshot_download(local_files_only=True)``,
what ``huggingface_hub`` does for every offline user) and hands ``mergekit-yaml`` the recipe with
the id replaced by the cached snapshot: every other line of the recipe is run as written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_models import build_tiny

from gaprune_tui.core.modelspec import EMBEDDED_HUB_ID
from gaprune_tui.engine.export import MERGEKIT_FILE, export_genome
from gaprune_tui.engine.export.mergekit import recipe_hub_id, recipe_yaml

KEPT = [0, 1, 3, 5]
REPO = "local-org/tiny-llama"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_copy(source: Path, cache: Path, repo: str = REPO) -> Path:
    """``source`` as a snapshot of ``repo`` in a hub cache at ``cache``; returns the snapshot."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / REVISION
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REVISION, encoding="utf-8")
    return snapshot


def tensors(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def test_recipe_names_the_hub_model_and_mergekit_yaml_rebuilds_the_same_weights(
    tmp_path: Path,
) -> None:
    import torch

    cache = tmp_path / "hub"
    snapshot = hub_cache_copy(build_tiny("llama", tmp_path / "src"), cache)
    out = export_genome(snapshot, KEPT, tmp_path / "export", dtype=None)

    text = (out / MERGEKIT_FILE).read_text(encoding="utf-8")
    recipe = yaml.safe_load(text)
    models = {src["model"] for s in recipe["slices"] for src in s["sources"]}
    assert models == {REPO}
    assert f"# Built from the local copy {snapshot}" in text
    assert str(snapshot) not in yaml.safe_dump(recipe)  # only in the comment

    from huggingface_hub import snapshot_download

    resolved = snapshot_download(REPO, cache_dir=cache, local_files_only=True)
    assert Path(resolved).resolve() == snapshot.resolve()
    assert text.count(f"model: {REPO}") == len(recipe["slices"])
    offline = tmp_path / "recipe-offline.yml"
    offline.write_text(text.replace(f"model: {REPO}", f"model: {resolved}"), encoding="utf-8")

    rebuilt = tmp_path / "rebuilt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cli = Path(sys.executable).with_name("mergekit-yaml")
    proc = subprocess.run(
        [str(cli), str(offline), str(rebuilt), "--copy-tokenizer"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, theirs = tensors(out), tensors(rebuilt)
    assert ours and sorted(ours) == sorted(theirs)
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name  # type: ignore[arg-type]
    config = json.loads((rebuilt / "config.json").read_text())
    assert config["num_hidden_layers"] == len(KEPT)


def test_hub_id_from_spec_cache_folder_or_saved_config(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    assert recipe_hub_id(folder, {}, "demo") == EMBEDDED_HUB_ID
    assert recipe_hub_id(folder, {}, "some-org/some-model") == "some-org/some-model"
    assert recipe_hub_id(folder, {"_name_or_path": "org/saved-from"}) == "org/saved-from"
    # A local path in _name_or_path, or nothing at all: the folder is all the recipe can name.
    assert recipe_hub_id(folder, {"_name_or_path": str(folder)}) is None
    assert recipe_hub_id(folder, {}, str(folder)) is None
    snapshot = tmp_path / "cache" / "models--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert recipe_hub_id(snapshot, {}) == "org/name"


@pytest.mark.parametrize("gguf", [False, True])
def test_recipe_text_keeps_the_local_folder_as_a_comment(tmp_path: Path, gguf: bool) -> None:
    if gguf:
        (tmp_path / "gaprune-origin.json").write_text("{}", encoding="utf-8")
    text = recipe_yaml(tmp_path, KEPT, "bfloat16", EMBEDDED_HUB_ID)
    assert yaml.safe_load(text)["slices"][0]["sources"][0]["model"] == EMBEDDED_HUB_ID
    assert f"# Built from the local copy {tmp_path}" in text
    assert ("converted from a quantized GGUF" in text) is gguf
    local = yaml.safe_load(recipe_yaml(tmp_path, KEPT, "bfloat16", None))
    assert local["slices"][0]["sources"][0]["model"] == str(tmp_path)
