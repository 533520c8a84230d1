"""What compute this machine offers, found without importing torch (seconds of imports the UI and
the CLI cannot afford before their first frame or line).

The Setup screen uses it to scale the defaults of a CPU-only machine and the CLI to say which
defaults it picked; only the engine ever asks torch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import ConfigError

# What a CPU-only machine gets instead of the method's defaults, so the first search ends in minutes.
CPU_DEFAULTS: dict[str, int] = {"population": 8, "generations": 3, "limit": 20}
# What the device field accepts, for messages (``device_ok`` is the check).
DEVICE_HINT = "auto, cpu, mps, cuda or cuda:N"
NVIDIA_DRIVER = Path("/proc/driver/nvidia")


def gpu_available() -> bool:
    """Whether this machine has an NVIDIA GPU: ``nvidia-smi`` on PATH or the driver's /proc entry.

    ``GAPRUNE_ASSUME_GPU=1``/``0`` overrides the detection (tests, odd drivers).
    """
    forced = os.environ.get("GAPRUNE_ASSUME_GPU")
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no")
    return shutil.which("nvidia-smi") is not None or NVIDIA_DRIVER.exists()


def default_config() -> RunConfig:
    """The method's defaults, scaled down on a CPU-only machine (see ``CPU_DEFAULTS``)."""
    config = RunConfig()
    if not gpu_available():
        config = dataclasses.replace(
            config,
            population=CPU_DEFAULTS["population"],
            generations=CPU_DEFAULTS["generations"],
            limit=CPU_DEFAULTS["limit"],
        )
    return config


def device_ok(value: str) -> bool:
    """Whether ``value`` is a device ``RunConfig`` accepts (``auto``, ``cpu``, ``cuda:1``, ...)."""
    try:
        RunConfig(device=value.strip()).validate()
    except ConfigError:
        return False
    return True
