"""Everything a run names, checked before the run is created.

A typo in a held-out task used to surface at confirmation, after the whole search; a device this
machine lacks, once a worker had started. ``check_run`` looks at every task name (the fitness
tasks, which confirmation reuses, and the held-out ones) and at ``--device``/``--devices`` in
milliseconds and without torch or lm-eval, so the CLI and the Setup screen refuse such a run with
one line before its folder exists. (A Ray address is contacted by ``RunConfig.validate``, with a
bounded handshake.)

The engine runs the same checks when it sets a run up (``engine/setup.py``), with torch's device
count, and its task loading asks ``tasknames.task_name_error`` first: a name refused here is
refused there with the same line, so the two cannot disagree.
"""

from __future__ import annotations

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.devices import cuda_device_error, devices_error, gpu_count
from gaprune_tui.core.errors import ConfigError, TaskError
from gaprune_tui.core.tasknames import task_name_error


def task_names(config: RunConfig) -> list[str]:
    """Every task the run will load: its fitness tasks (confirmation scores them again) and, when
    it confirms finalists, its held-out tasks."""
    names = [t.name for t in config.tasks]
    if config.finalists > 0:
        names += [n for n in config.holdout if n not in names]
    return names


def check_tasks(config: RunConfig) -> None:
    """``TaskError`` naming the first task no YAML declares (or whose offline data is missing)."""
    holdout = set(config.holdout) - {t.name for t in config.tasks}
    for name in task_names(config):
        error = task_name_error(name, config.include_path)
        if error is not None:
            if name in holdout:
                error = f"held-out tasks: {error}"
            raise TaskError(error)


def check_devices(config: RunConfig, cuda_count: int) -> None:
    """``ConfigError`` for a ``--device`` or ``--devices`` this machine does not have."""
    error = cuda_device_error(config.device, cuda_count)
    if error is None and config.devices:
        error = devices_error(config.devices, cuda_count)
    if error is not None:
        raise ConfigError(error)


def check_run(config: RunConfig, *, cuda_count: int | None = None) -> None:
    """Every check above; ``cuda_count`` defaults to ``devices.gpu_count()`` (no torch)."""
    check_tasks(config)
    check_devices(config, gpu_count() if cuda_count is None else cuda_count)
