"""The engine process: ``python -m gaprune_tui.engine.worker RUN_DIR [--resume]``.

Reads the run's config from its store, loads the model and tasks once, runs the search and writes
every event, evaluation, generation and checkpoint into the store. Control requests (pause, resume,
stop) are honoured between evaluations; stop also between scoring batches.

Exit codes: 0 finished or stopped, 2 bad input found during setup (the run is marked "invalid" so
the caller can show the error and discard it), 1 any other failure (marked "failed", resumable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.store import (
    FAILED,
    FINISHED,
    INVALID,
    PAUSED,
    RUNNING,
    STOPPED,
    Evaluation,
    Generation,
    Memo,
    RunStore,
)

log = logging.getLogger("gaprune_tui.engine")


class Stopped(Exception):
    """A stop request was honoured."""


def set_threads() -> int:
    """Use every core we may run on (2 threads were 1.8x faster than 1 here); GAPRUNE_THREADS wins."""
    import torch

    wanted = os.environ.get("GAPRUNE_THREADS")
    n = int(wanted) if wanted else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


class Worker:
    def __init__(self, store: RunStore, *, resume: bool = False) -> None:
        self.store = store
        self.resume = resume
        self.started = time.time()

    # ---- control ------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return any(action == "stop" for _, action in self.store.pending_requests())

    def handle_control(self) -> None:
        """Apply pending requests; block while paused; raise ``Stopped`` on stop."""
        paused = False
        while True:
            for request_id, action in self.store.pending_requests():
                self.store.mark_handled(request_id)
                if action == "stop":
                    raise Stopped
                if action == "pause" and not paused:
                    paused = True
                    self.store.set_state(PAUSED)
                    self.store.add_event("run_paused")
                    log.info("paused")
                elif action == "resume" and paused:
                    paused = False
                    self.store.set_state(RUNNING)
                    self.store.add_event("run_resumed")
                    log.info("resumed")
            if not paused:
                return
            time.sleep(0.25)

    # ---- main ---------------------------------------------------------------------------------
    def run(self) -> int:
        store = self.store
        try:
            setup = self.setup()
        except GapruneError as exc:
            log.error("%s", exc)
            # A resumed run was valid once: keep it (failed, resumable) rather than discard it.
            store.set_state(FAILED if self.resume else INVALID, error=str(exc))
            store.add_event("run_failed", error=str(exc))
            return 2
        except Exception as exc:
            return self.fail(exc)
        try:
            self.search(*setup)
        except Stopped:
            self.stopped()
        except Exception as exc:
            from gaprune_tui.engine.scoring import StopRequested

            if isinstance(exc, StopRequested):
                self.stopped()
                return 0
            return self.fail(exc)
        return 0

    def stopped(self) -> None:
        for request_id, _ in self.store.pending_requests():
            self.store.mark_handled(request_id)
        self.store.set_state(STOPPED)
        self.store.add_event("run_stopped")
        log.info("stopped; resume with: gaprune-tui resume %s", self.store.id)

    def fail(self, exc: BaseException) -> int:
        log.error("engine failed:\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.store.set_state(FAILED, error=message)
        self.store.add_event("run_failed", error=message)
        return 1

    def setup(self) -> tuple[Any, ...]:
        from gaprune_tui.engine.evaluator import Evaluator
        from gaprune_tui.engine.model import load_model
        from gaprune_tui.engine.search import SearchState
        from gaprune_tui.engine.tasks import build_tasks

        store = self.store
        config = store.config().validate()
        state = None
        if self.resume:
            checkpoint = store.last_checkpoint()
            if checkpoint is not None:
                state = SearchState.loads(checkpoint[1])
                log.info("resuming after generation %d", state.gen)
            else:
                log.info("no generation finished yet: restarting; the memo keeps finished work")
        threads = set_threads()
        log.info("loading model %s (torch threads: %d)", config.model, threads)
        loaded = load_model(
            config.model,
            dtype=config.dtype,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
        )
        config.check_layers(loaded.n_layers)
        log.info("building tasks %s", ", ".join(t.name for t in config.tasks))
        taskset = build_tasks(config)
        memo = Memo()
        evaluator = Evaluator(loaded, taskset, config, memo, should_stop=self.stop_requested)
        return config, loaded, taskset, evaluator, state

    def search(self, config: Any, loaded: Any, taskset: Any, evaluator: Any, state: Any) -> None:
        from gaprune_tui.engine.search import Search, fitness_of

        store = self.store
        n_params = sum(p.numel() for p in loaded.model.parameters())
        layer_params = [
            sum(p.numel() for p in layer.parameters()) for layer in loaded.view.base_layers
        ]
        store.set_state(RUNNING)
        store.set_meta(
            model_name=loaded.name,
            fingerprint=loaded.fingerprint,
            n_layers=loaded.n_layers,
            n_params=n_params,
            params_per_layer=layer_params,
            device=str(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            family=loaded.family,
        )
        store.add_event(
            "run_started",
            model=loaded.name,
            n_layers=loaded.n_layers,
            protect=config.protect,
            prune=config.prune,
            population=config.population,
            generations=config.generations,
            tasks=[t.name for t in taskset.tasks],
            max_evaluations=config.max_evaluations,
            resumed=state is not None,
        )
        self.handle_control()
        base = evaluator([], None)
        store.set_meta(base_scores=base.scores, base_fitness=base.fitness)
        store.add_event(
            "base_scores", scores=base.scores, fitness=base.fitness, from_memo=base.from_memo
        )
        log.info("base model: fitness %.4f %s", base.fitness, base.scores)

        search = Search(config, loaded.n_layers, evaluator, state=state)
        for event in search.run():
            self.handle_control()
            kind = event.pop("kind")
            if kind == "evaluation_finished":
                ev = Evaluation(**event)
                store.add_evaluation(ev)
                best = store.meta().get("best_fitness")
                if ev.fidelity == "full" and (best is None or ev.fitness > best):
                    store.set_meta(best_fitness=ev.fitness, best_dropped=ev.dropped)
                log.info(
                    "gen %d drop %s fitness %.4f %s(%.1f s)",
                    ev.generation,
                    ev.dropped,
                    ev.fitness,
                    "memo " if ev.from_memo else "",
                    ev.seconds,
                )
            elif kind == "generation_finished":
                blob = event.pop("checkpoint")
                store.add_generation(Generation(**event))
                store.save_checkpoint(event["gen"], blob)
                store.add_event(kind, **event)
                log.info(
                    "generation %d: max %.4f mean %.4f best %s",
                    event["gen"],
                    event["max"],
                    event["mean"],
                    event["best_dropped"],
                )
            elif kind == "search_finished":
                pass
            else:
                store.add_event(kind, **event)

        evaluations = store.evaluations()
        ranked = store.best_evaluations()
        best = ranked[0]
        result = {
            "run_id": store.id,
            "model": loaded.name,
            "model_source": str(loaded.source),
            "n_layers": loaded.n_layers,
            "tasks": [
                {"name": t.name, "metric": t.metric, "num_fewshot": t.num_fewshot, "limit": t.limit}
                for t in taskset.tasks
            ],
            "dropped_layers": best.dropped,
            "kept_layers": best.kept,
            "fitness": best.fitness,
            "fitness_function": config.fitness,
            "scores": best.scores,
            "base_scores": base.scores,
            "base_fitness": fitness_of(base.scores, config.fitness),
            "hall_of_fame": [
                {"dropped": e.dropped, "fitness": e.fitness, "scores": e.scores}
                for e in ranked[:10]
            ],
            "evaluations": sum(
                1 for e in evaluations if not e.from_memo and e.fidelity != "invalid"
            ),
            "cache_hits": sum(1 for e in evaluations if e.from_memo),
            "generations": config.generations,
            "population": config.population,
            "scorer": config.scorer,
            "eval_seconds": round(sum(e.seconds for e in evaluations if not e.from_memo), 3),
            "wall_seconds": round(
                time.time() - float(store.meta().get("created", self.started)), 3
            ),
            "params_total": n_params,
            "params_removed": sum(layer_params[i] for i in best.dropped),
        }
        store.write_result(result)
        store.set_state(FINISHED)
        store.add_event("run_finished", result=result)
        log.info("finished: drop %s fitness %.4f", best.dropped, best.fitness)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaprune_tui.engine.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    # lm-eval logs and draws progress bars on every evaluate() call: one genome would flood the log.
    for noisy in ("lm_eval", "lm-eval", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    store = RunStore(args.run_dir)
    store.set_meta(pid=os.getpid())
    return Worker(store, resume=args.resume).run()


if __name__ == "__main__":
    sys.exit(main())
