"""A heal as a job of the engine process: ``python -m gaprune_tui.engine.worker RUN --heal ID``.

The CLI (or the TUI) writes ``heals/ID/request.json`` (the genome and the ``HealConfig``) and
starts the engine; this measures the genome before healing, trains it (``engine/heal.py``),
writes the healed tensors, measures it after, and adds the heal to result.json's ``heals``. Every
step is an event in the run store (loss, tokens/s, ETA), pause and stop are honoured between
steps, and a heal that was stopped or killed resumes from its last checkpoint.

While it runs the run's state is ``running`` (so that pause, stop and the screens see a live
engine); at the end it is the state the run had before. ``heals/ID/state.json`` says where the
heal itself stands: running, stopped, failed or finished.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from typing import Any

import torch

from gaprune_tui.core import events
from gaprune_tui.core.heal import (
    BEFORE_FILE,
    RECORD_FILE,
    REQUEST_FILE,
    STATE_FILE,
    HealConfig,
    heals_dir,
    read_json,
    write_json,
)
from gaprune_tui.core.stats import compare, paired_compare
from gaprune_tui.core.store import RunState, RunStore
from gaprune_tui.engine.control import StopRequested
from gaprune_tui.engine.setup import Setup

log = logging.getLogger(__name__)


def measure(setup: Setup, loaded: Any, dropped: list[int], base_dist: Any) -> dict[str, Any]:
    """KL to the base model and perplexity on the run's calibration text, confirmed and held-out
    task scores (at the run's confirm limit), each with its standard error, of ``loaded`` with
    ``dropped`` removed. Scorers without a prefix cache: a healed model is not the base's view."""
    from gaprune_tui.core.fitness import CALIBRATION, is_calibration
    from gaprune_tui.engine.confirm import Candidate, Confirmer
    from gaprune_tui.engine.evaluator import Evaluator
    from gaprune_tui.engine.kl import KLScorer
    from gaprune_tui.engine.scoring import make_lm

    config = setup.config
    lm = make_lm(loaded, "fast", prefix_cache=False)
    kl = KLScorer(loaded, setup.calibration, base_dist, lm=lm)
    kept = [i for i in range(loaded.n_layers) if i not in set(dropped)]
    # The run's own fitness, scored the way the search scored it (an export re-scores it).
    calibration_fitness = is_calibration(config.fitness)
    evaluator = Evaluator(
        loaded, setup.taskset, config, setup.memo, lm=lm, kl=kl if calibration_fitness else None
    )
    outcome = evaluator(list(dropped))
    if calibration_fitness:
        numbers: dict[str, Any] = dict(outcome.scores[CALIBRATION])
    else:
        numbers = dict(kl.score(kept))
    numbers["fitness"] = outcome.fitness
    numbers["fitness_scores"] = outcome.scores
    confirmer = Confirmer(loaded, config, setup.memo, lm)
    event = confirmer.one(Candidate("heal", "finalist", list(dropped)))
    numbers.update(event.numbers())
    numbers["tasks"] = confirmer.tasks
    numbers["holdout_tasks"] = confirmer.holdout_tasks
    return numbers


def verdicts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """After against before: KL and perplexity paired over the calibration sequences (the same
    text), task scores unpaired (two scorings of the same items: conservative)."""
    out: dict[str, Any] = {}
    if before.get("kl_seq") and after.get("kl_seq"):
        v = paired_compare(after["kl_seq"], before["kl_seq"], higher_is_better=False)
        out["kl"] = {"outcome": v.outcome, "diff": v.diff, "stderr": v.stderr}
        v = paired_compare(after["nll_seq"], before["nll_seq"], higher_is_better=False)
        out["nll"] = {"outcome": v.outcome, "diff": v.diff, "stderr": v.stderr}
    for stage in ("confirmed", "holdout"):
        a, b = after.get(stage), before.get(stage)
        sa, sb = after.get(f"{stage}_stderr"), before.get(f"{stage}_stderr")
        if a is None or b is None or sa is None or sb is None:
            continue
        v = compare((float(a), float(sa)), (float(b), float(sb)), higher_is_better=True)
        out[stage] = {"outcome": v.outcome, "diff": v.diff, "stderr": v.stderr}
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports the peak resident set in KiB: the whole process, model included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class HealJob:
    """One heal, run by ``Worker`` (which owns setup, control and the store)."""

    def __init__(self, worker: Any, heal_id: str) -> None:
        self.worker = worker
        self.store: RunStore = worker.store
        self.id = heal_id
        self.folder = heals_dir(self.store) / heal_id
        request = read_json(self.folder / REQUEST_FILE)
        if request is None:
            raise FileNotFoundError(f"no heal request at {self.folder / REQUEST_FILE}")
        self.request = request
        self.config = HealConfig.from_json(request["config"]).validate()
        self.dropped = sorted(int(i) for i in request["dropped"])
        self.rank = int(request.get("rank") or 0)

    def set_state(self, state: str, **extra: Any) -> None:
        write_json(self.folder / STATE_FILE, {"state": state, "updated": time.time(), **extra})

    def run(self) -> int:
        store = self.store
        previous = RunState(self.request.get("run_state") or store.state)
        if previous.active:
            previous = RunState.STOPPED
        store.set_meta(healing=self.id)
        store.set_state(RunState.RUNNING)
        self.set_state("running", pid=os.getpid())
        code = 0
        try:
            record = self.heal(self.worker.setup())
        except StopRequested:
            self.set_state("stopped")
            store.add_event(events.HealFinished(heal=self.id, state="stopped"))
            log.info("heal stopped; continue it with: gaprune-tui resume %s", store.id)
        except Exception as exc:
            message = f"heal failed: {type(exc).__name__}: {exc}".splitlines()[0]
            log.error("%s", message, exc_info=not _is_user_error(exc))
            # Bad input (too little text, ...) is not resumed: the same request would fail again.
            self.set_state("invalid" if _is_user_error(exc) else "failed", error=message)
            store.add_event(events.HealFinished(heal=self.id, state="failed", error=message))
            code = 2 if _is_user_error(exc) else 1
        else:
            self.set_state("finished")
            store.add_event(events.HealFinished(heal=self.id, record=record))
        finally:
            for request in store.pending_requests():
                store.mark_handled(request.id)
            store.set_meta(healing=None)
            store.set_state(previous)
        return code

    def heal(self, setup: Setup) -> dict[str, Any]:
        from gaprune_tui.engine.heal import (
            Trainer,
            build_student,
            healed_tensors,
            load_heal_data,
            load_healed,
            save_weights,
            student_loaded,
            weights_digest,
        )
        from gaprune_tui.engine.kl import BaseDistributions

        store, config, worker = self.store, self.config, self.worker
        loaded = setup.loaded
        kept = [i for i in range(loaded.n_layers) if i not in set(self.dropped)]
        measured_tasks = [t.name for t in setup.config.tasks] + list(setup.config.holdout)
        data = load_heal_data(
            config.data,
            loaded.tokenizer,
            config.tokens,
            config.seq_len,
            measured_tasks=measured_tasks,
            calibration=setup.config.calibration,
        )
        log.info("heal data %s", data.description)
        worker.handle_control()
        base_dist = BaseDistributions.compute(loaded, setup.calibration)
        before = read_json(self.folder / BEFORE_FILE)
        if before is None:
            log.info("measuring drop %s before healing", self.dropped)
            before = measure(setup, loaded, self.dropped, base_dist)
            write_json(self.folder / BEFORE_FILE, before)
        store.add_event(events.HealMeasured(heal=self.id, phase="before", numbers=before))
        student = build_student(loaded.view, kept, config)
        trainer = Trainer(
            loaded.model,
            student,
            data,
            config,
            self.folder,
            between=worker.handle_control,
            on_step=self.on_step,
        )
        resumed = trainer.load()
        store.add_event(
            events.HealStarted(
                heal=self.id,
                dropped=self.dropped,
                rank=self.rank,
                method=config.method,
                objective=config.objective,
                data=data.description,
                tokens=trainer.steps * config.tokens_per_step,
                steps=trainer.steps,
                trainable=student.n_trainable,
                from_step=trainer.step,
            )
        )
        log.info(
            "healing drop %s: %s, %s, %d steps of %d tokens, %d trainable parameters%s",
            self.dropped,
            config.method,
            config.objective,
            trainer.steps,
            config.tokens_per_step,
            student.n_trainable,
            f", resumed at step {trainer.step}" if resumed else "",
        )
        losses = trainer.run()
        tensors = healed_tensors(student)
        save_weights(tensors, self.folder)
        digest = weights_digest(tensors)
        del student
        healed = load_healed(loaded.view, kept, tensors)
        healed_model = student_loaded(loaded, healed, f"healed:{digest}")
        log.info("measuring the healed model")
        worker.handle_control()
        after = measure(setup, healed_model, [], base_dist)
        store.add_event(events.HealMeasured(heal=self.id, phase="after", numbers=after))
        record: dict[str, Any] = {
            "id": self.id,
            "dropped": self.dropped,
            "kept": kept,
            "rank": self.rank,
            "method": config.method,
            "objective": config.objective,
            "data": data.description,
            "tokens": trainer.steps * config.tokens_per_step,
            "steps": trainer.steps,
            "seconds": round(trainer.seconds, 1),
            "tokens_per_s": round(trainer.steps * config.tokens_per_step / trainer.seconds, 1)
            if trainer.seconds > 0
            else None,
            "peak_memory_mb": round(peak_memory_mb(loaded.device), 1),
            "trainable": healed_count(tensors),
            "untied_head": healed.untied,
            "config": config.to_json(),
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "device": str(loaded.device),
            "threads": torch.get_num_threads(),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "losses": [round(x, 5) for x in losses],
            "weights": str(self.folder / "weights.safetensors"),
            "digest": digest,
            "before": _summary(before),
            "after": _summary(after),
            "verdicts": verdicts(before, after),
            "finished": time.time(),
        }
        write_json(self.folder / RECORD_FILE, record)
        add_to_result(store, record)
        v: dict[str, Any] = record["verdicts"].get("kl", {})
        log.info(
            "healed drop %s: KL %.4f -> %.4f (%s), held-out %s -> %s",
            self.dropped,
            before["kl"],
            after["kl"],
            v.get("outcome", "?"),
            before.get("holdout"),
            after.get("holdout"),
        )
        return record

    def on_step(self, report: Any) -> None:
        self.store.add_event(
            events.HealStep(
                heal=self.id,
                step=report.step,
                steps=report.steps,
                loss=report.loss,
                lr=report.lr,
                tokens_per_s=round(report.tokens_per_s, 1),
                eta_s=round(report.eta_s, 1),
            )
        )


def healed_count(tensors: dict[str, torch.Tensor]) -> int:
    return int(sum(t.numel() for t in tensors.values()))


def _summary(numbers: dict[str, Any]) -> dict[str, Any]:
    """What result.json keeps of a measurement (per-sequence values stay in before.json)."""
    keep = (
        "fitness",
        "fitness_scores",
        "kl",
        "kl_stderr",
        "ppl",
        "ppl_stderr",
        "confirmed",
        "confirmed_stderr",
        "confirmed_scores",
        "holdout",
        "holdout_stderr",
        "holdout_scores",
        "tasks",
        "holdout_tasks",
        "kl_seq",
        "nll_seq",
    )
    return {k: numbers.get(k) for k in keep}


def add_to_result(store: RunStore, record: dict[str, Any]) -> None:
    """result.json's ``heals``: this heal replaces an earlier one with the same id."""
    result = store.result() or {}
    heals = [h for h in result.get("heals", []) if h.get("id") != record["id"]]
    heals.append(record)
    result["heals"] = heals
    store.write_result(result)


def _is_user_error(exc: BaseException) -> bool:
    from gaprune_tui.core.errors import GapruneError

    return isinstance(exc, GapruneError)


if __name__ == "__main__":  # pragma: no cover - the worker is the entry point
    sys.exit("run it through: python -m gaprune_tui.engine.worker RUN --heal ID")
