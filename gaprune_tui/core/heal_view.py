"""Follow a run's heals from the UI side: the ``heal_*`` events folded into one ``HealProgress``
per heal, as ``follow.Follower`` folds the search's events into a ``RunView``.

A heal writes ``HealMeasured`` (before), ``HealStarted``, one ``HealStep`` per optimizer step,
``HealMeasured`` (after) and ``HealFinished`` (``engine/heal_job.py``); a resumed heal repeats the
first two with ``from_step`` set and re-reports the steps after its checkpoint. ``HealWatch``
reads only the events written since its last poll. Pure Python over the store (no textual), so
the folding is unit-tested without an app; the short texts a heal is shown with (its label, a
measurement's line) live here too, so every screen words them the same. Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gaprune_tui.core import format as fmt
from gaprune_tui.core.events import HealFinished, HealMeasured, HealStarted, HealStep, RunEvent
from gaprune_tui.core.heal import REQUEST_FILE, heals_dir, read_json
from gaprune_tui.core.store import RunStore

# Where a heal stands, as the events say it: the first three are live phases, the last three end it.
PHASES = ("measuring before", "training", "measuring after")
ENDED = ("finished", "stopped", "failed")


@dataclass
class HealProgress:
    """One heal as its events tell it so far."""

    id: str
    dropped: list[int] = field(default_factory=list)
    rank: int = 0
    method: str = ""
    objective: str = ""
    data: str = ""
    tokens: int = 0
    steps: int = 0
    trainable: int = 0
    from_step: int = 0
    # The loss of every step reported, by step number (a resumed heal overwrites its replay).
    losses: dict[int, float] = field(default_factory=dict)
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    state: str = "measuring before"  # one of PHASES or ENDED
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """The last optimizer step done (the checkpoint's, just after a resume)."""
        return max(self.losses, default=self.from_step)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def loss_series(self) -> list[float]:
        return [self.losses[s] for s in sorted(self.losses)]

    @property
    def label(self) -> str:
        """``partial/kd 32,768 tok`` (empty before the heal has said what it trains)."""
        return heal_label(self.method, self.objective, self.tokens) if self.method else ""


def heal_label(method: str, objective: str, tokens: int) -> str:
    """How a heal is named in a table: ``partial/kd 32,768 tok``."""
    return f"{method}/{objective} {int(tokens):,} tok"


def measure_line(numbers: dict[str, Any]) -> str:
    """``KL 0.000492 ± 0.000056 · ppl 327.7298 ± 2.4411 · held-out 0.4000 ± 0.1333``: a
    measurement before or after healing (tasks where there are no held-out tasks)."""
    parts = []
    if numbers.get("kl") is not None:
        parts.append(f"KL {fmt.score(numbers['kl'], numbers.get('kl_stderr'))}")
    if numbers.get("ppl") is not None:
        parts.append(f"ppl {fmt.score(numbers['ppl'], numbers.get('ppl_stderr'), 2)}")
    for key, what in (("holdout", "held-out"), ("confirmed", "tasks")):
        if numbers.get(key) is not None:
            parts.append(f"{what} {fmt.score(numbers[key], numbers.get(f'{key}_stderr'))}")
            break
    return " · ".join(parts)


class HealWatch:
    """Reads a store's new events and folds the heal events into ``heals`` (by heal id).

    ``current`` is the heal the events spoke of last. ``live`` holds the heals that changed
    after the first poll: the ones a screen watched, as opposed to heals that ended before it
    opened (those are results, shown as rows, not as progress)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.seq = 0
        self.heals: dict[str, HealProgress] = {}
        self.current_id: str | None = None
        self.live: set[str] = set()
        self._polled = False

    @property
    def current(self) -> HealProgress | None:
        return None if self.current_id is None else self.heals.get(self.current_id)

    def poll(self) -> bool:
        """Apply every event written since the last poll; True when a heal changed."""
        events = self.store.events(after=self.seq)
        changed = False
        for event in events:
            self.seq = max(self.seq, event.seq)
            changed = self.apply(event, live=self._polled) or changed
        self._polled = True
        return changed

    def expect(self, heal_id: str, dropped: list[int], rank: int) -> HealProgress:
        """A heal this process just asked for: shown (as starting) before its engine speaks."""
        progress = HealProgress(heal_id, dropped=list(dropped), rank=rank)
        self.heals[heal_id] = progress
        self.current_id = heal_id
        self.live.add(heal_id)
        return progress

    def follow(self, heal_id: str) -> HealProgress:
        """A heal this process just resumed: the one shown, as live (its genome from its
        request when no event of it has been read)."""
        progress = self.heals.get(heal_id)
        if progress is None:
            request = read_json(heals_dir(self.store) / heal_id / REQUEST_FILE) or {}
            dropped = [int(i) for i in request.get("dropped") or []]
            return self.expect(heal_id, dropped, int(request.get("rank") or 0))
        self.current_id = heal_id
        self.live.add(heal_id)
        return progress

    def apply(self, event: RunEvent, *, live: bool = True) -> bool:
        if not isinstance(event, HealStarted | HealStep | HealMeasured | HealFinished):
            return False
        hid = event.heal
        progress = self.heals.get(hid)
        if progress is None or (isinstance(event, HealMeasured) and progress.ended):
            # A new heal, or one asked for again after it ended (it starts afresh or resumes).
            previous = progress
            progress = HealProgress(hid)
            if previous is not None and previous.state != "finished":
                progress.losses = dict(previous.losses)  # a resume: HealStarted trims it
                progress.dropped, progress.rank = previous.dropped, previous.rank
            self.heals[hid] = progress
        self.current_id = hid
        if live:
            self.live.add(hid)
        if isinstance(event, HealMeasured):
            if event.phase == "before":
                progress.before = dict(event.numbers)
                progress.state = "measuring before"
            else:
                progress.after = dict(event.numbers)
                progress.state = "measuring after"
        elif isinstance(event, HealStarted):
            progress.dropped = list(event.dropped)
            progress.rank = event.rank
            progress.method, progress.objective = event.method, event.objective
            progress.data, progress.tokens = event.data, event.tokens
            progress.steps, progress.trainable = event.steps, event.trainable
            progress.from_step = event.from_step
            # The steps after the checkpoint are trained (and reported) again.
            progress.losses = {s: v for s, v in progress.losses.items() if s <= event.from_step}
            progress.after = None
            progress.state = "training"
        elif isinstance(event, HealStep):
            progress.losses[event.step] = float(event.loss)
            progress.steps = event.steps or progress.steps
            progress.lr = event.lr
            progress.tokens_per_s = event.tokens_per_s
            progress.eta_s = event.eta_s
            if event.steps and event.step >= event.steps:
                progress.state = "measuring after"
            else:
                progress.state = "training"
        else:
            progress.state = event.state if event.state in ENDED else "failed"
            progress.error = event.error
            progress.record = dict(event.record or {})
            if progress.record.get("after"):
                progress.after = dict(progress.record["after"])
        return True
