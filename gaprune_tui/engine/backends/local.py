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
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.events import RunEvent
from gaprune_tui.engine.backends import Dispatched, Done, worker_threads
from gaprune_tui.engine.backends.pool import Slot, WorkerPool, worker_config
from gaprune_tui.engine.backends.schedule import Job, Scheduler

log = logging.getLogger(__name__)


def _worker_main(name: str, config: dict[str, Any], threads: int, conn: Connection) -> None:
    """A worker process: build the scorer, then score what the driver sends until told to stop."""
    from gaprune_tui.engine.backends.host import ScorerHost, exit_with_parent
    from gaprune_tui.engine.setup import configure_logging

    exit_with_parent(os.getppid())
    configure_logging(f"%(asctime)s %(levelname)s {name}: %(message)s", sys.stdout)
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


@dataclass(kw_only=True)
class _Proc(Slot):
    """The driver's handle on one worker process and its end of the pipe."""

    process: Any
    conn: Connection


class LocalWorkers(WorkerPool):
    """One worker process per entry of ``devices``; the CPU cores are split between them."""

    def __init__(self, config: RunConfig, devices: Sequence[str]) -> None:
        super().__init__(config)
        self.threads = worker_threads(len(devices))
        ctx = multiprocessing.get_context("spawn")
        for i, device in enumerate(devices, 1):
            data = worker_config(config, device=device)
            ours, theirs = ctx.Pipe()
            name = f"worker-{i}"
            process = ctx.Process(
                target=_worker_main, args=(name, data, self.threads, theirs), name=name, daemon=True
            )
            process.start()
            theirs.close()
            slot = _Proc(name, device, pid=process.pid or 0, process=process, conn=ours)
            self.workers.append(slot)
        log.info("%d worker processes starting (%d torch threads each)", len(devices), self.threads)

    def _plan(self, w: _Proc, paths: list[list[int]]) -> None:
        self._send(w, ("plan", paths))

    def _dispatch(self, w: _Proc, job: Job) -> bool:
        return self._send(w, ("score", job.key, job.dropped, job.limit))

    def _step(self, sched: Scheduler) -> Iterator[Dispatched | Done | RunEvent]:
        procs: list[_Proc] = self.workers
        handles: list[Any] = [p.conn for p in procs] + [p.process.sentinel for p in procs]
        ready = wait(handles, timeout=1.0)
        for p in list(procs):
            if p.conn in ready or p.process.sentinel in ready:
                yield from self._read(p, sched)
        yield from self._hand_out(sched)

    def _read(self, p: _Proc, sched: Scheduler) -> Iterator[Done | RunEvent]:
        try:
            while p.conn.poll():
                message = p.conn.recv()
                if message[0] == "ready":
                    yield from self._ready(p, message[1])
                elif message[0] == "done":
                    yield from self._finished(p, *message[1:])
                elif message[0] == "error":
                    raise RuntimeError(f"{p.name} failed: {message[1]}")
        except (EOFError, OSError):
            pass
        if not p.process.is_alive() or p.conn.closed:
            yield from self._lost(p, sched)

    def _forget(self, w: _Proc) -> str:
        w.process.join(timeout=1)
        return f" (exit code {w.process.exitcode})"

    @staticmethod
    def _send(p: _Proc, message: tuple[Any, ...]) -> bool:
        try:
            p.conn.send(message)
        except (BrokenPipeError, OSError):
            return False
        return True

    def close(self) -> None:
        """Stop every worker now (the run finished, stopped or failed)."""
        procs: list[_Proc] = self.workers
        for p in procs:
            self._send(p, ("stop",))
            p.process.terminate()
        for p in procs:
            p.process.join(timeout=5)
            if p.process.is_alive():
                p.process.kill()
                p.process.join(timeout=5)
            p.conn.close()
        self.workers = []
