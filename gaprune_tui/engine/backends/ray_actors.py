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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.events import RunEvent
from gaprune_tui.engine.backends import Dispatched, Done
from gaprune_tui.engine.backends.pool import Slot, WorkerPool, worker_config
from gaprune_tui.engine.backends.schedule import Job, Scheduler

log = logging.getLogger(__name__)


class ScorerActor:
    """The actor's body: a ``ScorerHost`` behind Ray's method calls."""

    def __init__(self, config: dict[str, Any], threads: int) -> None:
        from gaprune_tui.engine.backends.host import ScorerHost
        from gaprune_tui.engine.setup import configure_logging

        configure_logging()
        self.host = ScorerHost(config, threads)

    def info(self) -> dict[str, Any]:
        return self.host.info()

    def plan(self, paths: list[list[int]]) -> None:
        self.host.plan(paths)

    def score(self, key: int, dropped: list[int], limit: int | None) -> tuple[int, Any, float]:
        scores, seconds = self.host.score(dropped, limit)
        return key, scores, seconds


@dataclass(kw_only=True)
class _Actor(Slot):
    """The driver's handle on one actor and the call it waits for."""

    handle: Any
    pending: Any = None  # the ObjectRef of its info() (loading) or score() call


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


class RayActors(WorkerPool):
    """``workers`` actors (default: one per GPU of the cluster, else one)."""

    kind = "actor"
    gone = "every Ray actor is gone"

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
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
        data = worker_config(config, ray=None)
        if gpus:
            data["device"] = "cuda"  # Ray shows each actor its own GPU as cuda:0
        for i in range(1, n + 1):
            handle = remote_cls.remote(data, threads)
            self.workers.append(_Actor(f"actor-{i}", handle=handle, pending=handle.info.remote()))
        log.info("%d Ray actors starting (%d CPUs, %d torch threads each)", n, cpus_each, threads)

    def _plan(self, w: _Actor, paths: list[list[int]]) -> None:
        w.handle.plan.remote(paths)

    def _dispatch(self, w: _Actor, job: Job) -> bool:
        w.pending = w.handle.score.remote(job.key, job.dropped, job.limit)
        return True

    def _step(self, sched: Scheduler) -> Iterator[Dispatched | Done | RunEvent]:
        actors: list[_Actor] = self.workers
        refs = [a.pending for a in actors if a.pending is not None]
        done, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
        for a in list(actors):
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
            yield from self._ready(a, value)
        else:
            yield from self._finished(a, *value)

    def close(self) -> None:
        """Kill every actor; shut the Ray instance down when this run started it."""
        for a in self.workers:
            try:
                self.ray.kill(a.handle)
            except Exception:  # an actor already gone
                log.debug("actor %s already gone", a.name)
        self.workers = []
        if self.config.ray == "local" and self.ray.is_initialized():
            self.ray.shutdown()
