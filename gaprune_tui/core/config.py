"""The run configuration: one dataclass shared by the CLI, the config TOML and the setup screen.

Validation here only needs the config itself; checks that need the model (k against the number of
layers) live in ``RunConfig.check_layers`` and are called by the engine once the model is loaded.
This module must stay light: the TUI imports it on its start path.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from gaprune_tui.core import fitness as fitness_kinds
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.modelspec import DTYPE_CHOICES, canonical_dtype
from gaprune_tui.core.units import GRANULARITIES, GenomeSpace, family_error, units_per_layer

DEFAULT_TASKS = ("hellaswag_offline", "openbookqa_offline")
# Held-out tasks confirm finalists on data the fitness never saw (those in the fitness are left out).
DEFAULT_HOLDOUT = ("arc_easy_offline", "piqa_offline", "winogrande_offline")
FITNESS_CHOICES = fitness_kinds.FITNESS_KINDS
# Calibration text is cut into sequences of this many tokens (engine/calibration.py), and a
# standard error needs two of them: fewer tokens than two sequences is refused here, not after
# the engine has loaded the model.
CALIBRATION_SEQ_LEN = 128
INIT_CHOICES = ("random", "heuristics")
# ``ga``: the original method's operators (DEAP); ``evopress``: (1 + lambda) evolution with
# count-preserving swaps and multi-step selection (EvoPress). Pareto runs always use NSGA-II.
ALGORITHM_CHOICES = ("evopress", "ga")
# The references a run scores before searching (``engine/baselines.py``); ``greedy`` is SLEB-style
# removal on the run's own fitness and costs evaluations (stated in the estimate and the log).
BASELINE_CHOICES = ("shortgpt", "angular", "last_k", "greedy")
# Greedy is on by default: with multi-step selection it costs about as much as the CPU search
# and its pick beat ShortGPT's at k = 8 and 10 on the embedded model (README, the bench).
DEFAULT_BASELINES = ("shortgpt", "angular", "last_k", "greedy")
# Each algorithm's own population and generations (the dataclass defaults are the default
# algorithm's): EvoPress's "population" is its random starting candidates (screened), and its
# generations are cheap (16 children on 512 tokens, 2 on all: 6 full evaluations each), so 32 x 100
# costs about as much as the original GA's 60 x 10 (608 against 660 full evaluations).
ALGORITHM_DEFAULTS: dict[str, dict[str, int]] = {
    "evopress": {"population": 32, "generations": 100},
    "ga": {"population": 60, "generations": 10},
}
MUTATION_CHOICES = ("uniform", "swap")
INVALID_CHOICES = ("repair", "zero")
SCORER_CHOICES = ("fast", "hflm")
# single: one k (``prune``), the original method; pareto: every k in ``prune_range`` at once.
OBJECTIVE_CHOICES = ("single", "pareto")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class TaskSpec:
    """One benchmark: an lm-eval task name and per-task overrides of the run's defaults."""

    name: str
    metric: str | None = None
    num_fewshot: int | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """Parse ``name`` or ``name:metric`` (the CLI's per-task form)."""
        name, _, metric = text.strip().partition(":")
        if not name:
            raise ConfigError(f"empty task name in {text!r}: use --tasks name[:metric],...")
        return cls(name=name.strip(), metric=metric.strip() or None)


@dataclass
class RunConfig:
    """Everything that defines a search. Defaults follow the original method."""

    model: str = "demo"
    tasks: list[TaskSpec] = field(default_factory=lambda: [TaskSpec(t) for t in DEFAULT_TASKS])
    metric: str | None = None
    num_fewshot: int = 0
    limit: int | None = 100
    include_path: list[str] = field(default_factory=list)
    prune: int = 4
    # ``objective = "pareto"`` searches every k in ``prune_range`` ([MIN, MAX]) at once (NSGA-II).
    objective: str = "single"
    prune_range: list[int] | None = None
    protect: int = 2
    # ``sublayer`` drops attention and MLP sub-blocks (``core/units.py``): ``prune`` then counts
    # sub-blocks, and ``attention_drops`` (optional) fixes how many of them are attention.
    granularity: str = "layer"
    attention_drops: int | None = None
    population: int = ALGORITHM_DEFAULTS["evopress"]["population"]
    generations: int = ALGORITHM_DEFAULTS["evopress"]["generations"]
    cxpb: float = 0.5
    mutpb: float = 0.5
    tournament: int = 5
    seed: int = 0
    # KL to the base model on calibration text: on the embedded model it predicts held-out
    # quality far better than the original squared task mean at limit 20 (README, Trustworthy
    # picks); ``squared_mean`` keeps the original method.
    fitness: str = "kl"
    calibration: str = "offline"
    calibration_tokens: int = 2048
    finalists: int = 5
    confirm_limit: int | None = 100
    holdout_tasks: list[str] | None = None
    # Generation 0 starts from the baselines (``random``: the original method's random start).
    init: str = "heuristics"
    algorithm: str = "evopress"
    baselines: list[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    # EvoPress: offspring per generation, scored first on ``selection_tokens`` calibration tokens
    # (KL/perplexity; task fitness screens on ``screen`` items), the best ``survivors`` then on all.
    offspring: int = 16
    survivors: int = 2
    selection_tokens: int | None = 512
    mutation: str = "uniform"
    invalid: str = "repair"
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    scorer: str = "fast"
    screen: int | None = None
    prefix_cache: bool = True
    prefix_cache_mb: int = 4096
    # Several workers (engine/backends): N processes on --device (CPU: the cores split between
    # them), one per device of ``devices`` ("all" or "cuda:0,cuda:1"), or Ray actors
    # (``ray``: local, auto or a cluster's ADDRESS).
    workers: int = 1
    devices: str | None = None
    ray: str | None = None

    # ---- derived -------------------------------------------------------------------------
    def task_metric(self, spec: TaskSpec) -> str | None:
        return spec.metric or self.metric

    def task_fewshot(self, spec: TaskSpec) -> int:
        return self.num_fewshot if spec.num_fewshot is None else spec.num_fewshot

    def task_limit(self, spec: TaskSpec) -> int | None:
        return self.limit if spec.limit is None else spec.limit

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"

    @property
    def ks(self) -> list[int]:
        """The numbers of dropped layers the search covers: the range, or ``[prune]``."""
        if self.pareto and self.prune_range:
            low, high = self.prune_range
            return list(range(low, high + 1))
        return [self.prune]

    @property
    def evopress(self) -> bool:
        """Whether the search is EvoPress's (1 + lambda) evolution (single-objective runs only)."""
        return self.algorithm == "evopress" and not self.pareto

    @property
    def search_algorithm(self) -> str:
        """The search that runs: ``evopress``, ``ga`` or, for a Pareto run, ``nsga2``."""
        return "nsga2" if self.pareto else self.algorithm

    @property
    def screen_limit(self) -> int | None:
        """The cheap first stage of multi-step selection: calibration tokens for KL and
        perplexity (None when it would be all of them), items per task for task fitness."""
        if fitness_kinds.is_calibration(self.fitness):
            tokens = self.selection_tokens
            return tokens if tokens is not None and tokens < self.calibration_tokens else None
        return self.screen

    @property
    def max_evaluations(self) -> int:
        """Upper bound on the genomes a search scores (each once per generation, at any
        fidelity: what the Run screen counts): the initial population plus all offspring. The
        cost of a screened one is less: ``estimate.search_budget`` says it in full evaluations."""
        if self.evopress:
            return self.population + self.generations * self.offspring
        return self.population * (1 + self.generations)

    @property
    def higher_is_better(self) -> bool:
        return fitness_kinds.higher_is_better(self.fitness)

    @property
    def holdout(self) -> list[str]:
        """The held-out tasks: as given, or the defaults minus any the fitness already uses."""
        if self.holdout_tasks is not None:
            return list(self.holdout_tasks)
        used = {t.name for t in self.tasks}
        return [name for name in DEFAULT_HOLDOUT if name not in used]

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> RunConfig:
        """Normalise and check every field; raise ``ConfigError`` naming the field and the fix."""
        self.dtype = canonical_dtype(self.dtype)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                "no model given: use --model demo, a local folder, a .gguf or a hub id"
            )
        if not self.tasks:
            raise ConfigError("no tasks given: use --tasks hellaswag_offline,openbookqa_offline")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"task {dupes[0]!r} is listed twice: list each task once")
        _int_at_least("prune", self.prune, 1, "the number of layers to drop")
        _int_at_least("protect", self.protect, 0, "the number of leading layers never dropped")
        if self.algorithm == "evopress" and not self.pareto:
            _int_at_least("population", self.population, 0, "random starting candidates")
        else:
            _int_at_least("population", self.population, 2, "DEAP needs at least 2 individuals")
        _int_at_least("generations", self.generations, 0, "the number of generations")
        _int_at_least("tournament", self.tournament, 1, "the tournament size")
        _int_at_least("num_fewshot", self.num_fewshot, 0, "the number of few-shot examples")
        _int_at_least("prefix_cache_mb", self.prefix_cache_mb, 0, "the prefix-cache budget in MB")
        if self.limit is not None:
            _int_at_least("limit", self.limit, 1, "items per task, or leave it unset for all")
        if self.screen is not None:
            _int_at_least("screen", self.screen, 1, "items per task for the screening pass")
        for spec in self.tasks:
            if spec.limit is not None:
                _int_at_least(f"{spec.name}.limit", spec.limit, 1, "items for this task")
            if spec.num_fewshot is not None:
                _int_at_least(f"{spec.name}.num_fewshot", spec.num_fewshot, 0, "few-shot count")
        for name in ("cxpb", "mutpb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
            setattr(self, name, float(value))
        self._validate_trust()
        _choice("fitness", self.fitness, FITNESS_CHOICES)
        _choice("invalid", self.invalid, INVALID_CHOICES)
        _choice("dtype", self.dtype, DTYPE_CHOICES)
        _choice("scorer", self.scorer, SCORER_CHOICES)
        self._validate_granularity()
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        for path in self.include_path:
            if not Path(path).expanduser().is_dir():
                raise ConfigError(f"include path {path!r} is not a folder: give a folder of YAMLs")
        validate_backend(self)
        return self

    def _validate_granularity(self) -> None:
        """``granularity`` and ``attention_drops`` (sub-block runs only, at most ``prune``)."""
        _choice("granularity", self.granularity, GRANULARITIES)
        if self.granularity == "sublayer" and self.protect < 1:
            raise ConfigError(
                "--granularity sublayer needs --protect 1 or more (the KV cache reads the sequence "
                "length at layer 0's attention): use --protect 1"
            )
        if self.granularity == "sublayer" and self.pareto:
            # A front over sub-block counts would rank an attention drop with an MLP drop 3x its
            # size; the front a sub-block run needs is quality against parameters removed.
            raise ConfigError(
                "--objective pareto covers whole layers (its size axis counts layers): use "
                "--granularity layer, or one size with --granularity sublayer --prune K"
            )
        if self.attention_drops is None:
            return
        _int_at_least("attention_drops", self.attention_drops, 0, "attention sub-blocks to drop")
        if self.granularity != "sublayer":
            raise ConfigError(
                "--attention-drops counts attention sub-blocks: add --granularity sublayer"
            )
        if self.attention_drops > self.prune:
            raise ConfigError(
                f"--attention-drops {self.attention_drops} is more than the {self.prune} "
                f"sub-blocks --prune drops: use --attention-drops 0..{self.prune}"
            )

    def _validate_trust(self) -> None:
        """The fields of a trustworthy pick: calibration, finalists, held-out tasks, operators."""
        if not isinstance(self.calibration, str) or not self.calibration.strip():
            raise ConfigError("calibration is empty: use offline, a .txt/.jsonl file or hf:NAME")
        _int_at_least(
            "calibration_tokens",
            self.calibration_tokens,
            2 * CALIBRATION_SEQ_LEN,
            f"two sequences of {CALIBRATION_SEQ_LEN} calibration tokens",
        )
        _int_at_least("finalists", self.finalists, 0, "genomes confirmed at the end, 0 for none")
        if self.confirm_limit is not None:
            _int_at_least("confirm_limit", self.confirm_limit, 1, "items per task to confirm")
        if self.holdout_tasks is not None:
            if isinstance(self.holdout_tasks, str):
                self.holdout_tasks = [t.strip() for t in self.holdout_tasks.split(",") if t.strip()]
            if not all(isinstance(t, str) and t for t in self.holdout_tasks):
                raise ConfigError("holdout_tasks must be task names: use --holdout-tasks a,b,c")
            clash = sorted({t.name for t in self.tasks} & set(self.holdout_tasks))
            if clash:
                raise ConfigError(
                    f"task {clash[0]!r} is both a fitness task and held out: a held-out task "
                    "must be one the search never saw"
                )
        _choice("init", self.init, INIT_CHOICES)
        _choice("mutation", self.mutation, MUTATION_CHOICES)
        self._validate_search()
        self._validate_objective()
        if self.screen is not None and self.fitness not in fitness_kinds.TASK_KINDS:
            raise ConfigError(
                f"--screen applies to task fitness, not {self.fitness}: drop --screen "
                "(KL and perplexity are already cheap)"
            )

    def _validate_search(self) -> None:
        """``algorithm``, ``baselines`` and EvoPress's selection settings."""
        _choice("algorithm", self.algorithm, ALGORITHM_CHOICES)
        if isinstance(self.baselines, str):
            text = self.baselines.strip()
            names = [] if text.lower() == "none" else text.split(",")
            self.baselines = [b.strip() for b in names if b.strip()]
        if not isinstance(self.baselines, list | tuple):
            raise ConfigError("baselines must be a list: use --baselines shortgpt,angular,last_k")
        for name in self.baselines:
            if name not in BASELINE_CHOICES:
                raise ConfigError(
                    f"unknown baseline {name!r}: use a comma-separated subset of "
                    f"{', '.join(BASELINE_CHOICES)} (or 'none')"
                )
        self.baselines = list(dict.fromkeys(self.baselines))
        _int_at_least("offspring", self.offspring, 1, "children of the parent per generation")
        _int_at_least("survivors", self.survivors, 1, "offspring re-scored on all the data")
        if self.selection_tokens is not None:
            _int_at_least(
                "selection_tokens",
                self.selection_tokens,
                CALIBRATION_SEQ_LEN,
                f"calibration tokens for the first selection step (sequences of "
                f"{CALIBRATION_SEQ_LEN}), or 'all' for none",
            )

    def _validate_objective(self) -> None:
        """``objective`` and ``prune_range`` ("MIN:MAX" or [MIN, MAX], 1 <= MIN < MAX)."""
        _choice("objective", self.objective, OBJECTIVE_CHOICES)
        if isinstance(self.prune_range, str):
            self.prune_range = parse_prune_range(self.prune_range)
        if self.prune_range is not None:
            bounds = self.prune_range
            ok = (
                isinstance(bounds, list | tuple)
                and len(bounds) == 2
                and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                and 1 <= bounds[0] < bounds[1]
            )
            if not ok:
                raise ConfigError(
                    f"prune_range must be MIN:MAX with 1 <= MIN < MAX, got {bounds!r}: "
                    "use --prune-range 2:8"
                )
            self.prune_range = [int(bounds[0]), int(bounds[1])]
        if not self.pareto:
            if self.prune_range is not None:
                raise ConfigError(
                    "--prune-range needs --objective pareto: add it, or give one k with --prune"
                )
            return
        if self.prune_range is None:
            raise ConfigError(
                "--objective pareto needs the sizes to cover: add --prune-range MIN:MAX (e.g. 2:8)"
            )
        if self.screen is not None:
            raise ConfigError(
                "--screen applies to single-objective runs: drop --screen or --objective pareto"
            )
        if self.invalid == "zero":
            raise ConfigError(
                "--invalid zero applies to single-objective runs (a Pareto run repairs every "
                "child into the range): drop --invalid zero or --objective pareto"
            )

    def check_layers(self, n_layers: int, model_type: str | None = None) -> None:
        """Checks that need the model's layer count (sub-blocks: two units per layer) and, for a
        sub-block run, its family (``model_type``, where known)."""
        if self.granularity == "sublayer":
            problem = family_error(model_type)
            if problem:
                raise ConfigError(problem)
        what = "sub-blocks" if self.granularity == "sublayer" else "layers"
        if self.protect >= n_layers:
            raise ConfigError(
                f"protect={self.protect} leaves no droppable layer in a {n_layers}-layer model: "
                f"use --protect below {n_layers}"
            )
        upl = units_per_layer(self.granularity)
        droppable = (n_layers - self.protect) * upl
        shape = f"({n_layers} layers, {self.protect} protected)"
        if self.pareto and self.prune_range and self.prune_range[1] >= droppable:
            raise ConfigError(
                f"prune_range {self.prune_range[0]}:{self.prune_range[1]} must stay below the "
                f"{droppable} droppable {what} {shape}: "
                f"use --prune-range {self.prune_range[0]}:{droppable - 1} or less"
            )
        if self.pareto:
            return
        if self.prune >= droppable:
            raise ConfigError(
                f"prune={self.prune} must be below the {droppable} droppable {what} "
                f"{shape}: use --prune 1..{droppable - 1}"
            )
        space = GenomeSpace(n_layers, self.protect, self.granularity, self.attention_drops)
        problem = space.check(self.prune)
        if problem:
            raise ConfigError(problem)

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tasks"] = [{k: v for k, v in t.items() if v is not None} for t in data["tasks"]]
        # TOML has no null; "all" keeps a blank limit through a round trip
        for name in ("limit", "confirm_limit", "selection_tokens"):
            if getattr(self, name) is None:
                data[name] = "all"
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        check_keys(data, {f.name for f in dataclasses.fields(cls)}, source)
        values = dict(data)
        # A file that names an algorithm but not its sizes gets that algorithm's defaults.
        for name, value in ALGORITHM_DEFAULTS.get(str(values.get("algorithm")), {}).items():
            values.setdefault(name, value)
        for name in ("limit", "confirm_limit", "selection_tokens"):
            if values.get(name) == "all":
                values[name] = None
        if "tasks" in values:
            values["tasks"] = _parse_tasks(values["tasks"], source)
        if "include_path" in values and isinstance(values["include_path"], str):
            values["include_path"] = [values["include_path"]]
        return cls(**values)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: Path) -> None:
        path.write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_dict(cls._read(path), source=str(path))

    @classmethod
    def keys_in(cls, path: Path) -> set[str]:
        """The settings a config file names (the others take their defaults)."""
        return set(cls._read(path))

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        path = Path(path)
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist: check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"config file {str(path)!r} is not valid TOML ({exc}): fix it"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None


def parse_prune_range(text: str) -> list[int]:
    """``"2:8"`` -> ``[2, 8]``; a one-line error naming the form otherwise."""
    low, sep, high = str(text).strip().partition(":")
    try:
        if not sep:
            raise ValueError
        return [int(low), int(high)]
    except ValueError:
        raise ConfigError(f"prune range {text!r} is not MIN:MAX: use --prune-range 2:8") from None


def check_keys(
    data: Mapping[str, Any],
    known: Collection[str],
    source: str,
    error: Callable[[str], Exception] = ConfigError,
) -> None:
    """Raise ``error`` for the first key of ``data`` not in ``known`` (a typo in a TOML file),
    naming it, ``source`` and the valid keys: one message for config and theme files alike."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(
            f"unknown key {unknown[0]!r} in {source}: valid keys are {', '.join(sorted(known))}"
        )


def _parse_tasks(value: Any, source: str) -> list[TaskSpec]:
    if isinstance(value, str):
        return [TaskSpec.parse(part) for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"tasks in {source} must be a list of names or tables")
    specs = []
    for item in value:
        if isinstance(item, str):
            specs.append(TaskSpec.parse(item))
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"name", "metric", "num_fewshot", "limit"})
            if "name" not in item or extra:
                raise ConfigError(
                    f"a task table in {source} needs 'name' and may have metric, num_fewshot, limit"
                )
            specs.append(TaskSpec(**item))
        else:
            raise ConfigError(f"tasks in {source} must be names or tables, got {item!r}")
    return specs


def _int_at_least(name: str, value: Any, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} ({what}), got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


# ---- several workers (engine/backends) --------------------------------------------------------
_DEVICE_LIST_RE = re.compile(r"^cuda:\d+(,cuda:\d+)*$")


def backend_label(config: RunConfig) -> str:
    """How a run scores its genomes, for ``runs``, ``show`` and result.json."""
    if config.ray:
        return f"ray {config.ray}" + (f" ({config.workers} actors)" if config.workers > 1 else "")
    if config.devices:
        return f"local workers on {config.devices}"
    if config.workers > 1:
        return f"{config.workers} local workers"
    return "in-process"


def validate_backend(config: RunConfig) -> None:
    """``workers``, ``devices`` and ``ray``: one-line errors naming the fix. A Ray address must
    answer now, and Ray must be installed (looked up, never imported: this module stays light)."""
    import importlib.util

    _int_at_least("workers", config.workers, 1, "worker processes, 1 to score in this process")
    if config.devices is not None:
        config.devices = str(config.devices).replace(" ", "")
        if config.devices != "all" and not _DEVICE_LIST_RE.match(config.devices):
            raise ConfigError(
                f"devices must be all or a list like cuda:0,cuda:1, got {config.devices!r}"
            )
        if config.workers > 1:
            raise ConfigError("--workers and --devices both set: give one (a worker per device)")
    if config.ray is None:
        return
    config.ray = str(config.ray).strip()
    if not config.ray:
        raise ConfigError("ray is empty: use --ray local, --ray auto or --ray HOST:PORT")
    if importlib.util.find_spec("ray") is None:
        raise ConfigError('--ray needs Ray: pip install "gaprune-tui[ray]"')
    if config.ray == "auto":
        import os

        # Where `ray start --head` leaves the address of the cluster it started on this machine.
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if not os.environ.get("RAY_ADDRESS") and not current.is_file():
            raise ConfigError(
                "--ray auto found no Ray cluster on this machine: start one with "
                "`ray start --head`, or use --ray local"
            )
    elif config.ray != "local":
        _check_ray_address(config.ray)


# The start of an HTTP/2 connection (RFC 9113, 3.4): the client preface and an empty SETTINGS
# frame. Ray's GCS and its client server speak gRPC over HTTP/2, so a live one answers with a
# SETTINGS frame of its own; a port that accepts connections but never answers does not.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x4
RAY_CHECK_SECONDS = 3.0


def _check_ray_address(address: str, timeout: float = RAY_CHECK_SECONDS) -> None:
    """A cluster address (``HOST:PORT``, ``ray://HOST:PORT``) must answer a gRPC handshake: a
    connection, then the server's HTTP/2 SETTINGS frame, each within ``timeout`` seconds (so the
    check ends within twice that, whatever listens there). With ``RAY_USE_TLS`` set the server
    expects TLS first, and only the connection is checked."""
    import os
    import socket
    import time

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"ray address {address!r} is not HOST:PORT: use --ray 10.0.0.5:6379")
    fix = "start one with `ray start --head` there, or use --ray local"
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        raise ConfigError(f"no Ray cluster answers at {address}: {fix}") from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        reply = b""
        deadline = time.monotonic() + timeout
        try:
            conn.sendall(_HTTP2_PREFACE)
            while len(reply) < 9:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise ConfigError(
                f"no Ray cluster answers at {address}: something accepted the connection but "
                f"sent nothing in {timeout:g} s; check the address and port, or {fix}"
            ) from None
        except OSError:
            pass  # reset by the peer: judged below by what it sent
    if len(reply) < 9 or reply[3] != _HTTP2_SETTINGS:
        raise ConfigError(
            f"no Ray cluster answers at {address}: what listens there does not speak gRPC; "
            f"check the address and port (the head's GCS port, 6379 by default), or {fix}"
        )
