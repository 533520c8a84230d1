"""Ray actors: one per GPU (or per share of the CPUs), each holding the base model.

``--ray local`` starts a Ray instance on this machine (no dashboard, no usage reports: nothing
leaves the machine); ``--ray auto`` joins the cluster ``ray start --head`` started here, and
``--ray HOST:PORT`` a remote one. Each node needs gaprune-tui, the model and the task data at the
same path (or in its HF cache). The scheduling, the memo, the store and the fault handling are the
local workers' (``local.py``, ``schedule.py``): only the transport differs. Ray runs an actor's
calls in order, so a ``plan`` sent before a ``score`` is applied before it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.events import LogMessage, RunEvent, WorkerStatus
from gaprune_tui.engine.backends import Backend, Dispatched, Done, WorkersGone
from gaprune_tui.engine.backends.local import record_idle
from gaprune_tui.engine.backends.schedule import Job, Scheduler

log = logging.getLogger(__name__)


class ScorerActor:
    """The actor's body: a ``ScorerHost`` behind Ray's method calls."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        from gaprune_tui.engine.backends.host import ScorerHost

        logging.basicConfig(level=logging.INFO, force=True)
        for noisy in ("lm_eval", "lm-eval", "datasets", "transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.host = ScorerHost(config, threads)

    def info(self) -> dict[str, Any]:
        return self.host.info()

    def plan(self, paths: list[list[int]]) -> None:
        self.host.plan(paths)

    def score(self, key: int, dropped: list[int], limit: int | None) -> tuple[int, Any, float]:
        scores, seconds = self.host.score(dropped, limit)
        return key, scores, seconds


@dataclass
class _Actor:
    """The driver's handle on one actor and the call it waits for."""

    name: str
    handle: Any
    pending: Any = None  # the ObjectRef of its info() (loading) or score() call
    ready: bool = False
    job: Job | None = None
    device: str = "?"
    pid: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    ready_at: float = 0.0  # when it finished loading (monotonic)
    busy: float = 0.0
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


def connect(address: str, cpus: int) -> Any:
    """Start (``local``) or join a Ray instance; returns the ``ray`` module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    return ray


class RayActors(Backend):
    """``workers`` actors (default: one per GPU of the cluster, else one)."""

    remote = True

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.name = backend_label(config)
        cores = len(os.sched_getaffinity(0))
        self.ray = connect(str(config.ray), cores)
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        n = config.workers if config.workers > 1 else max(1, gpus)
        cpus_each = max(1, int(self.ray.cluster_resources().get("CPU", cores)) // n)
        threads = int(os.environ.get("GAPRUNE_THREADS") or cpus_each)
        options: dict[str, Any] = {"num_cpus": cpus_each, "max_restarts": 0}
        if gpus:
            options["num_gpus"] = 1
        remote_cls = self.ray.remote(**options)(ScorerActor)
        data = {**config.to_dict(), "workers": 1, "devices": None, "ray": None}
        data = {k: v for k, v in data.items() if v is not None}
        if gpus:
            data["device"] = "cuda"  # Ray shows each actor its own GPU as cuda:0
        self.actors: list[_Actor] = []
        for i in range(1, n + 1):
            handle = remote_cls.remote(data, threads)
            self.actors.append(_Actor(f"actor-{i}", handle, pending=handle.info.remote()))
        self.idle_seconds: list[float] = []
        log.info("%d Ray actors starting (%d CPUs, %d torch threads each)", n, cpus_each, threads)

    def run(self, jobs: Sequence[Job]) -> Iterator[Dispatched | Done | RunEvent]:
        if not self.actors:
            raise WorkersGone("every Ray actor is gone: resume the run to continue")
        live = list(self.actors)
        sched = Scheduler(jobs, [a.name for a in live])
        start, busy = time.monotonic(), sum(a.busy for a in live)
        for a in live:
            a.handle.plan.remote(sched.planned(a.name))
        try:
            yield from self._hand_out(sched)
            while sched.left() or any(a.job for a in self.actors):
                if not self.actors:
                    raise WorkersGone(
                        "every Ray actor is gone: the run stops here; resume it to continue"
                    )
                yield from self._step(sched)
        except BaseException:
            if any(a.job for a in self.actors):
                self.close()
            raise
        self.idle_seconds.append(record_idle(live, start, busy, "actors"))

    def _step(self, sched: Scheduler) -> Iterator[Dispatched | Done | RunEvent]:
        refs = [a.pending for a in self.actors if a.pending is not None]
        done, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
        for a in list(self.actors):
            if a.pending is not None and a.pending in done:
                yield from self._collect(a, sched)
        yield from self._hand_out(sched)

    def _collect(self, a: _Actor, sched: Scheduler) -> Iterator[Done | RunEvent]:
        ref, a.pending = a.pending, None
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            yield from self._lost(a, sched)
            return
        except self.ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"{a.name} failed: {exc}") from None
        if not a.ready:
            a.ready, a.device, a.pid = True, str(value["device"]), int(value["pid"])
            a.ready_at = time.monotonic()
            yield a.status("idle", self.name)
            return
        key, scores, seconds = value
        job, a.job = a.job, None
        a.busy += time.monotonic() - a.busy_since
        a.evaluations += 1
        a.seconds += seconds
        yield Done(key, scores, seconds, a.name)
        yield a.status("idle", self.name, scored=job.dropped if job else None)

    def _lost(self, a: _Actor, sched: Scheduler) -> Iterator[RunEvent]:
        self.actors.remove(a)
        sched.drop_worker(a.name)
        what = f"genome {a.job.dropped} goes to another actor" if a.job else "it held no genome"
        message = f"{a.name} ({a.device}) died: {what}"
        log.warning("%s", message)
        if a.job is not None:
            sched.requeue(a.job)
        yield a.status("lost", self.name)
        yield LogMessage(message=message)
        a.job = None

    def _hand_out(self, sched: Scheduler) -> Iterator[Dispatched | RunEvent]:
        for a in list(self.actors):
            if not a.ready or a.job is not None:
                continue
            job, plan = sched.next_for(a.name)
            if job is None:
                continue
            if plan is not None:
                a.handle.plan.remote(plan)
            a.job, a.busy_since = job, time.monotonic()
            a.pending = a.handle.score.remote(job.key, job.dropped, job.limit)
            yield Dispatched(job, a.name)
            yield a.status("busy", self.name)

    def close(self) -> None:
        """Kill every actor; shut the Ray instance down when this run started it."""
        for a in self.actors:
            try:
                self.ray.kill(a.handle)
            except Exception:  # an actor already gone
                log.debug("actor %s already gone", a.name)
        self.actors = []
        if self.config.ray == "local" and self.ray.is_initialized():
            self.ray.shutdown()
