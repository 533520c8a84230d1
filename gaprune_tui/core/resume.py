"""What "resume" continues for a run: its unfinished heal, else its search.

``gaprune-tui resume`` (cli/main.py) and every screen that offers resume ask the same question:
a heal that was stopped, failed or killed before it finished (``core.heal.unfinished_heal``)
continues from its checkpoint, whatever state the search is in; otherwise a stopped, failed or
crashed search continues from its last generation. Nothing resumes while an engine is alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gaprune_tui.core import launch
from gaprune_tui.core.heal import unfinished_heal
from gaprune_tui.core.store import RunStore, can_resume


@dataclass(frozen=True)
class ResumeChoice:
    """The heal ``heal_id`` or the search."""

    kind: Literal["heal", "search"]
    heal_id: str | None = None

    @property
    def what(self) -> str:
        """How a message names it: ``heal partial-kd-1a2b3c4d`` or ``search``."""
        return f"heal {self.heal_id}" if self.kind == "heal" else "search"


def resume_choice(store: RunStore, alive: bool | None = None) -> ResumeChoice | None:
    """What ``resume`` would continue now, or None (an engine is alive, or nothing is left)."""
    if alive is None:
        alive = store.alive()
    if alive:
        return None
    heal = unfinished_heal(store)
    if heal is not None:
        return ResumeChoice("heal", heal)
    if can_resume(store.display_state(), alive):
        return ResumeChoice("search")
    return None


def start_resume(store: RunStore, choice: ResumeChoice) -> Any:
    """Start the engine on ``choice``: ``launch.heal_run`` or ``launch.resume_run`` (looked up
    when called, so a test may stand in for either)."""
    if choice.kind == "heal":
        assert choice.heal_id is not None
        return launch.heal_run(store, choice.heal_id)
    return launch.resume_run(store)
