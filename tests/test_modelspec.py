"""core.modelspec: spec resolution, config facts, dtype names and the bounded header readers.

The header readers are fed real files (safetensors written by the ``safetensors`` package, GGUFs by
the ``gguf`` package) and then truncated, random and hostile versions of them: every broken file is
a one-line ``ModelError`` naming the file, never an ``OverflowError``, ``MemoryError`` or a huge
allocation. The CLI test runs ``gaprune-tui run`` on a folder whose weights are random bytes.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hf_constants
from safetensors.numpy import save_file
from tiny_models import synthetic_gguf

from gaprune_tui.core import modelspec
from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ConfigError, ModelError
from gaprune_tui.core.modelinfo import inspect_model
from gaprune_tui.core.modelspec import (
    canonical_dtype,
    causal_architectures,
    checkpoint_dtype,
    first_line,
    folder_params,
    hub_id_of,
    layer_count,
    read_config,
    read_gguf_header,
    read_safetensors_header,
    resolve_spec,
    safetensors_header_bytes,
    safetensors_params,
)

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 4}


def _weights(path: Path, prefix: str = "w") -> Path:
    tensors = {
        f"{prefix}.weight": np.zeros((3, 5), dtype=np.float32),
        f"{prefix}.bias": np.zeros((7,), dtype=np.float32),
    }
    save_file(tensors, str(path))
    return path


def _folder(path: Path, weights: bytes | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    if weights is None:
        _weights(path / "model.safetensors")
    else:
        (path / "model.safetensors").write_bytes(weights)
    return path


def _gguf(path: Path) -> Path:
    return synthetic_gguf(path, tensor_data=False)


# ---- safetensors ------------------------------------------------------------------------------


def test_valid_safetensors_headers_and_sharded_params(tmp_path: Path) -> None:
    one = _weights(tmp_path / "model-00001-of-00002.safetensors", "a")
    two = _weights(tmp_path / "model-00002-of-00002.safetensors", "b")
    header = read_safetensors_header(one)
    assert header["a.weight"]["shape"] == [3, 5]
    assert safetensors_params([one, two]) == 44
    assert safetensors_params([one, one]) == 22  # a tensor named twice counts once
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert folder_params(tmp_path) == 44


def _hdr(header: bytes) -> bytes:
    """A safetensors prefix whose length is right, around ``header`` (no tensor data)."""
    return struct.pack("<Q", len(header)) + header


def _broken(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than the 8-byte header"),
        (b"\x01\x02\x03", "shorter than the 8-byte header"),
        (struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds the file's 10 bytes"),
        (struct.pack("<Q", 100) + b'{"a": 1}', "exceeds the file's 16 bytes"),
        (struct.pack("<Q", 4) + b"\xff\xfe{x", "header is not JSON"),
        (_hdr(b"[]"), "header is not a JSON object"),
        (_hdr(b'{"t": {"shape": "x"}}'), "tensor 't' has no valid shape"),
        (_hdr(b'{"t": {"shape": [-1, 2]}}'), "tensor 't' has no valid shape"),
    ],
)
def test_broken_safetensors_files_name_the_file(tmp_path: Path, data: bytes, why: str) -> None:
    path = _broken(tmp_path, "model.safetensors", data)
    with pytest.raises(ModelError) as err:
        safetensors_params([path])
    message = str(err.value)
    assert str(path) in message and why in message and "\n" not in message
    assert "replace it with a complete copy of the weights" in message


def test_random_and_truncated_safetensors(tmp_path: Path) -> None:
    rng = random.Random(9)
    for i in range(50):
        path = _broken(tmp_path, f"random{i}.safetensors", rng.randbytes(rng.randint(0, 4096)))
        with pytest.raises(ModelError, match="is not a valid safetensors file"):
            read_safetensors_header(path)
    good = _weights(tmp_path / "good.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", good[:8])
    for cut in range(0, 8 + length):  # every cut inside the header
        path = _broken(tmp_path, "cut.safetensors", good[:cut])
        with pytest.raises(ModelError, match=r"cut\.safetensors is not a valid safetensors"):
            read_safetensors_header(path)


def test_oversized_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A 200 MB sparse file whose header claims 150 MB: over the format's cap, never read."""
    path = tmp_path / "huge.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", 150 * 2**20))
        fh.truncate(200 * 2**20)
    with pytest.raises(ModelError, match="header length 157286400 is over 100 MB"):
        safetensors_header_bytes(path)


def test_model_folder_with_random_weights_is_a_model_error(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", weights=os.urandom(4096))
    with pytest.raises(ModelError, match=r"m/model\.safetensors is not a valid safetensors"):
        inspect_model(str(folder))


def test_cli_run_on_random_weights_exits_2_with_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "random-weights", weights=os.urandom(4096))
    proc = subprocess.run(
        [sys.executable, "-m", "gaprune_tui", "run", "--model", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ")
    assert str(folder / "model.safetensors") in lines[0]
    assert "is not a valid safetensors file" in lines[0]


# ---- GGUF -------------------------------------------------------------------------------------


def test_gguf_header(tmp_path: Path) -> None:
    header = read_gguf_header(_gguf(tmp_path / "ok.gguf"))
    assert (header.architecture, header.block_count, header.name) == ("llama", 3, "synthetic")
    assert header.n_params == 20 * 8 + 8 * 8


def test_truncated_gguf_headers(tmp_path: Path) -> None:
    good = _gguf(tmp_path / "ok.gguf").read_bytes()
    for cut in sorted({0, 3, 4, 8, 16, 24, *range(24, len(good) - 40, 7)}):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(good[:cut])
        with pytest.raises(ModelError, match=rf"cut{cut}\.gguf is not a readable GGUF file"):
            read_gguf_header(path)


def _gguf_prefix(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_gguf_prefix(0, 1) + struct.pack("<Q", 2**62), "truncated GGUF header"),
        (_gguf_prefix(0, 2**63), "truncated GGUF header"),
        (
            _gguf_prefix(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 2**60),
            "longer than the file",
        ),
        (
            _gguf_prefix(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**60),
            "longer than the file",
        ),
        (_gguf_prefix(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 2**31), "dimensions"),
        (_gguf_prefix(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77), "value type 77"),
        (
            _gguf_prefix(0, 1)
            + struct.pack("<Q", 1)
            + b"k"
            + struct.pack("<I", 9)
            + struct.pack("<IQ", 9, 1) * 5000,
            "nested more than 8 deep",
        ),
        (b"GGUF" + struct.pack("<I", 1), "version 1 is too old"),
        (b"NOPE" + bytes(64), "bad magic bytes"),
    ],
    ids=[
        "string",
        "kv-count",
        "array",
        "scalar-array",
        "dims",
        "vtype",
        "nesting",
        "version",
        "magic",
    ],
)
def test_hostile_gguf_headers(tmp_path: Path, body: bytes, why: str) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(body)
    with pytest.raises(ModelError, match="hostile.gguf is not a readable GGUF file") as err:
        read_gguf_header(path)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_random_gguf_files(tmp_path: Path) -> None:
    rng = random.Random(3)
    for i in range(30):
        path = tmp_path / f"r{i}.gguf"
        path.write_bytes(
            _gguf_prefix(rng.randint(0, 2**63), rng.randint(0, 2**63)) + rng.randbytes(500)
        )
        with pytest.raises(ModelError, match="is not a readable GGUF file"):
            read_gguf_header(path)


# ---- specs, configs, dtypes -------------------------------------------------------------------


def test_resolve_spec_kinds_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "my-model")
    assert resolve_spec(str(folder)) == modelspec.ModelSpec(
        str(folder), "folder", "my-model", folder.resolve()
    )
    gguf_file = _gguf(tmp_path / "small.gguf")
    assert resolve_spec(str(gguf_file)).kind == "gguf"
    assert resolve_spec(str(gguf_file)).name == "small"
    demo = resolve_spec("")
    assert (demo.kind, demo.name) == ("embedded", modelspec.EMBEDDED_NAME)
    assert demo.path == modelspec.embedded_gguf_path()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cases = {
        str(tmp_path / "missing"): "does not exist: check the path",
        str(tmp_path): "is not a model folder (no config.json)",
        str(folder / "config.json"): "is a file, not a model",
        "someorg/somemodel": "is not in the local Hugging Face cache",
    }
    for spec, fragment in cases.items():
        with pytest.raises(ModelError) as err:
            resolve_spec(spec)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert hub_id_of("demo") == modelspec.EMBEDDED_HUB_ID
    assert hub_id_of("someorg/somemodel") == "someorg/somemodel"
    assert hub_id_of(str(folder)) is None


def test_config_facts(tmp_path: Path) -> None:
    assert layer_count({"n_layer": 6}) == 6
    assert layer_count({"text_config": {"num_layers": 26}, "num_hidden_layers": True}) == 26
    assert layer_count({"num_hidden_layers": 0}) is None
    assert causal_architectures({"architectures": ["GPT2LMHeadModel"]}, "x") == ["GPT2LMHeadModel"]
    with pytest.raises(ModelError, match=r"x is not a causal language model \(architectures: Bert"):
        causal_architectures({"architectures": ["BertForMaskedLM"]}, "x")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="config.json is not a JSON object"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        read_config(tmp_path, ConfigError)


def test_dtype_names_are_one_list() -> None:
    assert [canonical_dtype(n) for n in ("bf16", "fp16", "half", "fp32", "float")] == [
        "bfloat16",
        "float16",
        "float16",
        "float32",
        "float32",
    ]
    assert canonical_dtype("auto") == "auto"
    assert RunConfig(dtype="bf16").validate().dtype == "bfloat16"
    with pytest.raises(ConfigError, match="dtype"):
        RunConfig(dtype="int4").validate()
    assert checkpoint_dtype({"torch_dtype": "bfloat16"}) == "bfloat16"
    assert checkpoint_dtype({"dtype": "int8"}) == "float32"


def test_first_line() -> None:
    assert first_line(ValueError("first.\nsecond")) == "first"
    assert first_line(KeyError()) == "KeyError"
