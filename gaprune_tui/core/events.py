"""The run's events: what the engine reports through the store, one small dataclass per kind.

The engine (``engine/search.py``, ``engine/worker.py``, ``engine/export.py``) builds these objects,
``RunStore.add_event`` stores ``kind`` plus ``to_payload()`` as JSON, and ``RunStore.events()``
returns them again through ``parse``; ``Follower``, the CLI and the tests' fake engine read their
attributes. One definition per field is what keeps the writers and the readers from drifting apart.

``parse`` is tolerant on purpose: a run.db written by an older or newer version must still open.
Missing fields take their defaults, unknown fields are kept in ``extra`` (and written back by
``to_payload``), renamed fields are mapped through ``aliases`` (``gen`` became ``generation``), and
an unknown kind comes back as an ``UnknownEvent`` that readers ignore.

Stdlib only: the TUI imports this on its start path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

Scores = dict[str, dict[str, float]]

# Fields every event carries that are not part of its payload: where and when the store put it.
_ENVELOPE = frozenset({"seq", "ts", "extra"})
# Metadata of a field the engine hands along with an event but never stores (a checkpoint blob).
TRANSIENT = {"transient": True}
# Fields only the event carries: the store's generation row has no column for them.
EVENT_ONLY = {"event_only": True}


@dataclass
class RunEvent:
    """Base of every event. ``seq`` and ``ts`` are set by the store when it reads an event back."""

    kind: ClassVar[str] = ""
    # Payload keys written by older versions under another name: old name -> field name.
    aliases: ClassVar[Mapping[str, str]] = {}

    seq: int = field(default=0, kw_only=True, compare=False)
    ts: float = field(default=0.0, kw_only=True, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, compare=False, repr=False)

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready fields of this event (unknown fields it was read with included)."""
        payload = dict(self.extra)
        for f in fields(self):
            if f.name not in _ENVELOPE and not f.metadata.get("transient"):
                payload[f.name] = getattr(self, f.name)
        return payload

    @property
    def payload(self) -> dict[str, Any]:
        """``to_payload()``, for readers that want the plain mapping (export's lineage does)."""
        return self.to_payload()


@dataclass
class UnknownEvent(RunEvent):
    """An event of a kind this version does not know (written by a newer one): kept, not read."""

    name: str = ""

    def __post_init__(self) -> None:
        setattr(self, "kind", self.name)  # noqa: B010 - an instance value shadows the ClassVar

    def to_payload(self) -> dict[str, Any]:
        return dict(self.extra)


@dataclass
class RunStarted(RunEvent):
    """The engine loaded the model and tasks and starts (or resumes) the search."""

    kind: ClassVar[str] = "run_started"
    model: str = "?"
    n_layers: int = 0
    protect: int = 0
    prune: int = 0
    population: int = 0
    generations: int = 0
    tasks: list[str] = field(default_factory=list)
    max_evaluations: int = 0
    resumed: bool = False
    fitness: str = "squared_mean"
    # "pareto": every k in ``prune_range`` at once; ``prune`` is then unused.
    objective: str = "single"
    prune_range: list[int] | None = None
    # "sublayer": genomes name attention (2 i) and MLP (2 i + 1) sub-blocks (``core/units.py``).
    granularity: str = "layer"
    attention_drops: int | None = None


@dataclass
class BaseScores(RunEvent):
    """The unpruned model's scores: the reference every genome is compared with."""

    kind: ClassVar[str] = "base_scores"
    scores: Scores = field(default_factory=dict)
    fitness: float = 0.0
    from_memo: bool = False


@dataclass
class EvaluationStarted(RunEvent):
    """A genome is being scored. ``fidelity`` is set (``"screen:5"``) for a screening pass."""

    kind: ClassVar[str] = "evaluation_started"
    generation: int = 0
    index: int = 0
    dropped: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    fidelity: str | None = None
    task: str | None = None


@dataclass
class EvaluationTask(RunEvent):
    """Finer progress inside one evaluation: the task being scored now."""

    kind: ClassVar[str] = "evaluation_task"
    task: str | None = None


@dataclass
class EvaluationFinished(RunEvent):
    """One genome scored (``fidelity`` "full", "screen:N" or "invalid")."""

    kind: ClassVar[str] = "evaluation_finished"
    generation: int = 0
    dropped: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    fitness: float = 0.0
    scores: Scores = field(default_factory=dict)
    seconds: float = 0.0
    from_memo: bool = False
    fidelity: str = "full"


@dataclass
class GenerationFinished(RunEvent):
    """A generation closed. ``checkpoint`` (the search state to resume from) travels from the
    search to the worker, which stores it in its own table: it is never part of the payload."""

    kind: ClassVar[str] = "generation_finished"
    aliases: ClassVar[Mapping[str, str]] = {"gen": "generation"}
    generation: int = 0
    evaluated: int = 0
    from_memo: int = 0
    min: float = 0.0
    mean: float = 0.0
    max: float = 0.0
    best_dropped: list[int] = field(default_factory=list)
    best_fitness: float = 0.0
    seconds: float = 0.0
    population: list[list[int]] = field(default_factory=list)
    # Pareto runs: the front so far (``core/pareto.FrontPoint.to_dict``: k, dropped, fitness,
    # dominated; one member per k) and its hypervolume against the run's fixed reference point.
    front: list[dict[str, Any]] = field(default_factory=list, metadata=EVENT_ONLY)
    hypervolume: float | None = field(default=None, metadata=EVENT_ONLY)
    checkpoint: bytes = field(default=b"", repr=False, compare=False, metadata=TRANSIENT)


@dataclass
class SearchFinished(RunEvent):
    """The search's own summary at its end (the worker builds result.json from the store)."""

    kind: ClassVar[str] = "search_finished"
    hall_of_fame: list[dict[str, Any]] = field(default_factory=list)
    evaluated: int = 0
    memo_hits: int = 0


@dataclass
class RunPaused(RunEvent):
    kind: ClassVar[str] = "run_paused"


@dataclass
class RunResumed(RunEvent):
    """A paused run continues (``unpause``; not ``resume``, which restarts a stopped run)."""

    kind: ClassVar[str] = "run_resumed"


@dataclass
class RunStopped(RunEvent):
    kind: ClassVar[str] = "run_stopped"


@dataclass
class RunFailed(RunEvent):
    kind: ClassVar[str] = "run_failed"
    error: str = ""


@dataclass
class RunFinished(RunEvent):
    """The search ended; ``result`` is what result.json holds."""

    kind: ClassVar[str] = "run_finished"
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogMessage(RunEvent):
    """A line for the Run screen's message list."""

    kind: ClassVar[str] = "log"
    message: str = ""


@dataclass
class ExportFinished(RunEvent):
    """A genome was exported (and verified, unless ``verified`` is None)."""

    kind: ClassVar[str] = "export_finished"
    path: str = ""
    rank: int = 1
    dropped: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    dtype: str = ""
    fitness: float = 0.0
    verified: bool | None = None
    summary: str = ""
    params_before: int = 0
    params_after: int = 0
    size_bytes: int = 0


@dataclass
class ReferenceScored(RunEvent):
    """A baseline (ShortGPT, angular distance, last k from one pass; greedy removal on the run's
    fitness) scored like any genome: the reference rows a search must beat in plain sight."""

    kind: ClassVar[str] = "reference_scored"
    name: str = ""
    dropped: list[int] = field(default_factory=list)
    fitness: float = 0.0
    scores: Scores = field(default_factory=dict)
    signal: float | None = None
    # Fresh evaluations the pick cost (greedy: its whole path, on the event of its largest k;
    # the one-pass baselines: 0) and their scoring seconds: part of the run's budget.
    evaluations: int = 0
    seconds: float = 0.0
    # The same in full-fidelity evaluations (greedy with multi-step selection: less than its count).
    cost: float = 0.0


@dataclass
class ConfirmationStarted(RunEvent):
    """The search ended; its finalists, the baselines and the base model are re-scored on more
    items (``confirm_limit`` per task) and on held-out tasks."""

    kind: ClassVar[str] = "confirmation_started"
    genomes: int = 0
    confirm_limit: int | None = None
    tasks: list[str] = field(default_factory=list)
    holdout_tasks: list[str] = field(default_factory=list)
    # Per run task, the items skipped (those the search scored); 0 where none were left.
    offsets: dict[str, int] = field(default_factory=dict)


@dataclass
class GenomeConfirmed(RunEvent):
    """One genome's confirmation. ``role`` is "finalist", "baseline" or "base"; ``label`` names
    it ("finalist 2", "shortgpt", "base model"). Scores carry their standard errors."""

    kind: ClassVar[str] = "genome_confirmed"
    label: str = ""
    role: str = "finalist"
    rank: int = 0  # a finalist's rank in the search (1 = its best); 0 for the others
    dropped: list[int] = field(default_factory=list)
    fitness: float | None = None
    fitness_stderr: float | None = None
    confirmed: float | None = None
    confirmed_stderr: float | None = None
    confirmed_scores: Scores = field(default_factory=dict)
    holdout: float | None = None
    holdout_stderr: float | None = None
    holdout_scores: Scores = field(default_factory=dict)
    seconds: float = 0.0

    def numbers(self) -> dict[str, Any]:
        """The confirmed and held-out fitness, standard errors and per-task scores, keyed by field
        name: what result.json and an export's lineage record of a confirmation."""
        return {
            f"{stage}{part}": getattr(self, f"{stage}{part}")
            for stage in ("confirmed", "holdout")
            for part in ("", "_stderr", "_scores")
        }


@dataclass
class ExportFailed(RunEvent):
    kind: ClassVar[str] = "export_failed"
    rank: int = 1
    error: str = ""


EVENT_TYPES: dict[str, type[RunEvent]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        BaseScores,
        EvaluationStarted,
        EvaluationTask,
        EvaluationFinished,
        GenerationFinished,
        SearchFinished,
        RunPaused,
        RunResumed,
        RunStopped,
        RunFailed,
        RunFinished,
        LogMessage,
        ReferenceScored,
        ConfirmationStarted,
        GenomeConfirmed,
        ExportFinished,
        ExportFailed,
    )
}


def parse(kind: str, payload: Mapping[str, Any], *, seq: int = 0, ts: float = 0.0) -> RunEvent:
    """The event of ``kind`` from a stored payload; tolerant of old, new and unknown payloads."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return UnknownEvent(name=kind, seq=seq, ts=ts, extra=dict(payload))
    known = {
        f.name for f in fields(cls) if f.name not in _ENVELOPE and not f.metadata.get("transient")
    }
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in payload.items():
        name = cls.aliases.get(key, key)
        if name in known:
            values[name] = value
        else:
            extra[key] = value
    return cls(**values, seq=seq, ts=ts, extra=extra)


@dataclass
class WorkerStatus(RunEvent):
    """One worker of a several-worker backend (``engine/backends``): what it is doing now.

    ``state`` is idle (loaded, waiting), busy or lost (died); ``dropped`` the genome in flight
    (busy); ``scored`` the genome it just finished (set once per scored genome, so counting these
    events gives each worker's evaluations over every session); ``evaluations`` and ``seconds``
    its genomes and scoring time in this session; ``pid`` its process (0 where unknown)."""

    kind: ClassVar[str] = "worker_status"
    name: str = ""
    device: str = ""
    state: str = ""
    dropped: list[int] | None = None
    scored: list[int] | None = None
    evaluations: int = 0
    seconds: float = 0.0
    # The same in full-fidelity evaluations (greedy with multi-step selection: less than its count).
    cost: float = 0.0
    backend: str = ""
    pid: int = 0


EVENT_TYPES[WorkerStatus.kind] = WorkerStatus


@dataclass
class HealStarted(RunEvent):
    """A heal of one genome began (or resumed from its checkpoint at ``from_step``)."""

    kind: ClassVar[str] = "heal_started"
    heal: str = ""  # its id: the folder under the run's heals/
    dropped: list[int] = field(default_factory=list)
    rank: int = 0
    method: str = ""
    objective: str = ""
    data: str = ""
    tokens: int = 0
    steps: int = 0
    trainable: int = 0  # parameters trained
    from_step: int = 0


@dataclass
class HealStep(RunEvent):
    """One optimizer step of a heal: its loss, learning rate, speed and what is left."""

    kind: ClassVar[str] = "heal_step"
    heal: str = ""
    step: int = 0
    steps: int = 0
    loss: float = 0.0
    lr: float = 0.0
    tokens_per_s: float = 0.0
    eta_s: float = 0.0


@dataclass
class HealMeasured(RunEvent):
    """The genome measured before or after healing (``phase``): KL to the base model and
    perplexity on the run's calibration text, confirmed and held-out task scores, each ± SE."""

    kind: ClassVar[str] = "heal_measured"
    heal: str = ""
    phase: str = ""  # "before" or "after"
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class HealFinished(RunEvent):
    """A heal ended: ``record`` is its entry in result.json's ``heals`` (or why it failed)."""

    kind: ClassVar[str] = "heal_finished"
    heal: str = ""
    state: str = "finished"  # finished, stopped or failed
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""


for _cls in (HealStarted, HealStep, HealMeasured, HealFinished):
    EVENT_TYPES[_cls.kind] = _cls
