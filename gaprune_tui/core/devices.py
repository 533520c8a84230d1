"""What compute this machine offers, found without importing torch (seconds of imports the UI and
the CLI cannot afford before their first frame or line).

The Setup screen uses it to scale the defaults of a CPU-only machine and the CLI to say which
defaults it picked; only the engine ever asks torch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
from pathlib import Path

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.modelspec import canonical_dtype

# What a CPU-only machine gets instead of the defaults, so the first search ends in minutes, chosen
# from bench/bench_vs_baselines.py (docs/search.md): greedy removal with multi-step selection
# (about 65 full evaluations to k = 8 on the embedded model), then EvoPress from the baselines for
# 10 generations of 16 children on 512 tokens and the best 2 on all 2,048 (about 60 more); a
# confirmation scaled with it. The 8 random starts cost 2 full evaluations (on 512 tokens) and
# never beat the baselines at depth, but a switch to a Pareto run (NSGA-II) needs a population.
CPU_DEFAULTS: dict[str, int] = {
    "population": 8,
    "generations": 10,
    "limit": 20,
    "finalists": 2,
    "confirm_limit": 100,
}
# What the device field accepts, for messages (``device_ok`` is the check).
DEVICE_HINT = "auto, cpu, mps, cuda or cuda:N"
NVIDIA_DRIVER = Path("/proc/driver/nvidia")


def gpu_available() -> bool:
    """Whether this machine has an NVIDIA GPU: ``nvidia-smi`` on PATH or the driver's /proc entry.

    ``GAPRUNE_ASSUME_GPU=1``/``0`` overrides the detection (tests, odd drivers); a count ``N``
    also says how many (``gpu_count``).
    """
    forced = os.environ.get("GAPRUNE_ASSUME_GPU")
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no")
    return shutil.which("nvidia-smi") is not None or NVIDIA_DRIVER.exists()


def gpu_count() -> int:
    """How many NVIDIA GPUs a run started here may use (the Setup screen offers ``--devices`` when
    more than one), still without torch: one folder per GPU under the driver's /proc entry, else
    the lines of ``nvidia-smi -L``; ``CUDA_VISIBLE_DEVICES`` narrows it as it narrows torch.

    ``GAPRUNE_ASSUME_GPU=N`` pins it (0: none; ``1``/``yes``: one). A GPU whose driver gives no
    count counts as one.
    """
    forced = os.environ.get("GAPRUNE_ASSUME_GPU", "").strip()
    if forced.isdigit():
        return int(forced)
    if not gpu_available():
        return 0
    if forced:
        return 1
    gpus = NVIDIA_DRIVER / "gpus"
    count = len(list(gpus.iterdir())) if gpus.is_dir() else _nvidia_smi_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return max(count, 0) if visible is not None else max(count, 1)


def _nvidia_smi_count() -> int:
    """GPUs listed by ``nvidia-smi -L`` (one ``GPU i: ...`` line each); 1 when it cannot tell."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def default_config() -> RunConfig:
    """The method's defaults, scaled down on a CPU-only machine (see ``CPU_DEFAULTS``)."""
    config = RunConfig()
    if not gpu_available():
        config = dataclasses.replace(config, **CPU_DEFAULTS)  # type: ignore[arg-type]
    return config


def device_ok(value: str) -> bool:
    """Whether ``value`` is a device ``RunConfig`` accepts (``auto``, ``cpu``, ``cuda:1``, ...)."""
    try:
        RunConfig(device=value.strip()).validate()
    except ConfigError:
        return False
    return True


def cuda_device_error(device: str, count: int) -> str | None:
    """Why ``--device`` ``device`` cannot be used on a machine with ``count`` CUDA devices (one
    line naming the fix), or None. The run's preflight asks with ``gpu_count()``, the engine with
    torch's count: one message either way."""
    value = device.strip().lower()
    if not value.startswith("cuda"):
        return None
    if count <= 0:
        return f"device {device} asked for but CUDA is not available here: use --device cpu or auto"
    _, _, index = value.partition(":")
    if index.isdigit() and int(index) >= count:
        return (
            f"device {device} does not exist (this machine has {count} CUDA devices): "
            f"use cuda:0..cuda:{count - 1}"
        )
    return None


def devices_error(devices: str, count: int) -> str | None:
    """Why ``--devices`` ``devices`` (``all`` or ``cuda:0,cuda:1``) cannot be used on a machine with
    ``count`` CUDA devices, or None: shared by the run's preflight and the engine, as above."""
    if count <= 0:
        if devices == "all":
            return "--devices all found no CUDA device: on a CPU use --workers N to split the cores"
        return (
            f"--devices {devices} asked for but CUDA is not available here: "
            "on a CPU use --workers N to split the cores"
        )
    for name in devices.split(","):
        _, _, index = name.strip().partition(":")
        if index.isdigit() and int(index) >= count:
            return (
                f"--devices names {name.strip()}, which does not exist (this machine has {count} "
                f"CUDA devices): use cuda:0..cuda:{count - 1}"
            )
    return None


# ---- bfloat16 on CPU ------------------------------------------------------------------------------
CPUINFO = Path("/proc/cpuinfo")
# Processor flags (Linux /proc/cpuinfo names) of native bfloat16 matmul: AVX512-BF16 and AMX.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# ``--dtype auto`` takes bfloat16 where it is native because bfloat16 scores hold their own contract
# (README, Performance; ``engine/flips.py`` measures it): per task, the fast scorer's bfloat16
# answers differ from its float32 answers on no more items than lm-eval's HFLM's own bfloat16
# answers do (one item of slack), and the KL fitness ranks genomes as in float32. Only float32
# scores are identical to HFLM's.
# NVIDIA compute capability from which bfloat16 matmuls are native (Ampere).
BF16_COMPUTE_CAPABILITY = 8.0


@dataclasses.dataclass(frozen=True)
class DtypeChoice:
    """What ``--dtype auto`` runs in and the one-line reason the log, result and screens show."""

    dtype: str
    reason: str


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bfloat16 flags (``BF16_CPU_FLAGS``) this CPU reports, from ``/proc/cpuinfo``.

    ``cpuinfo`` is that file's text (tests pass a fake one); an unreadable file (not Linux) counts
    as no flags, so the choice falls back to float32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
            break  # every core reports the same flags
    return [f for f in BF16_CPU_FLAGS if f in flags]


def auto_dtype(
    device_type: str, *, cuda_bf16: bool | None = None, cpuinfo: str | None = None
) -> DtypeChoice:
    """``--dtype auto``: bfloat16 where the hardware does it natively, float32 otherwise.

    ``device_type`` is torch's (``cpu``, ``cuda``, ``mps``). A CPU is native with one of
    ``BF16_CPU_FLAGS`` in ``cpuinfo`` (/proc/cpuinfo's text; read when None); a CUDA GPU when
    ``cuda_bf16`` says so (the engine asks torch; ``None``: not known yet, the dtype is then
    ``"auto"``, which only the Setup screen's prediction can be). Anything else runs float32.
    """
    if device_type == "cpu":
        flags = cpu_bf16_flags(cpuinfo)
        if flags:
            return DtypeChoice("bfloat16", f"bfloat16: native on this CPU ({'/'.join(flags)})")
        return DtypeChoice("float32", "float32: no native bfloat16 on this CPU")
    if device_type == "cuda":
        if cuda_bf16 is None:
            return DtypeChoice("auto", "bfloat16 if the GPU does it natively, else float32")
        if cuda_bf16:
            return DtypeChoice("bfloat16", "bfloat16: native on this GPU")
        return DtypeChoice("float32", "float32: no native bfloat16 on this GPU")
    return DtypeChoice("float32", f"float32: no native bfloat16 known on {device_type}")


@functools.cache
def gpu_bf16_native() -> bool | None:
    """Whether every NVIDIA GPU here does bfloat16 natively (compute capability >= 8.0), from
    ``nvidia-smi`` (no torch), asked once per process; None when it cannot tell."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        caps = [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(caps) >= BF16_COMPUTE_CAPABILITY if caps else None


def cpu_bf16_reason(cpuinfo: str | None = None) -> str:
    """The reason recorded when ``--dtype bfloat16`` is asked for on a CPU (logged as a warning
    where it is emulated: correct, within the contract, but slower than float32)."""
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return f"bfloat16: asked for, native on this CPU ({'/'.join(flags)})"
    return "bfloat16: asked for, emulated on this CPU (no native support: slower than float32)"


def expected_dtype(dtype: str, device: str, cpuinfo: str | None = None) -> DtypeChoice:
    """What the engine will run in, predicted without torch (the Setup screen's model line).

    Mirrors ``engine.model.choose_dtype``; on a GPU ``auto`` asks ``nvidia-smi``
    (``gpu_bf16_native``), and is ``"auto"`` when that cannot tell.
    """
    value = canonical_dtype((dtype or "auto").strip().lower())
    where = (device or "auto").strip().lower()
    on_cpu = where == "cpu" or (where == "auto" and not gpu_available())
    if value == "auto":
        if on_cpu:
            return auto_dtype("cpu", cpuinfo=cpuinfo)
        if where == "auto" or where.startswith("cuda"):
            return auto_dtype("cuda", cuda_bf16=gpu_bf16_native())
        return auto_dtype(where.partition(":")[0])
    if value == "bfloat16" and on_cpu:
        return DtypeChoice(value, cpu_bf16_reason(cpuinfo))
    return DtypeChoice(value, f"{value}: asked for")
