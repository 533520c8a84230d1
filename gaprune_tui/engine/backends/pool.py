"""What local worker processes and Ray actors share: the driver's side of a pool of workers.

A pool hands a generation's jobs out through the ``Scheduler``, keeps each worker's counters,
reports its ``WorkerStatus`` and, when a worker dies, gives its genome to another one. Only the
transport differs between the backends: how a plan and a job are sent (``_plan``, ``_dispatch``),
how the driver waits for answers (``_step``), what is left to clean up after a lost worker
(``_forget``) and how every worker is ended (``close``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.events import LogMessage, RunEvent, WorkerStatus
from gaprune_tui.engine.backends import Backend, Dispatched, Done, Scores, WorkersGone
from gaprune_tui.engine.backends.schedule import Job, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """The driver's handle on one worker: what it holds and what it has done so far."""

    name: str
    device: str = "?"
    ready: bool = False
    job: Job | None = None
    evaluations: int = 0
    seconds: float = 0.0
    pid: int = 0
    ready_at: float = 0.0  # when it finished loading (monotonic)
    busy: float = 0.0  # seconds with a genome in flight, as the driver sees it
    busy_since: float = 0.0

    def status(self, state: str, backend: str, scored: list[int] | None = None) -> WorkerStatus:
        return WorkerStatus(
            name=self.name,
            device=self.device,
            state=state,
            dropped=self.job.dropped if self.job else None,
            scored=scored,
            evaluations=self.evaluations,
            seconds=round(self.seconds, 3),
            backend=backend,
            pid=self.pid,
        )


def record_idle(handles: Sequence[Slot], start: float, busy_before: float, what: str) -> float:
    """Log and return how long ready workers sat idle in this generation (worker-seconds: from
    when each was ready, or the generation's start, to its end, minus its busy time)."""
    end = time.monotonic()
    up = sum(end - max(start, h.ready_at) for h in handles if h.ready)
    idle = max(0.0, up - (sum(h.busy for h in handles) - busy_before))
    log.info(
        "generation scored on %d %s in %.1f s; %.1f s idle", len(handles), what, end - start, idle
    )
    return idle


def worker_config(config: RunConfig, **override: Any) -> dict[str, Any]:
    """The run's config as one worker builds its scorer from: a single worker, no pool of its
    own (``override`` sets or clears more keys); unset keys are left out."""
    data = {**config.to_dict(), "workers": 1, "devices": None, **override}
    return {k: v for k, v in data.items() if v is not None}


class WorkerPool(Backend):
    """Several workers, each scoring one genome at a time; ``workers`` is filled by the subclass."""

    remote = True
    kind = "worker"  # what the log and the events call one worker
    gone = "every worker is gone"

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.name = backend_label(config)
        self.workers: list[Any] = []
        self.idle_seconds: list[float] = []  # per generation, summed over workers

    # ---- the transport: one implementation per backend -----------------------------------
    def _plan(self, w: Any, paths: list[list[int]]) -> None:
        """Send ``w`` the kept-layer paths it should expect next."""
        raise NotImplementedError

    def _dispatch(self, w: Any, job: Job) -> bool:
        """Send ``w`` its job; False when it cannot be reached (it is then lost)."""
        raise NotImplementedError

    def _step(self, sched: Scheduler) -> Iterator[Dispatched | Done | RunEvent]:
        """Wait for any worker to report (or die), handle it, hand out more work."""
        raise NotImplementedError

    def _forget(self, w: Any) -> str:
        """Clean up after a lost worker; returns what the log line adds about its end."""
        return ""

    # ---- one generation ------------------------------------------------------------------
    def run(self, jobs: Sequence[Job]) -> Iterator[Dispatched | Done | RunEvent]:
        live = list(self.workers)
        if not live:
            raise WorkersGone(f"{self.gone}: resume the run to continue")
        sched = Scheduler(jobs, [w.name for w in live])
        start, busy = time.monotonic(), sum(w.busy for w in live)
        for w in live:
            self._plan(w, sched.planned(w.name))
        try:
            yield from self._hand_out(sched)
            while sched.left() or any(w.job for w in self.workers):
                if not self.workers:
                    raise WorkersGone(f"{self.gone}: the run stops here; resume it to continue")
                yield from self._step(sched)
        except BaseException:
            if any(w.job for w in self.workers):
                self.close()  # a stop or a failure mid-generation: nothing more comes back
            raise
        self.idle_seconds.append(record_idle(live, start, busy, f"{self.kind}s"))

    def _ready(self, w: Slot, info: dict[str, Any]) -> Iterator[RunEvent]:
        """``w`` has loaded the model (``info``: its device and pid)."""
        w.ready, w.ready_at = True, time.monotonic()
        w.device = str(info.get("device", w.device))
        w.pid = int(info.get("pid") or w.pid)
        yield w.status("idle", self.name)

    def _finished(self, w: Slot, key: int, scores: Scores, seconds: float) -> Iterator[Any]:
        """``w`` returned the scores of its job."""
        job, w.job = w.job, None
        w.busy += time.monotonic() - w.busy_since
        w.evaluations += 1
        w.seconds += seconds
        yield Done(key, scores, seconds, w.name)
        yield w.status("idle", self.name, scored=job.dropped if job else None)

    def _lost(self, w: Slot, sched: Scheduler) -> Iterator[RunEvent]:
        """A worker died: its genome goes back to the queue, the others carry on."""
        self.workers.remove(w)
        end = self._forget(w)
        sched.drop_worker(w.name)
        what = (
            f"genome {w.job.dropped} goes to another {self.kind}" if w.job else "it held no genome"
        )
        message = f"{w.name} ({w.device}) died{end}: {what}"
        log.warning("%s", message)
        if w.job is not None:
            sched.requeue(w.job)
        yield w.status("lost", self.name)
        yield LogMessage(message=message)
        w.job = None

    def _hand_out(self, sched: Scheduler) -> Iterator[Dispatched | RunEvent]:
        for w in list(self.workers):
            if not w.ready or w.job is not None:
                continue
            job, plan = sched.next_for(w.name)
            if job is None:
                continue
            if plan is not None:
                self._plan(w, plan)
            w.job, w.busy_since = job, time.monotonic()
            if self._dispatch(w, job):
                yield Dispatched(job, w.name)
                yield w.status("busy", self.name)
            else:
                yield from self._lost(w, sched)
