"""The Setup screen: pick a model, benchmarks and GA settings, see what it costs, start.

Everything here is checked before anything starts: the model with ``modelinfo.inspect_model`` as
the user types (a thread worker: a hub spec or a big folder must not freeze typing), extra task
names against ``tasknames.known_task_names()``, every number with an Input validator, the whole form
with ``RunConfig.validate()``, ``check_layers`` and ``core.preflight`` (every task, held-out ones
included, and the devices: the check the launch and the engine make). Start stays disabled until all of that passes,
and the screen says why. The cost preview names the worst case (``max_evaluations``) and, when past
runs of the same model were timed on this machine, an estimated duration.

A Ray cluster address is the one part of ``validate()`` that waits on the network (a connection,
up to seconds): it is checked in a thread worker too, once per address typed, and again by the
launch itself at Start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
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

from gaprune_tui.core import format as fmt
from gaprune_tui.core import launch, modelinfo, preflight, tasknames
from gaprune_tui.core.config import RunConfig, TaskSpec
from gaprune_tui.core.devices import (
    CPU_DEFAULTS,
    default_config,
    expected_dtype,
    gpu_available,
    gpu_count,
)
from gaprune_tui.core.errors import ConfigError, GapruneError
from gaprune_tui.core.estimate import (
    TimingSample,
    estimate_cost,
    measure_timings,
    sub_block_line,
)
from gaprune_tui.core.store import RunStore
from gaprune_tui.ui.messages import CacheScanned, ModelInspected, TimingsMeasured
from gaprune_tui.ui.screens.setup_fields import (
    FORM_FIELDS,
    OFF,
    OVERRIDE_FIELDS,
    PRUNE_HELP,
    SIZE_FIELDS,
    SUBLAYER_FIELDS,
    ConfigValue,
    FieldGroup,
    FormField,
    fields_of,
    text_input,
)

DEFAULT_CONFIG_PATH = "gaprune-run.toml"
_OVERRIDE_KEYS = {f.ident: f.attr for f in OVERRIDE_FIELDS}


def cpu_note() -> str:
    """Why a CPU-only machine sees smaller numbers than the method's (``devices.CPU_DEFAULTS``)."""
    cpu, method = CPU_DEFAULTS, RunConfig()
    return (
        f"No GPU found: defaults scaled to population {cpu['population']}, "
        f"{cpu['generations']} generations, limit {cpu['limit']} and {cpu['finalists']} "
        f"finalists so a search finishes in minutes here (on a GPU: {method.population}, "
        f"{method.generations}, {method.limit} and {method.finalists})."
    )


def ray_address(config: RunConfig) -> str | None:
    """The Ray cluster address a config joins (not ``local`` or ``auto``), else None."""
    return None if config.ray in (None, "local", "auto") else config.ray


def validated(config: RunConfig) -> RunConfig:
    """``config.validate()`` but for a Ray address's connection check (``ray_address``), which
    can wait seconds on the network: the screen runs that one in a thread worker."""
    address = ray_address(config)
    if address is None:
        return config.validate()
    config.ray = None
    try:
        config.validate()
    finally:
        config.ray = address
    return config


def ray_check(address: str) -> str | None:
    """Whether a Ray cluster answers at ``address``: ``RunConfig.validate``'s one-line error, or
    None (run in a thread: a connection attempt)."""
    try:
        RunConfig(ray=address).validate()
    except ConfigError as exc:
        return str(exc)
    return None


def describe_model(info: modelinfo.ModelInfo) -> str:
    """One line about an inspected model: name, layers, parameters, size on disk."""
    layers = fmt.plural(info.n_layers, "layer") if info.n_layers else "? layers"
    return (
        f"{info.name} ({info.model_type or info.kind}): {layers}, "
        f"{fmt.params(info.n_params)} params, {fmt.size(info.size_bytes or None)}"
    )


def _inspected(spec: str) -> ModelInspected:
    """What inspecting the model field found: its facts, or the one-line reason it cannot be read
    (the worker thread posts it, the screen draws it)."""
    if not spec:
        return ModelInspected(spec, error="no model given: type demo or a path")
    try:
        return ModelInspected(spec, info=modelinfo.inspect_model(spec))
    except GapruneError as exc:
        return ModelInspected(spec, error=str(exc))


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
        # ``--devices`` is offered only where there is more than one GPU to share a search.
        self.gpus = gpu_count()
        # The last Ray address checked and its error (None: a cluster answered).
        self.ray_checked: tuple[str, str | None] | None = None
        self._ray_probing: str | None = None
        self.base = config if config is not None else default_config()
        self.model_info: modelinfo.ModelInfo | None = None
        self.model_error: str | None = None
        self.inspected_spec: str | None = None
        self.known_tasks: set[str] | None = None
        self.samples: dict[str, list[TimingSample]] = {}
        self.overrides: dict[str, dict[str, str]] = {}
        self.override_task: str | None = None
        self.config: RunConfig | None = None
        self.form_error: str | None = "checking the form…"
        self.launching: RunStore | None = None
        self._proc: launch.Process | None = None
        self._poll_timer: Timer | None = None
        self._listed_tasks = list(
            dict.fromkeys([*tasknames.bundled_task_names(), *tasknames.SEED_TASKS])
        )

    # ---- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        cfg = self.base
        yield Header(show_clock=False)
        with VerticalScroll(id="setup-form"):
            if self.scaled_for_cpu:
                yield Static(cpu_note(), id="cpu-note")
            yield Label("Model", classes="section")
            for spec in fields_of("model"):
                yield spec.widget(getattr(cfg, spec.attr), blink=self._blink)
            yield Static("checking…", id="model-info")
            yield OptionList(id="cache-models")
            yield Label("Benchmarks", classes="section")
            yield SelectionList[str](id="tasks")
            yield self._text("extra-tasks", "more lm-eval task names, comma separated")
            yield Static("", id="tasks-info")
            yield self._grid("tasks")
            with Horizontal(id="override-row"):
                yield Label("per task")
                yield Select[str]([], id="override-task", prompt="task", compact=True)
                for spec in OVERRIDE_FIELDS:
                    yield spec.widget(None, blink=self._blink)
            yield Static("", id="overrides")
            yield Label("Genetic algorithm", classes="section")
            yield self._grid("ga")
            yield Label("Trustworthy pick: calibration, confirmation, held-out", classes="section")
            yield self._grid("trust")
            yield Label("Hardware", classes="section")
            yield self._grid("hardware")
        with Vertical(id="setup-bottom"):
            yield Static("", id="cost")
            yield Static("", id="form-error")
            with Horizontal(id="setup-actions"):
                yield self._text("config-path", "config TOML path", DEFAULT_CONFIG_PATH)
                yield Button("Save F2", id="save", compact=True)
                yield Button("Load F3", id="load", compact=True)
                yield Button("Start F5", id="start", variant="success", disabled=True, compact=True)
        yield Footer()

    @property
    def _blink(self) -> bool:
        return not getattr(self.app, "deterministic", False)

    def _text(self, ident: str, placeholder: str, value: str = "") -> Input:
        return text_input(ident, value, placeholder, blink=self._blink)

    def _offered(self, spec: FormField) -> bool:
        """Whether the form shows a field on this machine (devices: only with several GPUs)."""
        return spec.ident != "devices" or self.gpus > 1

    def _grid(self, group: FieldGroup) -> Grid:
        """A group's fields as label/widget pairs, two pairs a row (a blank pair fills the last)."""
        cells: list[Widget] = []
        shown = 0
        labels = {OFF: "off (device)", "all": f"all {self.gpus} GPUs"}
        for spec in fields_of(group):
            pair = [
                Label(spec.label, classes=f"label-{spec.ident}"),
                spec.widget(getattr(self.base, spec.attr), blink=self._blink, labels=labels),
            ]
            offered = self._offered(spec)
            for cell in pair:
                cell.display = offered
            shown += offered
            cells += pair
        if shown % 2:
            cells += [Label(""), Label("")]
        return Grid(*cells, classes="params")

    def on_mount(self) -> None:
        self._fill_tasks(self.base)
        self._show_fields()
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
            t.name: {f.attr: f.format(getattr(t, f.attr)) for f in OVERRIDE_FIELDS}
            for t in config.tasks
            if any(getattr(t, f.attr) is not None for f in OVERRIDE_FIELDS)
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
        for spec in FORM_FIELDS:
            value = getattr(config, spec.attr)
            if spec.kind == "choice":
                choice, text = spec.to_widgets(value)
                self.query_one(f"#{spec.ident}", Select).value = choice
                if spec.typed:
                    self.query_one(f"#{spec.typed_ident}", Input).value = text
                    self._show_typed(spec)
            else:
                self.query_one(f"#{spec.ident}", Input).value = spec.format(value)
        self.override_task = None
        self._fill_tasks(config)
        self._show_fields()
        self._inspect(config.model.strip())

    # ---- reading the form ------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """Selected tasks in list order, then the extra ones in the order typed."""
        selected = set(self.query_one("#tasks", SelectionList).selected)
        names = [n for n in self._listed_tasks if n in selected]
        extra = self.query_one("#extra-tasks", Input).value
        names += [p.strip() for p in extra.split(",") if p.strip() and p.strip() not in names]
        return names

    def build_config(self) -> RunConfig:
        """The form as a validated ``RunConfig``; ``ConfigError`` names the first bad field."""
        specs = [self._task_spec(name) for name in self.task_names()]
        values: dict[str, Any] = {}  # typed by each row's parse; validate() checks the values
        hidden = self._hidden_fields()
        for spec in FORM_FIELDS:
            if spec.ident in SUBLAYER_FIELDS and spec.ident in hidden:
                values[spec.attr] = None  # a layer run has no sub-block settings
            elif spec.ident in hidden:
                # Not shown, not read: a single search has no range, a Pareto one keeps prune.
                values[spec.attr] = None if spec.kind == "range" else getattr(self.base, spec.attr)
            elif not self._offered(spec):
                values[spec.attr] = getattr(self.base, spec.attr)  # kept as loaded
            elif spec.kind == "choice":
                values[spec.attr] = self._read_choice(spec)
            else:
                values[spec.attr] = spec.parse(self.query_one(f"#{spec.ident}", Input).value)
        config = dataclasses.replace(
            self.base, tasks=specs, include_path=list(self.base.include_path), **values
        )
        return validated(config)

    def _read_choice(self, spec: FormField) -> ConfigValue:
        choice = str(self.query_one(f"#{spec.ident}", Select).value)
        text = self.query_one(f"#{spec.typed_ident}", Input).value if spec.typed else ""
        return spec.from_widgets(choice, text)

    def _show_typed(self, spec: FormField) -> None:
        """A choice's text box (Ray address, device list) shows only while its choice is picked."""
        choice = self.query_one(f"#{spec.ident}", Select).value
        self.query_one(f"#{spec.typed_ident}", Input).display = choice == spec.typed

    def _objective(self) -> str:
        return str(self.query_one("#objective", Select).value)

    def _granularity(self) -> str:
        return str(self.query_one("#granularity", Select).value)

    def _hidden_fields(self) -> set[str]:
        """The idents of the fields the form hides and does not read: the layer-count field the
        objective does not use, and the sub-block settings of a layer run."""
        hidden: set[str] = set()
        shown = SIZE_FIELDS.get(self._objective())
        if shown:
            hidden |= {f for f in SIZE_FIELDS.values() if f != shown}
        if self._granularity() != "sublayer":
            hidden |= set(SUBLAYER_FIELDS)
        return hidden

    def _show_fields(self) -> None:
        """One k (prune) for a single-objective search, MIN:MAX for a Pareto one; the sub-block
        settings for a sub-block run, whose k counts sub-blocks (its label and help say so)."""
        hidden = self._hidden_fields()
        for ident in (*SIZE_FIELDS.values(), *SUBLAYER_FIELDS):
            for widget in self.query(f"#{ident}, .label-{ident}"):
                widget.display = ident not in hidden
        sublayer = self._granularity() == "sublayer"
        for spec in FORM_FIELDS:
            if spec.ident not in SIZE_FIELDS.values():
                continue
            label, what = PRUNE_HELP["sublayer" if sublayer else "layer"]
            if not sublayer:
                label = spec.label
            help_text = f"MIN:MAX {what}" if spec.kind == "range" else f"k: {what}"
            label_widget = self.query_one(f".label-{spec.ident}", Label)
            label_widget.update(label)
            label_widget.tooltip = help_text
            self.query_one(f"#{spec.ident}", Input).tooltip = help_text

    def _task_spec(self, name: str) -> TaskSpec:
        """One selected task with its overrides; ``ConfigError`` names the task and the field."""
        raw = self.overrides.get(name, {})
        values: dict[str, ConfigValue] = {}
        for spec in OVERRIDE_FIELDS:
            try:
                values[spec.attr] = spec.parse(raw.get(spec.attr, ""))
            except ConfigError as exc:
                raise ConfigError(f"{name} {exc}") from None
        return TaskSpec(name=name, **values)  # type: ignore[arg-type]

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
                    config.check_layers(self.model_info.n_layers, self.model_info.model_type)  # type: ignore[union-attr]
                except ConfigError as exc:
                    error = str(exc)
        if error is None and config is not None:
            error = self._preflight_error(config)
        if error is None and config is not None:
            error = self._ray_error(config)
        self.config = config
        self.form_error = error
        if self.launching is not None:
            return  # the launch status stays on screen until the engine answers
        if error:
            self._status(f"[b]Not ready:[/] {escape(error)}", error=True)
        else:
            self._status("Ready: F5 starts the search.")
        self.query_one("#start", Button).disabled = error is not None
        self._show_cost()

    def _preflight_error(self, config: RunConfig) -> str | None:
        """What ``core.preflight`` (the check the launch and the engine make) says of the tasks,
        the held-out tasks and the devices, once the task names are loaded."""
        if self.known_tasks is None:
            return "checking task names…"
        try:
            preflight.check_run(config, cuda_count=self.gpus)
        except GapruneError as exc:
            return str(exc)
        return None

    def _ray_error(self, config: RunConfig) -> str | None:
        """The Ray address's check (see the module docstring): its error, "checking" while the
        thread worker asks, None once a cluster answered."""
        address = ray_address(config)
        if address is None:
            return None
        if self.ray_checked is not None and self.ray_checked[0] == address:
            return self.ray_checked[1]
        if self._ray_probing != address:
            self._ray_probing = address
            self._probe_ray(address)
        return "checking the Ray address…"

    def _status(self, markup: str, *, error: bool = False) -> None:
        """The line above the buttons: whether Start can go, and why not."""
        status = self.query_one("#form-error", Static)
        status.update(markup)
        status.set_class(error, "error")

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
            info.update(f"✗ {escape(error)}")
        elif extra:
            info.update(
                f"✓ lm-eval {'task' if len(extra) == 1 else 'tasks'} {escape(', '.join(extra))}: "
                "the engine loads them at start (their data must be downloadable or cached)"
            )
        return error

    def _show_cost(self) -> None:
        cost = self.query_one("#cost", Static)
        config = self.config
        if config is None:
            cost.update("Cost: fix the form to see what the search costs.")
            return
        info = self.model_info
        est = estimate_cost(
            config,
            self.samples.get(config.model, []),
            gpus=self.gpus,
            n_layers=info.n_layers if info is not None and info.n_layers else None,
            dtype=expected_dtype(config.dtype, config.device).dtype,
        )
        line = f"Cost here: {est.text()}"
        savings = sub_block_line(config, info.n_layers if info is not None else None)
        cost.update(line if savings is None else f"{line}\n{savings}")

    # ---- events --------------------------------------------------------------------------------------
    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        ident = event.input.id or ""
        if ident == "config-path":
            return
        if ident.startswith("override-") and ident != "override-task":
            if self.override_task is not None:
                key = _OVERRIDE_KEYS[ident]
                self.overrides.setdefault(self.override_task, {})[key] = event.value
                self._show_overrides()
        elif ident == "model":
            self._inspect(event.value.strip())
        elif ident == "extra-tasks":
            self._refresh_override_choices()
        elif ident == "device":
            self._show_model_line()
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
            for spec in OVERRIDE_FIELDS:
                self.query_one(f"#{spec.ident}", Input).value = raw.get(spec.attr, "")
        elif event.select.id == "dtype":
            self._show_model_line()
        elif event.select.id in ("objective", "granularity"):
            self._show_fields()
        typed = next((f for f in FORM_FIELDS if f.typed and f.ident == event.select.id), None)
        if typed is not None:
            self._show_typed(typed)
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
            raw = {
                f.attr: stored[f.attr].strip()
                for f in OVERRIDE_FIELDS
                if stored.get(f.attr, "").strip()
            }
            if raw:
                shown = ", ".join(f"{k}={v}" for k, v in raw.items())
                parts.append(f"{name}: {shown}")
        self.query_one("#overrides", Static).update(
            escape("; ".join(parts)) if parts else "[dim]no per-task overrides[/]"
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
        self.post_message(_inspected(spec))
        if spec and spec not in self.samples:
            self.post_message(TimingsMeasured(spec, measure_timings(spec)))

    @on(ModelInspected)
    def _model_inspected(self, message: ModelInspected) -> None:
        if message.spec != self.query_one("#model", Input).value.strip():
            return  # an answer for something the user has since changed
        self.inspected_spec = message.spec
        self.model_info = message.info
        self.model_error = message.error
        label = self.query_one("#model-info", Static)
        if message.error or message.info is None:
            label.update(f"[b]✗[/] {escape(message.error or 'not a model')}")
            label.set_class(True, "error")
        else:
            self._show_model_line()
            label.set_class(False, "error")
        self.revalidate()

    def _show_model_line(self) -> None:
        """The inspected model and the dtype it will run in; the reason is the line's tooltip."""
        if self.model_info is None or self.model_error:
            return
        device = self.query_one("#device", Input).value
        choice = expected_dtype(str(self.query_one("#dtype", Select).value), device)
        runs = choice.reason if choice.dtype == "auto" else choice.dtype
        label = self.query_one("#model-info", Static)
        label.update(f"✓ {escape(describe_model(self.model_info))}, runs in {runs}")
        label.tooltip = choice.reason

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

    @work(thread=True, exclusive=True, exit_on_error=False, group="ray-probe")
    def _probe_ray(self, address: str) -> None:
        error = ray_check(address)
        self.app.call_from_thread(self._ray_probed, address, error)

    def _ray_probed(self, address: str, error: str | None) -> None:
        self.ray_checked = (address, error)
        if self._ray_probing == address:
            self._ray_probing = None
        self.revalidate()

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
            config = validated(RunConfig.load(path))
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
        self._status(f"Starting run {store.id}: the engine is loading the model and tasks…")
        self.query_one("#start", Button).disabled = True
        self._poll_timer = self.set_interval(0.25, self._poll_launch)

    def _poll_launch(self) -> None:
        """One look at the starting engine (``launch.launch_status``, shared with the CLI)."""
        store = self.launching
        if store is None:
            return
        status = launch.launch_status(store, self._proc)
        if status.phase == "starting":
            return
        self._end_launch()
        if status.phase == "rejected":
            self._start_failed(status.error or "the engine rejected this setup")
        else:
            self.app.open_run(store)  # type: ignore[attr-defined]
            self.revalidate()

    def _end_launch(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self.launching = None
        self._proc = None

    def _start_failed(self, message: str) -> None:
        self._status(f"[b]Not started:[/] {escape(message)}", error=True)
        self.query_one("#start", Button).disabled = False
        self.notify(message, severity="error", timeout=10)
