"""The engine process: ``python -m gaprune_tui.engine.worker RUN_DIR [--resume]``.

Reads the run's config from its store, loads the model and tasks once, runs the search and writes
every event, evaluation, generation and checkpoint into the store. Control requests (pause, unpause,
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

from gaprune_tui.core import events, format
from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.errors import GapruneError
from gaprune_tui.core.store import (
    BASELINE_GENERATION,
    ControlAction,
    Evaluation,
    Generation,
    Memo,
    RunState,
    RunStore,
)
from gaprune_tui.engine.control import StopRequested
from gaprune_tui.engine.setup import (
    ModelSize,
    Setup,
    build_scoring,
    configure_logging,
    set_threads,
)

log = logging.getLogger(__name__)
# The config values a run_started event repeats for the screens.
_SEARCH_SHAPE = (
    "protect",
    "prune",
    "population",
    "generations",
    "max_evaluations",
    "fitness",
    "objective",
    "prune_range",
    "granularity",
    "attention_drops",
)


class Worker:
    def __init__(
        self,
        store: RunStore,
        *,
        resume: bool = False,
        confirm_only: bool = False,
        heal: str | None = None,
    ) -> None:
        self.store = store
        self.resume = resume
        self.confirm_only = confirm_only or heal is not None
        self.heal = heal
        self.started = time.time()
        self.fitness_kind = "squared_mean"  # the run's, once setup has read its config
        self.pareto = False
        self.backend: Any = None  # engine/backends, once setup has built it

    # ---- control ------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return any(r.action == ControlAction.STOP for r in self.store.pending_requests())

    def handle_control(self) -> None:
        """Apply pending requests; block while paused; raise ``StopRequested`` on stop."""
        paused = False
        while True:
            for request in self.store.pending_requests():
                self.store.mark_handled(request.id)
                if request.action == ControlAction.STOP:
                    raise StopRequested("stop requested")
                if request.action == ControlAction.PAUSE and not paused:
                    paused = self._set_paused(True)
                elif request.action == ControlAction.UNPAUSE and paused:
                    # Back to work now; requests after the unpause are read at the next check,
                    # before the next event, so "unpause, pause" steps exactly one event.
                    self._set_paused(False)
                    return
            if not paused:
                return
            time.sleep(0.25)

    def _set_paused(self, paused: bool) -> bool:
        """Record a pause or an unpause: state, event and log line. Returns ``paused``."""
        self.store.set_state(RunState.PAUSED if paused else RunState.RUNNING)
        self.store.add_event(events.RunPaused() if paused else events.RunResumed())
        log.info("paused" if paused else "resumed")
        return paused

    # ---- main ---------------------------------------------------------------------------------
    def run(self) -> int:
        if self.heal is not None:
            from gaprune_tui.engine.heal_job import HealJob

            return HealJob(self, self.heal).run()
        if self.confirm_only:
            return self.run_confirm()
        store = self.store
        try:
            setup = self.setup()
        except GapruneError as exc:
            log.error("%s", exc)
            # A resumed run was valid once: keep it (failed, resumable) rather than discard it.
            store.set_state(RunState.FAILED if self.resume else RunState.INVALID, error=str(exc))
            store.add_event(events.RunFailed(error=str(exc)))
            return 2
        except Exception as exc:
            return self.fail(exc)
        try:
            self.search(setup)
        except StopRequested:
            self.stopped()
        except Exception as exc:
            return self.fail(exc)
        finally:
            if self.backend is not None:
                self.backend.close()  # several workers: every one ends with the run
        return 0

    def stopped(self) -> None:
        for request in self.store.pending_requests():
            self.store.mark_handled(request.id)
        self.store.set_state(RunState.STOPPED)
        self.store.add_event(events.RunStopped())
        log.info("stopped; resume with: gaprune-tui resume %s", self.store.id)

    def fail(self, exc: BaseException) -> int:
        log.error("engine failed:\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.store.set_state(RunState.FAILED, error=message)
        self.store.add_event(events.RunFailed(error=message))
        return 1

    def setup(self) -> Setup:
        from gaprune_tui.engine.backends import make_backend
        from gaprune_tui.engine.search import SearchState

        store = self.store
        config = store.config().validate()
        self.fitness_kind = config.fitness
        self.pareto = config.pareto
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
        scoring = build_scoring(config, self.stop_requested)
        memo = Memo()
        evaluator = scoring.evaluator(memo)
        # Several workers start loading now, while this process scores the base model.
        backend = None if self.confirm_only else make_backend(config, threads)
        self.backend = backend
        return Setup(
            config,
            scoring.loaded,
            scoring.taskset,
            evaluator,
            state,
            memo,
            scoring.calibration,
            scoring.lm,
            backend,
        )

    # ---- the search, step by step ---------------------------------------------------------------
    def search(self, setup: Setup) -> None:
        from gaprune_tui.engine.result import build_result
        from gaprune_tui.engine.search import make_search

        size = self.record_model(setup)
        self.handle_control()
        base = self.score_base(setup)
        references = self.score_references(setup)
        seeds = [r.dropped for r in references] if setup.config.init == "heuristics" else []
        search = make_search(
            setup.config,
            setup.loaded.n_layers,
            setup.evaluator,
            state=setup.state,
            seeds=seeds,
            known=[(r.dropped, r.fitness) for r in references],
        )
        search.backend = setup.backend
        for event in search.run():
            self.handle_control()
            self.record(event)
        confirmations = self.confirm(setup, base, references)
        result = build_result(
            self.store,
            setup,
            base,
            references,
            confirmations,
            size.per_unit,
            self.started,
            timer=self.timer(setup),
        )
        self.store.write_result(result)
        self.store.set_state(RunState.FINISHED)
        self.store.add_event(events.RunFinished(result=result))
        log.info("finished: drop %s fitness %.4f", result["dropped_text"], result["fitness"])
        log.info("against the baselines: %s", result["headline"])

    def run_confirm(self) -> int:
        """``gaprune-tui confirm RUN``: confirmation of a run whose search is over, on demand
        (with the config's current finalists, limit and held-out tasks). Whatever happens, the
        run keeps its state: a failed confirmation is logged, never turns a finished run failed."""
        store = self.store
        previous = store.state
        try:
            if not store.best_evaluations(1):
                raise GapruneError(f"run {store.id} has no evaluated genome to confirm")
            self.confirm_again(self.setup(), previous)
        except StopRequested:
            log.info("confirmation stopped")
            code = 0
        except Exception as exc:
            log.error("confirmation failed:\n%s", traceback.format_exc())
            message = f"confirmation failed: {type(exc).__name__}: {exc}".splitlines()[0]
            store.add_event(events.LogMessage(message=message))
            code = 2 if isinstance(exc, GapruneError) else 1
        else:
            code = 0
        for request in store.pending_requests():
            store.mark_handled(request.id)
        store.set_state(previous)
        return code

    def confirm_again(self, setup: Setup, previous: RunState) -> None:
        from gaprune_tui.engine.result import build_result

        store = self.store
        size = self.record_model(setup)
        base = self.score_base(setup)
        references = self.score_references(setup)
        confirmations = self.confirm(setup, base, references)
        result = build_result(
            store,
            setup,
            base,
            references,
            confirmations,
            size.per_unit,
            self.started,
            timer=self.timer(setup),
        )
        store.write_result(result)
        if previous == RunState.FINISHED:
            store.add_event(events.RunFinished(result=result))
        log.info("confirmation done: recommended drop %s", result["dropped_layers"])

    def score_references(self, setup: Setup) -> list[events.ReferenceScored]:
        """The baselines the config names: the one-pass ones (ShortGPT, angular distance, last k)
        from one pass of the base model over the calibration text, and greedy removal on the
        run's fitness, each scored like any genome (through the memo). Each pick is also stored
        as an evaluation of generation -1, so every ranking of the run's genomes (finalists,
        recommendation, Pareto front, ``export --rank``) includes it."""
        from gaprune_tui.engine.baselines import baselines, layer_signals, sublayer_baselines

        config, loaded = setup.config, setup.loaded
        one_pass = [name for name in config.baselines if name != "greedy"]
        picks: list[tuple[str, Any]] = []
        if one_pass:
            sublayer = config.granularity == "sublayer"
            signals = layer_signals(loaded, setup.calibration.input_ids, sublayer=sublayer)
            space = self.space(setup)

            def at(k: int) -> list[Any]:
                if sublayer:
                    return sublayer_baselines(signals, space, k, one_pass)
                found = baselines(signals, loaded.n_layers, k, config.protect)
                return [b for b in found if b.name in one_pass]

            # A Pareto run has baselines at every k of its range ("shortgpt k=3", ...), one pass.
            picks = [
                (f"{b.name} k={k}" if config.pareto else b.name, b)
                for k in config.ks
                for b in at(k)
            ]
        setup.evaluator.plan([b.dropped for _, b in picks])
        out = []
        for name, pick in picks:
            self.handle_control()
            outcome = setup.evaluator(pick.dropped, None)
            event = events.ReferenceScored(
                name=name,
                dropped=pick.dropped,
                fitness=outcome.fitness,
                scores=outcome.scores,
                signal=pick.signal,
                evaluations=0 if outcome.from_memo else 1,
                seconds=0.0 if outcome.from_memo else outcome.seconds,
            )
            out.append(self._reference(setup, event, outcome))
            log.info("baseline %s: drop %s fitness %.4f", pick.name, pick.dropped, outcome.fitness)
        if "greedy" in config.baselines:
            out.extend(self.score_greedy(setup))
        return out

    def score_greedy(self, setup: Setup) -> list[events.ReferenceScored]:
        """Greedy removal (``engine/greedy.py``) up to the run's largest k: one pick per k."""
        from gaprune_tui.engine.greedy import greedy_evaluations, greedy_path

        config = setup.config
        space = self.space(setup)
        k_max = max(config.ks)
        droppable = len(space.droppable)
        feasible = None
        if config.attention_drops is not None:
            attention, k = config.attention_drops, config.prune

            def feasible(genome: list[int]) -> bool:
                n_attention = sum(1 for u in genome if u % 2 == 0)
                return n_attention <= attention and len(genome) - n_attention <= k - attention

        log.info(
            "baseline greedy: up to %d evaluations to reach k = %d (memo hits are free)",
            greedy_evaluations(droppable, k_max),
            k_max,
        )
        from gaprune_tui.engine.evaluator import fidelity_cost

        path = greedy_path(
            setup.evaluator,
            space.n_units,
            space.first_unit,
            k_max,
            setup.evaluator.kind,
            plan=setup.evaluator.plan,
            between=self.handle_control,
            screen=config.screen_limit,
            survivors=config.survivors,
            cost_of=lambda outcome: fidelity_cost(outcome.fidelity, config),
            feasible=feasible,
        )
        out = []
        for k in config.ks:
            outcome = path.outcomes[k]
            last = k == k_max
            event = events.ReferenceScored(
                name=f"greedy k={k}" if config.pareto else "greedy",
                dropped=path.genomes[k],
                fitness=outcome.fitness,
                scores=outcome.scores,
                evaluations=path.evaluations if last else 0,
                seconds=round(path.seconds, 3) if last else 0.0,
                cost=round(path.cost, 3) if last else 0.0,
            )
            out.append(self._reference(setup, event, outcome))
            log.info(
                "baseline greedy: drop %s fitness %.4f (path: %d fresh evaluations, %.1f full, %.0f s)",
                path.genomes[k],
                outcome.fitness,
                path.evaluations,
                path.cost,
                path.seconds,
            )
        return out

    @staticmethod
    def timer(setup: Setup) -> Any:
        """Times a path's view against the base model (``engine/speed.py``) for result.json."""
        from gaprune_tui.engine.speed import measure_or_none

        prompt = setup.calibration.input_ids[0]
        return lambda path: measure_or_none(setup.loaded, path, prompt)

    @staticmethod
    def space(setup: Setup) -> Any:
        """The run's genome space (``core/units.GenomeSpace``): its units and quota."""
        from gaprune_tui.core.units import GenomeSpace

        config = setup.config
        return GenomeSpace(
            setup.loaded.n_layers, config.protect, config.granularity, config.attention_drops
        )

    def _reference(
        self, setup: Setup, event: events.ReferenceScored, outcome: Any
    ) -> events.ReferenceScored:
        """Store a baseline's event and its evaluation row (generation -1, no event of its own)."""
        self.store.add_event(event)
        kept = setup.evaluator.kept_of(list(event.dropped))
        self.store.add_evaluation(
            Evaluation(
                generation=BASELINE_GENERATION,
                dropped=list(event.dropped),
                kept=kept,
                fitness=event.fitness,
                scores=event.scores,
                seconds=outcome.seconds,
                from_memo=outcome.from_memo,
                fidelity=outcome.fidelity,
            ),
            event=False,
        )
        return event

    def confirm(
        self, setup: Setup, base: events.BaseScores, references: list[events.ReferenceScored]
    ) -> list[events.GenomeConfirmed]:
        """Re-score the top finalists, the baselines and the base model on more items and on
        held-out tasks (``engine/confirm.py``)."""
        from gaprune_tui.core.fitness import fitness_stderr
        from gaprune_tui.engine.confirm import Candidate, Confirmer
        from gaprune_tui.engine.result import finalists

        config = setup.config
        if config.finalists <= 0:
            return []
        kind = config.fitness
        cands = [
            Candidate("base model", "base", [], base.fitness, fitness_stderr(base.scores, kind))
        ]
        if config.pareto:
            # One member per k: the front. Its baselines are not re-scored (their search
            # fitness at each k stands beside the front), which keeps confirmation's cost to
            # one genome per k.
            from gaprune_tui.engine.result import pareto_front

            for point in pareto_front(self.store, config):
                se = fitness_stderr(point.extra["scores"], kind)
                cands.append(
                    Candidate(f"k={point.k}", "finalist", point.dropped, point.fitness, se, point.k)
                )
        else:
            for i, e in enumerate(finalists(self.store, config, references), 1):
                se = fitness_stderr(e.scores, kind)
                cands.append(Candidate(f"finalist {i}", "finalist", e.dropped, e.fitness, se, i))
            for r in references:
                se = fitness_stderr(r.scores, kind)
                cands.append(Candidate(r.name, "baseline", r.dropped, r.fitness, se))
        confirmer = Confirmer(setup.loaded, config, setup.memo, setup.lm)
        self.store.add_event(
            events.ConfirmationStarted(
                genomes=len(cands),
                confirm_limit=config.confirm_limit,
                tasks=confirmer.tasks,
                holdout_tasks=confirmer.holdout_tasks,
                offsets=confirmer.offsets,
            )
        )
        out = []
        for event in confirmer.run(cands, between=self.handle_control):
            self.store.add_event(event)
            out.append(event)
            log.info(
                "confirmed %s (drop %s): %s on %s, held-out %s",
                event.label,
                event.dropped,
                format.score(event.confirmed, event.confirmed_stderr),
                ", ".join(confirmer.tasks),
                format.score(event.holdout, event.holdout_stderr),
            )
        return out

    def record_model(self, setup: Setup) -> ModelSize:
        """Mark the run running, store what the UI shows of the model, announce the start."""
        from gaprune_tui.engine.layers import unit_params

        loaded, config = setup.loaded, setup.config
        layers = list(loaded.view.base_layers)
        size = ModelSize(
            total=sum(p.numel() for p in loaded.model.parameters()),
            per_layer=unit_params(layers, "layer"),
            per_unit=unit_params(layers, config.granularity),
        )
        self.store.set_state(RunState.RUNNING)
        self.store.set_meta(
            model_name=loaded.name,
            fingerprint=loaded.fingerprint,
            n_layers=loaded.n_layers,
            n_params=size.total,
            params_per_layer=size.per_layer,
            params_per_unit=size.per_unit,
            device=str(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            dtype_reason=loaded.dtype_reason,
            family=loaded.family,
        )
        self.store.add_event(
            events.RunStarted(
                model=loaded.name,
                n_layers=loaded.n_layers,
                tasks=[t.name for t in setup.taskset.tasks],
                resumed=setup.state is not None,
                **{name: getattr(config, name) for name in _SEARCH_SHAPE},
            )
        )
        return size

    def score_base(self, setup: Setup) -> events.BaseScores:
        """Score the unpruned model: the reference of every genome (usually from the memo)."""
        base = setup.evaluator([], None)
        self.store.set_meta(base_scores=base.scores, base_fitness=base.fitness)
        event = events.BaseScores(
            scores=base.scores, fitness=base.fitness, from_memo=base.from_memo
        )
        self.store.add_event(event)
        log.info("base model: fitness %.4f %s", base.fitness, base.scores)
        return event

    def record(self, event: events.RunEvent) -> None:
        """Write one search event: evaluations and generations also get their rows (and the
        generation its checkpoint); the search's own summary is not stored."""
        store = self.store
        if isinstance(event, events.EvaluationFinished):
            ev = Evaluation.from_event(event)
            store.add_evaluation(ev)
            best = store.meta().get("best_fitness")
            kind = self.fitness_kind
            # A Pareto run's "best" is its front's knee, set per generation below.
            improves = best is None or fitness_kinds.better(ev.fitness, best, kind)
            if not self.pareto and ev.fidelity == "full" and improves:
                store.set_meta(best_fitness=ev.fitness, best_dropped=ev.dropped)
            log.info(
                "gen %d drop %s fitness %.4f %s(%.1f s)",
                ev.generation,
                ev.dropped,
                ev.fitness,
                "memo " if ev.from_memo else "",
                ev.seconds,
            )
        elif isinstance(event, events.GenerationFinished):
            store.add_generation(Generation.from_event(event))
            store.save_checkpoint(event.generation, event.checkpoint)
            store.add_event(event)
            if self.pareto:
                store.set_meta(best_fitness=event.best_fitness, best_dropped=event.best_dropped)
            # "best", not "max": for KL and perplexity the best is the lowest.
            log.info(
                "generation %d: best %.4f mean %.4f best drop %s",
                event.generation,
                event.best_fitness,
                event.mean,
                event.best_dropped,
            )
        elif not isinstance(event, events.SearchFinished):
            store.add_event(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaprune_tui.engine.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--confirm", action="store_true", help="confirm finalists only")
    parser.add_argument("--heal", default=None, help="run the heal heals/ID of this run")
    args = parser.parse_args(argv)
    configure_logging("%(asctime)s %(levelname)s %(name)s: %(message)s", sys.stdout)
    store = RunStore(args.run_dir)
    store.set_meta(pid=os.getpid())
    return Worker(store, resume=args.resume, confirm_only=args.confirm, heal=args.heal).run()


if __name__ == "__main__":
    sys.exit(main())
