"""User-facing errors.

Every error a user can cause by bad input is a ``GapruneError`` whose message is one line that
names the problem and the fix. The CLI prints it and exits 2; the TUI shows it. Anything else is a
bug and keeps its traceback.
"""


class GapruneError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(GapruneError):
    """An invalid run configuration (flag, TOML key or form field)."""


class ModelError(GapruneError):
    """A model that cannot be found, loaded or pruned."""


class TaskError(GapruneError):
    """An unknown task or metric, or a task whose data cannot be had offline."""


class StoreError(GapruneError):
    """A run store that cannot be created, found or continued."""


class DamagedRunError(StoreError):
    """A run folder whose ``run.db``, ``config.toml`` or ``result.json`` cannot be read.
    ``problem`` is what is wrong, without the run and the advice around it."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


class ExportError(GapruneError):
    """An export that cannot be started or did not verify."""
