"""What a heal is asked to do: one dataclass shared by the CLI, the TUI and the engine.

A heal trains a pruned genome of a finished (or stopped) run to recover what its dropped layers
took (``engine/heal.py`` does the training). This module stays light (stdlib only): the TUI
imports it, and bad input is refused here in milliseconds, before any process starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import ConfigError

METHOD_CHOICES = ("partial", "lora")
OBJECTIVE_CHOICES = ("kd", "ce")
# "lora" (the default): LoRA adapters on every kept layer's linear modules (peft), merged at
# export; "partial": the LM head, the final norm and the last ``train_layers`` kept layers are
# trained (copies: the base model stays intact). LoRA is the default because bench/bench_heal.py
# measured it better on KL at equal tokens on the embedded model (k = 8, 32,768 tokens: 0.882
# against 0.929, paired difference 0.048 ± 0.004; held-out within noise of each other) and it keeps
# a tied model's size (a trained tied head is untied: +28M parameters on SmolLM2-135M).
DEFAULT_METHOD = "lora"
DEFAULT_OBJECTIVE = "kd"
# Tokens of healing text: a CPU heal of the embedded model trains ~150 tokens/s on 2 cores
# (bench/bench_heal.py), so the CPU default ends in minutes; a GPU default reads more.
CPU_TOKENS = 32_768
GPU_TOKENS = 1_048_576
LORA_RANK_MAX = 1024
HEAL_DATA_USAGE = "use 'offline', a .txt or .jsonl file, or hf:NAME[:CONFIG][:SPLIT]"


def default_tokens(device: str) -> int:
    """The token budget a heal gets on ``device`` (``cpu``, ``cuda:0``, ...) unless told."""
    return CPU_TOKENS if str(device).startswith("cpu") else GPU_TOKENS


@dataclass
class HealConfig:
    """Everything that decides a heal's result (recorded with it)."""

    method: str = DEFAULT_METHOD
    objective: str = DEFAULT_OBJECTIVE
    data: str = "offline"
    tokens: int = CPU_TOKENS
    seq_len: int = 128
    batch_size: int = 8  # sequences per optimizer step
    train_layers: int = 3  # partial: the last N kept layers (with the LM head and final norm)
    lora_rank: int = 8
    lora_alpha: int = 16
    lr: float | None = None  # None: 1e-4 for partial, 2e-4 for lora
    warmup: float = 0.1  # fraction of the steps with a linear warm-up, then cosine to 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 20  # optimizer steps between checkpoints (and one at the end)
    gradient_checkpointing: str = "auto"  # auto | on | off

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 2e-4 if self.method == "lora" else 1e-4

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size

    @property
    def steps(self) -> int:
        """Optimizer steps the token budget buys (at least one)."""
        return max(1, self.tokens // self.tokens_per_step)

    def validate(self) -> HealConfig:
        """Check every field; raise a one-line ``ConfigError`` naming the flag and the fix."""
        if self.method not in METHOD_CHOICES:
            raise ConfigError(
                f"unknown heal method {self.method!r}: use --method {' or '.join(METHOD_CHOICES)}"
            )
        if self.objective not in OBJECTIVE_CHOICES:
            raise ConfigError(
                f"unknown heal objective {self.objective!r}: use --objective kd (distil the base "
                "model) or ce (next-token cross-entropy)"
            )
        _int("heal-tokens", self.tokens, 1, "tokens of healing text, for example 32768")
        _int("heal-seq-len", self.seq_len, 2, "tokens per training sequence")
        _int("heal-batch", self.batch_size, 1, "sequences per optimizer step")
        if self.tokens < self.tokens_per_step:
            raise ConfigError(
                f"--heal-tokens {self.tokens} is less than one step of {self.batch_size} x "
                f"{self.seq_len} tokens: give at least {self.tokens_per_step}"
            )
        _int("train-layers", self.train_layers, 1, "kept layers trained by --method partial")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
            raise ConfigError(f"--lora-rank must be a whole number, got {self.lora_rank!r}")
        if not 1 <= self.lora_rank <= LORA_RANK_MAX:
            raise ConfigError(
                f"--lora-rank {self.lora_rank} is out of range: use 1 to {LORA_RANK_MAX} (8 is usual)"
            )
        _int("lora-alpha", self.lora_alpha, 1, "LoRA's scaling numerator")
        if self.lr is not None and not (0 < float(self.lr) < 1):
            raise ConfigError(f"--lr must be between 0 and 1, got {self.lr!r}")
        if not 0 <= float(self.warmup) < 1:
            raise ConfigError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if float(self.weight_decay) < 0 or float(self.max_grad_norm) <= 0:
            raise ConfigError("--weight-decay must be >= 0 and the gradient clip > 0")
        _int("seed", self.seed, 0, "the heal's random seed")
        _int("checkpoint-every", self.checkpoint_every, 1, "optimizer steps between checkpoints")
        if self.gradient_checkpointing not in ("auto", "on", "off"):
            raise ConfigError("--gradient-checkpointing must be auto, on or off")
        check_data(self.data)
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HealConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_data(spec: str) -> None:
    """A heal data spec that cannot work is refused now: an unknown form, a missing or empty file."""
    text = (spec or "").strip()
    if text in ("", "offline"):
        return
    if text.startswith("hf:"):
        if not text[3:].split(":")[0]:
            raise ConfigError(f"bad heal data {spec!r}: write it as hf:NAME[:CONFIG][:SPLIT]")
        return
    path = Path(text).expanduser()
    if path.suffix.lower() not in (".txt", ".jsonl"):
        raise ConfigError(f"unknown heal data {spec!r}: {HEAL_DATA_USAGE}")
    if not path.is_file():
        raise ConfigError(f"heal data file {path} not found: {HEAL_DATA_USAGE}")
    if not path.read_bytes().strip():
        raise ConfigError(f"heal data file {path} is empty: give a file with text in it")


def _int(flag: str, value: Any, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"--{flag} must be a whole number >= {low} ({what}), got {value!r}")


def heal_id(config: HealConfig, dropped: list[int]) -> str:
    """A short stable name for a heal of ``dropped`` with ``config`` (its folder under heals/)."""
    import hashlib

    payload = json.dumps({"dropped": sorted(dropped), **config.to_json()}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return f"{config.method}-{config.objective}-{digest}"


# ---- a run's heals on disk: heals/ID/{request,state,before,heal}.json, weights.safetensors ------
REQUEST_FILE = "request.json"
STATE_FILE = "state.json"
BEFORE_FILE = "before.json"
RECORD_FILE = "heal.json"


def heals_dir(run_path: Any) -> Path:
    """A run's heals folder (``run_path`` is the run folder or a ``RunStore``)."""
    return Path(getattr(run_path, "path", run_path)) / "heals"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half of it)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_request(
    run_path: Any, config: HealConfig, dropped: list[int], rank: int, run_state: str
) -> str:
    """Create ``heals/ID/request.json`` for a heal the engine will run; returns ID. A request
    for a heal that already finished with the same settings starts it afresh."""
    run_config = getattr(run_path, "config", None)
    if callable(run_config) and run_config().granularity == "sublayer":
        raise ConfigError(
            "healing covers whole-layer runs, and this run drops attention and MLP sub-blocks: "
            "export its pick unhealed, or heal a --granularity layer run"
        )
    hid = heal_id(config, dropped)
    folder = heals_dir(run_path) / hid
    folder.mkdir(parents=True, exist_ok=True)
    state = read_json(folder / STATE_FILE)
    if state is not None and state.get("state") == "finished":
        for name in (STATE_FILE, "checkpoint.pt", BEFORE_FILE, RECORD_FILE):
            (folder / name).unlink(missing_ok=True)
    request = {
        "config": config.to_json(),
        "dropped": sorted(int(i) for i in dropped),
        "rank": rank,
        "run_state": run_state,
        "created": time.time(),
    }
    write_json(folder / REQUEST_FILE, request)
    return hid


def unfinished_heal(run_path: Any) -> str | None:
    """The newest heal that was stopped, failed or killed before it finished, if any:
    ``gaprune-tui resume`` continues it from its checkpoint."""
    folder = heals_dir(run_path)
    if not folder.is_dir():
        return None
    found = []
    for sub in folder.iterdir():
        state = read_json(sub / STATE_FILE)
        if state is not None and state.get("state") in ("running", "stopped", "failed"):
            found.append((float(state.get("updated", 0.0)), sub.name))
    return max(found)[1] if found else None
