"""Local worker processes: one per device (or per share of the CPU cores), each holding the model.

The workers are started (``spawn``: a fresh interpreter, no forked torch state) when the backend is
built, so they load the model while the driver scores the base model and the baselines. They talk
to the driver over a pipe: ``("plan", paths)``, ``("score", key, dropped, limit)`` and ``("stop",)``
in; ``("ready", info)``, ``("done", key, scores, seconds)`` and ``("error", text)`` out. A worker
whose pipe closes or whose process ends is lost: its genome goes to another worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from gaprune_tui.core.config import RunConfig, backend_label
from gaprune_tui.core.events import LogMessage, RunEvent, WorkerStatus
from gaprune_tui.engine.backends import Backend, Dispatched, Done, WorkersGone, worker_threads
from gaprune_tui.engine.backends.schedule import Job, Scheduler

log = logging.getLogger(__name__)


def _worker_main(name: str, config: dict[str, Any], threads: int, conn: Connection) -> None:
    """A worker process: build the scorer, then score what the driver sends until told to stop."""
    from gaprune_tui.engine.backends.host import ScorerHost, exit_with_parent

    exit_with_parent(os.getppid())
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {name}: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("lm_eval", "lm-eval", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        host = ScorerHost(config, threads)
        conn.send(("ready", host.info()))
        while True:
            message = conn.recv()
            if message[0] == "plan":
                host.plan(message[1])
            elif message[0] == "score":
                _, key, dropped, limit = message
                scores, seconds = host.score(dropped, limit)
                conn.send(("done", key, scores, seconds))
            else:
                return
    except (EOFError, BrokenPipeError):
        return  # the driver is gone or closed the pipe
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


@dataclass
class _Proc:
    """The driver's handle on one worker process."""

    name: str
    device: str
    process: Any
    conn: Connection
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
            pid=self.pid or self.process.pid or 0,
        )


def record_idle(handles: Sequence[Any], start: float, busy_before: float, what: str) -> float:
    """Log and return how long ready workers sat idle in this generation (worker-seconds: from
    when each was ready, or the generation's start, to its end, minus its busy time)."""
    end = time.monotonic()
    up = sum(end - max(start, h.ready_at) for h in handles if h.ready)
    idle = max(0.0, up - (sum(h.busy for h in handles) - busy_before))
    log.info(
        "generation scored on %d %s in %.1f s; %.1f s idle", len(handles), what, end - start, idle
    )
    return idle


class LocalWorkers(Backend):
    """One worker process per entry of ``devices``; the CPU cores are split between them."""

    remote = True

    def __init__(self, config: RunConfig, devices: Sequence[str]) -> None:
        super().__init__(config)
        self.name = backend_label(config)
        self.threads = worker_threads(len(devices))
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[_Proc] = []
        self.idle_seconds: list[float] = []  # per generation, summed over workers
        for i, device in enumerate(devices, 1):
            data = {**config.to_dict(), "device": device, "workers": 1, "devices": None}
            data = {k: v for k, v in data.items() if v is not None}
            ours, theirs = ctx.Pipe()
            name = f"worker-{i}"
            process = ctx.Process(
                target=_worker_main, args=(name, data, self.threads, theirs), name=name, daemon=True
            )
            process.start()
            theirs.close()
            self.procs.append(_Proc(name, device, process, ours))
        log.info("%d worker processes starting (%d torch threads each)", len(devices), self.threads)

    # ---- one generation ---------------------------------------------------------------------
    def run(self, jobs: Sequence[Job]) -> Iterator[Dispatched | Done | RunEvent]:
        live = [p for p in self.procs]
        if not live:
            raise WorkersGone("every worker is gone: resume the run to continue")
        sched = Scheduler(jobs, [p.name for p in live])
        start, busy = time.monotonic(), sum(p.busy for p in live)
        for p in live:
            self._send(p, ("plan", sched.planned(p.name)))
        yield from self._hand_out(sched)
        try:
            while sched.left() or any(p.job for p in self.procs):
                if not self.procs:
                    raise WorkersGone(
                        "every worker is gone: the run stops here; resume it to continue"
                    )
                yield from self._step(sched)
        except BaseException:
            if any(p.job for p in self.procs):
                self.close()  # a stop or a failure mid-generation: nothing more comes back
            raise
        self.idle_seconds.append(record_idle(live, start, busy, "workers"))

    def _step(self, sched: Scheduler) -> Iterator[Dispatched | Done | RunEvent]:
        """Wait for any worker to report (or die), handle it, hand out more work."""
        handles: list[Any] = [p.conn for p in self.procs] + [p.process.sentinel for p in self.procs]
        ready = wait(handles, timeout=1.0)
        for p in list(self.procs):
            if p.conn in ready or p.process.sentinel in ready:
                yield from self._read(p, sched)
        yield from self._hand_out(sched)

    def _read(self, p: _Proc, sched: Scheduler) -> Iterator[Done | RunEvent]:
        try:
            while p.conn.poll():
                message = p.conn.recv()
                if message[0] == "ready":
                    p.ready, p.ready_at = True, time.monotonic()
                    p.device = str(message[1].get("device", p.device))
                    p.pid = int(message[1].get("pid", 0))
                    yield p.status("idle", self.name)
                elif message[0] == "done":
                    _, key, scores, seconds = message
                    job, p.job = p.job, None
                    p.busy += time.monotonic() - p.busy_since
                    p.evaluations += 1
                    p.seconds += seconds
                    yield Done(key, scores, seconds, p.name)
                    yield p.status("idle", self.name, scored=job.dropped if job else None)
                elif message[0] == "error":
                    raise RuntimeError(f"{p.name} failed: {message[1]}")
        except (EOFError, OSError):
            pass
        if not p.process.is_alive() or p.conn.closed:
            yield from self._lost(p, sched)

    def _lost(self, p: _Proc, sched: Scheduler) -> Iterator[RunEvent]:
        """A worker died: its genome goes back to the queue, the others carry on."""
        self.procs.remove(p)
        p.process.join(timeout=1)
        sched.drop_worker(p.name)
        what = f"genome {p.job.dropped} goes to another worker" if p.job else "it held no genome"
        message = f"{p.name} ({p.device}) died (exit code {p.process.exitcode}): {what}"
        log.warning("%s", message)
        if p.job is not None:
            sched.requeue(p.job)
        yield p.status("lost", self.name)
        yield LogMessage(message=message)
        p.job = None

    def _hand_out(self, sched: Scheduler) -> Iterator[Dispatched | RunEvent]:
        for p in list(self.procs):
            if not p.ready or p.job is not None:
                continue
            job, plan = sched.next_for(p.name)
            if job is None:
                continue
            if plan is not None:
                self._send(p, ("plan", plan))
            p.job, p.busy_since = job, time.monotonic()
            if self._send(p, ("score", job.key, job.dropped, job.limit)):
                yield Dispatched(job, p.name)
                yield p.status("busy", self.name)
            else:
                yield from self._lost(p, sched)

    @staticmethod
    def _send(p: _Proc, message: tuple[Any, ...]) -> bool:
        try:
            p.conn.send(message)
        except (BrokenPipeError, OSError):
            return False
        return True

    def close(self) -> None:
        """Stop every worker now (the run finished, stopped or failed)."""
        for p in self.procs:
            self._send(p, ("stop",))
            p.process.terminate()
        for p in self.procs:
            p.process.join(timeout=5)
            if p.process.is_alive():
                p.process.kill()
                p.process.join(timeout=5)
            p.conn.close()
        self.procs = []
