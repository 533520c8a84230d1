"""The Setup screen: pick a model, benchmarks and GA settings, see what it costs, start.

Everything here is checked before anything starts: the model with ``modelinfo.inspect_model`` as
the user types (a thread worker: a hub spec or a big folder must not freeze typing), extra task
names against ``tasknames.known_task_names()``, every number with an Input validator, the whole form
with ``RunConfig.validate()`` and ``check_layers``. Start stays disabled until all of that passes,
and the screen says why. The cost preview names the worst case (``max_evaluations``) and, when past
runs of the same model were timed on this machine, an estimated duration.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.validation import Function, Integer, Number
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    Select,
    SelectionList,
    Static,
)
from textual.widgets.option_list import Option

from gaprune_tui.core import launch, modelinfo, tasknames
from gaprune_tui.core.config import (
    DTYPE_CHOICES,
    FITNESS_CHOICES,
    INVALID_CHOICES,
    SCORER_CHOICES,
    RunConfig,
    TaskSpec,
)
from gaprune_tui.core.errors import ConfigError, GapruneError
from gaprune_tui.core.store import RunState, RunStore, list_runs
from gaprune_tui.ui.messages import CacheScanned, ModelInspected, TimingsMeasured

# What a CPU-only machine gets instead of the method's defaults, so the first search ends in minutes.
CPU_DEFAULTS = {"population": 8, "generations": 3, "limit": 20}
DEFAULT_CONFIG_PATH = "gaprune-run.toml"
_OVERRIDE_FIELDS = ("metric", "num_fewshot", "limit")


def gpu_available() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (too slow for the UI).

    ``GAPRUNE_ASSUME_GPU=1``/``0`` overrides the detection (tests, odd drivers).
    """
    forced = os.environ.get("GAPRUNE_ASSUME_GPU")
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no")
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def default_config() -> RunConfig:
    """The method's defaults, scaled down on a CPU-only machine (see ``CPU_DEFAULTS``)."""
    config = RunConfig()
    if not gpu_available():
        config = dataclasses.replace(config, **CPU_DEFAULTS)
    return config


# ---- cost preview ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimingSample:
    """Seconds one scored item took in a past run, and the tasks that run used."""

    tasks: frozenset[str]
    seconds_per_item: float


def items_per_evaluation(config: RunConfig) -> int | None:
    """Items scored per genome (limit x tasks); None when a task has no limit (size unknown here)."""
    total = 0
    for spec in config.tasks:
        limit = config.task_limit(spec)
        if limit is None:
            return None
        total += limit
    return total


def measure_timings(model: str) -> list[TimingSample]:
    """Per-item seconds of every evaluation that was really computed (not memo hits, not the
    screening pass) in stored runs of ``model``. Reads the run store only; runs that cannot be
    read are skipped."""
    samples: list[TimingSample] = []
    for summary in list_runs():
        if summary.model != model:
            continue
        try:
            store = RunStore(summary.path)
        except sqlite3.Error:
            continue
        try:
            config = store.config()
            evaluations = store.evaluations()
        except (GapruneError, sqlite3.Error):
            continue
        finally:
            store.close()
        items = items_per_evaluation(config)
        if not items:
            continue
        names = frozenset(t.name for t in config.tasks)
        samples.extend(
            TimingSample(names, ev.seconds / items)
            for ev in evaluations
            if not ev.from_memo and ev.fidelity == "full" and ev.seconds > 0
        )
    return samples


@dataclass(frozen=True)
class CostEstimate:
    max_evaluations: int
    seconds: float | None  # None: no measurement of this model with similar tasks yet
    samples: int
    reason: str = ""


def estimate_cost(config: RunConfig, samples: list[TimingSample]) -> CostEstimate:
    """Worst-case duration: max evaluations x items per evaluation x median seconds per item,
    measured on runs of the same model that share at least one task with this config."""
    names = {t.name for t in config.tasks}
    similar = [s.seconds_per_item for s in samples if s.tasks & names]
    items = items_per_evaluation(config)
    if not similar:
        return CostEstimate(config.max_evaluations, None, 0, "no measurement yet")
    if items is None:
        return CostEstimate(config.max_evaluations, None, len(similar), "set a limit to estimate")
    per_eval = statistics.median(similar) * items
    return CostEstimate(config.max_evaluations, per_eval * config.max_evaluations, len(similar))


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _format_size(n_bytes: int | None) -> str:
    if not n_bytes:
        return "?"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _format_params(n: int | None) -> str:
    if not n:
        return "? params"
    if n >= 1e9:
        return f"{n / 1e9:.1f}B params"
    return f"{n / 1e6:.0f}M params"


def describe_model(info: Any) -> str:
    """One line about an inspected model: name, layers, parameters, size on disk."""
    layers = f"{info.n_layers} layers" if info.n_layers else "? layers"
    return (
        f"{info.name} ({info.model_type or info.kind}): {layers}, "
        f"{_format_params(info.n_params)}, {_format_size(info.size_bytes)}"
    )


def _device_ok(value: str) -> bool:
    try:
        RunConfig(device=value.strip()).validate()
    except ConfigError:
        return False
    return True


# ---- the screen -----------------------------------------------------------------------------------
class SetupScreen(Screen[None]):
    """The form for a new search. ``config`` pre-fills it (else the defaults for this machine)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5", "start", "Start"),
        Binding("f2", "save", "Save"),
        Binding("f3", "load", "Load"),
        Binding("f4", "history", "History"),
    ]

    def __init__(self, config: RunConfig | None = None) -> None:
        super().__init__(id="setup")
        self.scaled_for_cpu = config is None and not gpu_available()
        self.base = config if config is not None else default_config()
        self.model_info: Any = None
        self.model_error: str | None = None
        self.inspected_spec: str | None = None
        self.known_tasks: set[str] | None = None
        self.samples: dict[str, list[TimingSample]] = {}
        self.overrides: dict[str, dict[str, str]] = {}
        self.override_task: str | None = None
        self.config: RunConfig | None = None
        self.form_error: str | None = "checking the form…"
        self.launching: RunStore | None = None
        self._proc: Any = None
        self._poll_timer: Any = None
        self._listed_tasks = list(
            dict.fromkeys([*tasknames.bundled_task_names(), *tasknames.SEED_TASKS])
        )

    # ---- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        cfg = self.base
        blink = not getattr(self.app, "deterministic", False)

        def field(ident: str, value: Any, placeholder: str = "", **kw: Any) -> Input:
            widget = Input(
                "" if value is None else str(value), placeholder=placeholder, id=ident, **kw
            )
            widget.cursor_blink = blink
            return widget

        def choice(ident: str, choices: tuple[str, ...]) -> Iterator[Label | Select[str]]:
            """A labelled drop-down for one of RunConfig's fixed-choice fields."""
            yield Label(ident)
            yield Select(
                [(c, c) for c in choices],
                value=getattr(cfg, ident),
                allow_blank=False,
                id=ident,
                compact=True,
            )

        yield Header(show_clock=False)
        with VerticalScroll(id="setup-form"):
            if self.scaled_for_cpu:
                yield Static(
                    "No GPU found: defaults scaled to population 8, 3 generations and limit 20 so "
                    "a search finishes in minutes here (the method uses 60, 10 and 100).",
                    id="cpu-note",
                )
            yield Label("Model", classes="section")
            yield field(
                "model", cfg.model, "demo, a local folder, a .gguf file or a hub id", compact=True
            )
            yield Static("checking…", id="model-info")
            yield OptionList(id="cache-models")
            yield Label("Benchmarks", classes="section")
            yield SelectionList[str](id="tasks")
            yield field("extra-tasks", "", "more lm-eval task names, comma separated", compact=True)
            yield Static("", id="tasks-info")
            with Grid(classes="params"):
                yield Label("metric")
                yield field("metric", cfg.metric, "per task default", compact=True)
                yield Label("few-shot")
                yield field("num-fewshot", cfg.num_fewshot, validators=[Integer(0)], compact=True)
                yield Label("limit")
                yield field(
                    "limit",
                    cfg.limit,
                    "all items",
                    validators=[Integer(1)],
                    valid_empty=True,
                    compact=True,
                )
                yield Label("")
                yield Label("")
            with Horizontal(id="override-row"):
                yield Label("per task")
                yield Select[str]([], id="override-task", prompt="task", compact=True)
                yield field("override-metric", "", "metric", compact=True)
                yield field(
                    "override-fewshot",
                    "",
                    "few-shot",
                    validators=[Integer(0)],
                    valid_empty=True,
                    compact=True,
                )
                yield field(
                    "override-limit",
                    "",
                    "limit",
                    validators=[Integer(1)],
                    valid_empty=True,
                    compact=True,
                )
            yield Static("", id="overrides")
            yield Label("Genetic algorithm", classes="section")
            with Grid(classes="params"):
                ints = (
                    ("prune", "prune k", 1),
                    ("protect", "protect", 0),
                    ("population", "population", 2),
                    ("generations", "generations", 0),
                    ("tournament", "tournament", 1),
                    ("seed", "seed", None),
                )
                for ident, label, low in ints:
                    yield Label(label)
                    yield field(ident, getattr(cfg, ident), validators=[Integer(low)], compact=True)
                for ident in ("cxpb", "mutpb"):
                    yield Label(ident)
                    yield field(ident, getattr(cfg, ident), validators=[Number(0, 1)], compact=True)
                yield from choice("fitness", FITNESS_CHOICES)
                yield from choice("invalid", INVALID_CHOICES)
            yield Label("Hardware", classes="section")
            with Grid(classes="params"):
                yield Label("device")
                yield field(
                    "device",
                    cfg.device,
                    validators=[Function(_device_ok, "auto, cpu, mps, cuda or cuda:N")],
                    compact=True,
                )
                yield from choice("dtype", DTYPE_CHOICES)
                yield from choice("scorer", SCORER_CHOICES)
                yield Label("")
                yield Label("")
        with Vertical(id="setup-bottom"):
            yield Static("", id="cost")
            yield Static("", id="form-error")
            with Horizontal(id="setup-actions"):
                yield field("config-path", DEFAULT_CONFIG_PATH, "config TOML path", compact=True)
                yield Button("Save F2", id="save", compact=True)
                yield Button("Load F3", id="load", compact=True)
                yield Button("Start F5", id="start", variant="success", disabled=True, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill_tasks(self.base)
        self._inspect(self.base.model.strip())
        self._scan_cache()
        self._load_task_names()
        self.revalidate()
        self.query_one("#model", Input).focus()

    # ---- filling the form ------------------------------------------------------------------------
    def _fill_tasks(self, config: RunConfig) -> None:
        names = [t.name for t in config.tasks]
        listed = self._listed_tasks
        selection = self.query_one("#tasks", SelectionList)
        selection.clear_options()
        selection.add_options([(self._task_label(n), n, n in names) for n in listed])
        extra = [n for n in names if n not in listed]
        self.query_one("#extra-tasks", Input).value = ", ".join(extra)
        self.overrides = {
            t.name: {
                "metric": t.metric or "",
                "num_fewshot": "" if t.num_fewshot is None else str(t.num_fewshot),
                "limit": "" if t.limit is None else str(t.limit),
            }
            for t in config.tasks
            if t.metric is not None or t.num_fewshot is not None or t.limit is not None
        }
        self._refresh_override_choices()

    @staticmethod
    def _task_label(name: str) -> str:
        metric = tasknames.default_metric(name) or "?"
        bundled = tasknames.BUNDLED_TASKS.get(name)
        if bundled is not None:
            return f"{name}  ({metric}, offline, {bundled.items} items)"
        return f"{name}  ({metric}, lm-eval, needs its data online once)"

    def fill(self, config: RunConfig) -> None:
        """Put a config into the form (Load). Fields the form does not show are kept as loaded."""
        self.base = config
        values = {
            "model": config.model,
            "metric": config.metric or "",
            "num-fewshot": config.num_fewshot,
            "limit": "" if config.limit is None else config.limit,
            "prune": config.prune,
            "protect": config.protect,
            "population": config.population,
            "generations": config.generations,
            "tournament": config.tournament,
            "seed": config.seed,
            "cxpb": config.cxpb,
            "mutpb": config.mutpb,
            "device": config.device,
        }
        for ident, value in values.items():
            self.query_one(f"#{ident}", Input).value = str(value)
        for ident in ("fitness", "invalid", "dtype", "scorer"):
            self.query_one(f"#{ident}", Select).value = getattr(config, ident)
        self.override_task = None
        self._fill_tasks(config)
        self._inspect(config.model.strip())

    # ---- reading the form ------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """Selected tasks in list order, then the extra ones in the order typed."""
        selected = set(self.query_one("#tasks", SelectionList).selected)
        names = [n for n in self._listed_tasks if n in selected]
        extra = self.query_one("#extra-tasks", Input).value
        names += [p.strip() for p in extra.split(",") if p.strip() and p.strip() not in names]
        return names

    def _int(self, ident: str, label: str, *, optional: bool = False) -> int | None:
        text = self.query_one(f"#{ident}", Input).value.strip()
        if not text and optional:
            return None
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{label} must be a whole number, got {text!r}") from None

    def _float(self, ident: str) -> float:
        text = self.query_one(f"#{ident}", Input).value.strip()
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{ident} must be a probability in [0, 1], got {text!r}") from None

    def build_config(self) -> RunConfig:
        """The form as a validated ``RunConfig``; ``ConfigError`` names the first bad field."""
        specs = []
        for name in self.task_names():
            raw = self.overrides.get(name, {})
            specs.append(
                TaskSpec(
                    name=name,
                    metric=raw.get("metric", "").strip() or None,
                    num_fewshot=_opt_int(raw.get("num_fewshot", ""), f"{name} few-shot"),
                    limit=_opt_int(raw.get("limit", ""), f"{name} limit"),
                )
            )
        config = dataclasses.replace(
            self.base,
            model=self.query_one("#model", Input).value.strip(),
            tasks=specs,
            metric=self.query_one("#metric", Input).value.strip() or None,
            num_fewshot=self._int("num-fewshot", "few-shot"),
            limit=self._int("limit", "limit", optional=True),
            prune=self._int("prune", "prune"),
            protect=self._int("protect", "protect"),
            population=self._int("population", "population"),
            generations=self._int("generations", "generations"),
            tournament=self._int("tournament", "tournament"),
            seed=self._int("seed", "seed"),
            cxpb=self._float("cxpb"),
            mutpb=self._float("mutpb"),
            fitness=self.query_one("#fitness", Select).value,
            invalid=self.query_one("#invalid", Select).value,
            device=self.query_one("#device", Input).value.strip(),
            dtype=self.query_one("#dtype", Select).value,
            scorer=self.query_one("#scorer", Select).value,
            include_path=list(self.base.include_path),
        )
        return config.validate()

    def _unknown_task_error(self, names: list[str]) -> str | None:
        listed = set(self._listed_tasks)
        extra = [n for n in names if n not in listed]
        if not extra:
            return None
        if self.known_tasks is None:
            return "checking task names…"
        for name in extra:
            if name not in self.known_tasks:
                close = tasknames.close_matches(name)
                hint = f": did you mean {', '.join(close[:3])}?" if close else ""
                return f"unknown task {name!r}{hint}"
        return None

    def revalidate(self) -> None:
        """Recheck the whole form; enable Start only when nothing is wrong."""
        error: str | None = None
        config: RunConfig | None = None
        task_error = self._show_task_check()
        try:
            config = self.build_config()
        except ConfigError as exc:
            error = str(exc)
        if error is None:
            error = task_error
        if error is None:
            if self.inspected_spec != config.model:  # type: ignore[union-attr]
                error = "checking the model…"
            elif self.model_error:
                error = self.model_error
            elif self.model_info is not None and self.model_info.n_layers:
                try:
                    config.check_layers(self.model_info.n_layers)  # type: ignore[union-attr]
                except ConfigError as exc:
                    error = str(exc)
        self.config = config
        self.form_error = error
        status = self.query_one("#form-error", Static)
        if self.launching is not None:
            return  # the launch status stays on screen until the engine answers
        if error:
            status.update(f"[b]Not ready:[/] {_escape(error)}")
            status.set_class(True, "error")
        else:
            status.update("Ready: F5 starts the search.")
            status.set_class(False, "error")
        self.query_one("#start", Button).disabled = error is not None
        self._show_cost()

    def _show_task_check(self) -> str | None:
        """Check the typed task names inline, under the field; the error, if any, for Start."""
        names = self.task_names()
        listed = set(self._listed_tasks)
        extra = [n for n in names if n not in listed]
        error = self._unknown_task_error(names)
        info = self.query_one("#tasks-info", Static)
        info.set_class(error is not None and not error.startswith("checking"), "error")
        info.display = bool(extra)
        if error:
            info.update(f"✗ {_escape(error)}")
        elif extra:
            info.update(
                f"✓ lm-eval {'task' if len(extra) == 1 else 'tasks'} {_escape(', '.join(extra))}: "
                "the engine loads them at start (their data must be downloadable or cached)"
            )
        return error

    def _show_cost(self) -> None:
        cost = self.query_one("#cost", Static)
        config = self.config
        if config is None:
            cost.update("Cost: fix the form to see what the search costs.")
            return
        est = estimate_cost(config, self.samples.get(config.model, []))
        text = f"Cost here: at most {est.max_evaluations} evaluations"
        if est.seconds is None:
            text += f"; duration: {est.reason}"
        else:
            text += (
                f"; estimated ≤ {format_duration(est.seconds)} "
                f"(estimate from {est.samples} measured evaluations on this machine)"
            )
        cost.update(text)

    # ---- events --------------------------------------------------------------------------------------
    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        ident = event.input.id or ""
        if ident == "config-path":
            return
        if ident.startswith("override-") and ident != "override-task":
            if self.override_task is not None:
                key = {"override-metric": "metric", "override-fewshot": "num_fewshot"}.get(
                    ident, "limit"
                )
                self.overrides.setdefault(self.override_task, {})[key] = event.value
                self._show_overrides()
        elif ident == "model":
            self._inspect(event.value.strip())
        elif ident == "extra-tasks":
            self._refresh_override_choices()
        self.revalidate()

    @on(SelectionList.SelectedChanged)
    def _tasks_changed(self) -> None:
        self._refresh_override_choices()
        self.revalidate()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "override-task":
            name = event.value if isinstance(event.value, str) else None
            self.override_task = name
            raw = self.overrides.get(name, {}) if name else {}
            self.query_one("#override-metric", Input).value = raw.get("metric", "")
            self.query_one("#override-fewshot", Input).value = raw.get("num_fewshot", "")
            self.query_one("#override-limit", Input).value = raw.get("limit", "")
        self.revalidate()

    @on(OptionList.OptionSelected, "#cache-models")
    def _cache_model_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.query_one("#model", Input).value = event.option.id

    def _refresh_override_choices(self) -> None:
        names = self.task_names()
        select = self.query_one("#override-task", Select)
        select.set_options([(n, n) for n in names])
        if self.override_task in names:
            select.value = self.override_task
        self._show_overrides()

    def _show_overrides(self) -> None:
        names = self.task_names()
        parts = []
        for name in names:
            stored = self.overrides.get(name, {})
            raw = {k: stored[k].strip() for k in _OVERRIDE_FIELDS if stored.get(k, "").strip()}
            if raw:
                shown = ", ".join(f"{k}={v}" for k, v in raw.items())
                parts.append(f"{name}: {shown}")
        self.query_one("#overrides", Static).update(
            _escape("; ".join(parts)) if parts else "[dim]no per-task overrides[/]"
        )

    # ---- workers ---------------------------------------------------------------------------------
    def _inspect(self, spec: str) -> None:
        self.inspected_spec = None
        self.model_info = None
        self.model_error = None
        self.query_one("#model-info", Static).update("checking…")
        self._inspect_worker(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect")
    def _inspect_worker(self, spec: str) -> None:
        if not spec:
            self.post_message(ModelInspected(spec, error="no model given: type demo or a path"))
            return
        try:
            info = modelinfo.inspect_model(spec)
        except GapruneError as exc:
            self.post_message(ModelInspected(spec, error=str(exc)))
        else:
            self.post_message(ModelInspected(spec, info=info))
        if spec not in self.samples:
            self.post_message(TimingsMeasured(spec, measure_timings(spec)))

    @on(ModelInspected)
    def _model_inspected(self, message: ModelInspected) -> None:
        if message.spec != self.query_one("#model", Input).value.strip():
            return  # an answer for something the user has since changed
        self.inspected_spec = message.spec
        self.model_info = message.info
        self.model_error = message.error
        label = self.query_one("#model-info", Static)
        if message.error:
            label.update(f"[b]✗[/] {_escape(message.error)}")
            label.set_class(True, "error")
        else:
            label.update(f"✓ {_escape(describe_model(message.info))}")
            label.set_class(False, "error")
        self.revalidate()

    @on(TimingsMeasured)
    def _timings(self, message: TimingsMeasured) -> None:
        self.samples[message.model] = message.samples
        self._show_cost()

    @work(thread=True, exclusive=True, exit_on_error=False, group="hf-cache")
    def _scan_cache(self) -> None:
        try:
            models = modelinfo.scan_hf_cache()
        except Exception as exc:  # a broken cache must not cost the user the form
            self.post_message(CacheScanned([], error=str(exc)))
        else:
            self.post_message(CacheScanned(models))

    @on(CacheScanned)
    def _cache_scanned(self, message: CacheScanned) -> None:
        options = self.query_one("#cache-models", OptionList)
        options.clear_options()
        if message.error:
            options.add_option(Option(f"cannot read the Hugging Face cache: {message.error}"))
        elif not message.models:
            options.add_option(Option("no models in the Hugging Face cache", disabled=True))
        for info in message.models:
            options.add_option(Option(describe_model(info), id=info.name))

    @work(thread=True, exclusive=True, exit_on_error=False, group="task-names")
    def _load_task_names(self) -> None:
        names = set(tasknames.known_task_names())
        self.app.call_from_thread(self._task_names_loaded, names)

    def _task_names_loaded(self, names: set[str]) -> None:
        self.known_tasks = names
        self.revalidate()

    # ---- actions ---------------------------------------------------------------------------------
    def action_history(self) -> None:
        self.app.open_history()  # type: ignore[attr-defined]

    def _config_path(self) -> Path:
        text = self.query_one("#config-path", Input).value.strip() or DEFAULT_CONFIG_PATH
        return Path(text).expanduser()

    def action_save(self) -> None:
        path = self._config_path()
        try:
            config = self.build_config()
            config.save(path)
        except ConfigError as exc:
            self.notify(f"not saved: {exc}", severity="error")
            return
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror}", severity="error")
            return
        self.notify(f"saved {path}")

    def action_load(self) -> None:
        path = self._config_path()
        try:
            config = RunConfig.load(path).validate()
        except ConfigError as exc:
            self.notify(f"not loaded: {exc}", severity="error")
            return
        self.fill(config)
        self.notify(f"loaded {path}")

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions = {"save": self.action_save, "load": self.action_load, "start": self.action_start}
        action = actions.get(event.button.id or "")
        if action is not None:
            action()

    def action_start(self) -> None:
        """Spawn the engine and wait for it to report: "running" opens the Run screen, "invalid"
        (a model or task that cannot be used) comes back here with the engine's message."""
        self.revalidate()
        if self.form_error is not None or self.config is None or self.launching is not None:
            if self.form_error:
                self.notify(f"cannot start: {self.form_error}", severity="warning")
            return
        try:
            store, proc = launch.start_run(self.config)
        except GapruneError as exc:
            self._start_failed(str(exc))
            return
        self.launching = store
        self._proc = proc
        status = self.query_one("#form-error", Static)
        status.update(f"Starting run {store.id}: the engine is loading the model and tasks…")
        status.set_class(False, "error")
        self.query_one("#start", Button).disabled = True
        self._poll_timer = self.set_interval(0.25, self._poll_launch)

    def _poll_launch(self) -> None:
        store = self.launching
        if store is None:
            return
        meta = store.meta()
        state = RunState(meta.get("state", RunState.CREATED))
        if state == RunState.INVALID:
            self._end_launch()
            store.discard()
            self._start_failed(meta.get("error") or "the engine rejected this setup")
        elif state != RunState.CREATED:  # the engine started (and may already have ended)
            self._end_launch()
            self.app.open_run(store)  # type: ignore[attr-defined]
            self.revalidate()
        elif self._proc is not None and self._proc.poll() is not None:
            self._end_launch()
            tail = _log_tail(store.log_path)
            self._start_failed(f"the engine exited before starting: {tail or 'see engine.log'}")

    def _end_launch(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self.launching = None
        self._proc = None

    def _start_failed(self, message: str) -> None:
        status = self.query_one("#form-error", Static)
        status.update(f"[b]Not started:[/] {_escape(message)}")
        status.set_class(True, "error")
        self.query_one("#start", Button).disabled = False
        self.notify(message, severity="error", timeout=10)


def _opt_int(text: str, label: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{label} must be a whole number, got {text!r}") from None


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _escape(text: str) -> str:
    """Escape Rich markup in user-supplied text (paths and task names may contain brackets)."""
    from rich.markup import escape

    return escape(text)
