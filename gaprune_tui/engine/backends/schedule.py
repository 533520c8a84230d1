"""Who scores which genome next: dynamic hand-out that keeps shared prefixes on one worker.

A generation's jobs arrive in tree order (sorted by dropped layers, so neighbours share their
first kept layers). Each worker is given one contiguous segment of that order and takes its next
genome from the front of it; a worker whose segment is empty steals the back half of the longest
remaining segment. So no worker waits while work is left (no barrier), and the genomes a worker
scores stay neighbours in the tree, which is what its own prefix cache pays off on. A genome whose
worker died goes back to the front of the queue (``requeue``) and is the next one handed out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One genome to score: ``key`` is its position in the generation's tree order."""

    key: int
    dropped: list[int]
    kept: list[int]
    limit: int | None = None


@dataclass
class Scheduler:
    """The jobs of one generation, split between named workers."""

    jobs: Sequence[Job]
    workers: Sequence[str]
    segments: dict[str, deque[Job]] = field(default_factory=dict)
    requeued: deque[Job] = field(default_factory=deque)

    def __post_init__(self) -> None:
        n = max(1, len(self.workers))
        size, extra = divmod(len(self.jobs), n)
        start = 0
        for i, name in enumerate(self.workers):
            end = start + size + (1 if i < extra else 0)
            self.segments[name] = deque(self.jobs[start:end])
            start = end

    def planned(self, worker: str) -> list[list[int]]:
        """The kept-layer paths ``worker`` is expected to score (for its scorer's ``plan``)."""
        return [job.kept for job in self.segments.get(worker, ())]

    def next_for(self, worker: str) -> tuple[Job | None, list[list[int]] | None]:
        """The next job for a free ``worker`` and, when it just stole a new segment, that
        segment's paths to plan. ``(None, None)`` when nothing is left to hand out."""
        if self.requeued:
            return self.requeued.popleft(), None
        own = self.segments.setdefault(worker, deque())
        if own:
            return own.popleft(), None
        victim = max(self.segments, key=lambda name: len(self.segments[name]))
        rest = self.segments[victim]
        if not rest:
            return None, None
        take = (len(rest) + 1) // 2
        stolen = [rest.pop() for _ in range(take)][::-1]
        own.extend(stolen)
        return own.popleft(), [job.kept for job in stolen]

    def requeue(self, job: Job) -> None:
        """A job whose worker died before it finished: handed out next, to another worker."""
        self.requeued.append(job)

    def drop_worker(self, worker: str) -> None:
        """A worker that is gone keeps no segment: its jobs go to the queue's front, in order."""
        for job in self.segments.pop(worker, deque()):
            self.requeued.append(job)

    def left(self) -> int:
        return len(self.requeued) + sum(len(s) for s in self.segments.values())


def summary_of(counts: dict[str, int]) -> dict[str, Any]:
    """Per-worker evaluation counts, sorted by worker name (for result.json)."""
    return {name: counts[name] for name in sorted(counts)}
