"""What a run says about how far to trust its genomes: confirmations, baselines, the export order.

A search ranks genomes on a noisy sample; when it ends (or on ``gaprune-tui confirm``) its
finalists, the one-shot baselines and the base model are re-scored on more items and on held-out
tasks (``GenomeConfirmed`` events after a ``ConfirmationStarted``). An export follows that evidence:

* the order ``--rank N`` counts in is the confirmed order (best confirmed score first) for the
  confirmed finalists, then the rest of the search's ranking; a run without confirmations keeps
  the search's ranking;
* ``export RUN`` without ``--rank`` takes result.json's ``dropped_layers``: the confirmed best when
  confirmation ran, else the search's best.

Only the latest confirmation counts (a later ``confirm`` may use more items or other tasks), and
each baseline's latest scoring. Reading is tolerant: a run from before confirmations has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.events import ConfirmationStarted, GenomeConfirmed, ReferenceScored
from gaprune_tui.core.store import Evaluation, RunStore

CONFIRMED_ORDER = "confirmed"
SEARCH_ORDER = "search"


@dataclass
class Evidence:
    """The run's latest confirmation and baselines, as read from its store and result.json."""

    started: ConfirmationStarted | None = None
    confirmations: list[GenomeConfirmed] = field(default_factory=list)
    references: list[ReferenceScored] = field(default_factory=list)
    result: dict[str, Any] | None = None

    def confirmation_of(self, dropped: list[int], role: str = "finalist") -> GenomeConfirmed | None:
        """The latest confirmation of the genome ``dropped`` in ``role`` ("any": any role)."""
        for c in reversed(self.confirmations):
            if list(c.dropped) == list(dropped) and (role == "any" or c.role == role):
                return c
        return None

    @property
    def base(self) -> GenomeConfirmed | None:
        return next((c for c in reversed(self.confirmations) if c.role == "base"), None)

    def finalists(self) -> list[GenomeConfirmed]:
        """Confirmed finalists, best confirmed score first (``core.fitness.confirmed_order``)."""
        latest: dict[tuple[int, ...], GenomeConfirmed] = {}
        for c in self.confirmations:
            if c.role == "finalist":
                latest[tuple(c.dropped)] = c
        ordered = fitness_kinds.confirmed_order(list(latest.values()))
        return [c for c in ordered if c.confirmed is not None]

    @property
    def default_dropped(self) -> list[int] | None:
        """result.json's recommended genome (``dropped_layers``), if the run wrote one."""
        if not self.result or not isinstance(self.result.get("dropped_layers"), list):
            return None
        return [int(i) for i in self.result["dropped_layers"]]

    @property
    def picked_by(self) -> str | None:
        return None if not self.result else self.result.get("picked_by")


def read_evidence(store: RunStore) -> Evidence:
    """The latest ``ConfirmationStarted`` and the ``GenomeConfirmed`` events after it, the latest
    ``ReferenceScored`` per baseline, and result.json."""
    started: ConfirmationStarted | None = None
    confirmations: list[GenomeConfirmed] = []
    references: dict[str, ReferenceScored] = {}
    for ev in store.events():
        if isinstance(ev, ConfirmationStarted):
            started, confirmations = ev, []
        elif isinstance(ev, GenomeConfirmed):
            confirmations.append(ev)
        elif isinstance(ev, ReferenceScored):
            references.pop(ev.name, None)  # keep the latest, in the order last scored
            references[ev.name] = ev
    return Evidence(started, confirmations, list(references.values()), store.result())


@dataclass(frozen=True)
class Ranking:
    """The genomes ``--rank`` counts through, and which order that is."""

    genomes: list[Evaluation]
    order: str  # CONFIRMED_ORDER or SEARCH_ORDER
    confirmed: int  # how many leading genomes are confirmed finalists

    def describe(self, rank: int) -> str:
        """How a person reads rank ``rank``: "rank 2/7 in confirmed order" and why."""
        where = f"rank {rank}/{len(self.genomes)}"
        if self.order == SEARCH_ORDER:
            return f"{where} in the search's order (no confirmed finalists)"
        if rank <= self.confirmed:
            return f"{where} in confirmed order (confirmed finalist {rank} of {self.confirmed})"
        return (
            f"{where} in confirmed order (after the {self.confirmed} confirmed finalists, "
            "in the search's order)"
        )


def ranking(ranked: list[Evaluation], evidence: Evidence) -> Ranking:
    """Confirmed finalists first (best confirmed score first), then the rest of ``ranked`` (the
    search's ranking); ``ranked`` unchanged when nothing was confirmed."""
    by_genome = {tuple(e.dropped): e for e in ranked}
    first = [
        by_genome[tuple(c.dropped)] for c in evidence.finalists() if tuple(c.dropped) in by_genome
    ]
    if not first:
        return Ranking(list(ranked), SEARCH_ORDER, 0)
    taken = {tuple(e.dropped) for e in first}
    rest = [e for e in ranked if tuple(e.dropped) not in taken]
    return Ranking(first + rest, CONFIRMED_ORDER, len(first))


def confirmation_dict(c: GenomeConfirmed | None) -> dict[str, Any] | None:
    """The confirmed and held-out numbers of one genome, for the lineage (``None`` if none)."""
    if c is None:
        return None
    return {
        "label": c.label,
        "role": c.role,
        "dropped_layers": list(c.dropped),
        **c.numbers(),
    }
