"""The Setup form's fields, written down once: the screen composes, fills and reads the form
from ``FORM_FIELDS``, so adding a RunConfig setting to the form is one row here.

Each row says which widget shows which ``RunConfig`` field, how it is checked as the user types
(Textual validators) and how its text converts to and from the config's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from textual.containers import Horizontal
from textual.validation import Function, Integer, Number, Validator
from textual.widget import Widget
from textual.widgets import Input, Select

from gaprune_tui.core.config import (
    ALGORITHM_CHOICES,
    DTYPE_CHOICES,
    FITNESS_CHOICES,
    INIT_CHOICES,
    INVALID_CHOICES,
    MUTATION_CHOICES,
    OBJECTIVE_CHOICES,
    SCORER_CHOICES,
    parse_prune_range,
)
from gaprune_tui.core.devices import DEVICE_HINT, device_ok
from gaprune_tui.core.errors import ConfigError
from gaprune_tui.core.units import GRANULARITIES, SUBLAYER_FAMILIES

FieldKind = Literal["text", "int", "float", "choice", "list", "range"]
# How a number field's text becomes its value, and what it must be (the form's only floats are
# the crossover and mutation probabilities).
_NUMBERS: dict[str, tuple[Callable[[str], int | float], str]] = {
    "int": (int, "a whole number"),
    "float": (float, "a probability in [0, 1]"),
}
# Where a field sits on the form: the model line, the benchmark defaults, the GA, how the pick is
# made trustworthy (calibration, confirmation, baselines), the hardware.
FieldGroup = Literal["model", "tasks", "ga", "trust", "hardware"]
ConfigValue = str | int | float | list[str] | list[int] | None
MODEL_HINT = "demo, a local folder, a .gguf file or a hub id"
METRIC_HINT = "per task default"
RANGE_HINT = "MIN:MAX, e.g. 2:8"
# Which of the two "how many layers" fields the form shows, by objective (the other is hidden and
# not read): one k for a single-objective search, a range of k for a Pareto one.
SIZE_FIELDS = {"single": "prune", "pareto": "prune-range"}
# Fields shown only in a sub-block run (granularity "sublayer"): hidden and not read otherwise.
SUBLAYER_FIELDS = ("attention-drops",)
# What the prune fields count, by granularity: (label, help), the same for k and for the range.
PRUNE_HELP = {
    "layer": ("prune k", "decoder layers to drop"),
    "sublayer": (
        "sub-blocks",
        "attention and MLP sub-blocks to drop (two per layer; both of a layer drop the layer)",
    ),
}
# The choice an optional choice field shows for None (the config's "not set").
OFF = "off"
WORKERS_HINT = (
    "worker processes, each with its own model copy: on one CPU they split its cores (no faster "
    "than 1); with ray, the number of actors (1: one per GPU of the cluster)"
)


@dataclass(frozen=True)
class FormField:
    """One setting on the form: widget ``ident``, its ``label``, the ``RunConfig`` field ``attr``."""

    ident: str
    label: str
    attr: str
    kind: FieldKind
    group: FieldGroup
    validators: tuple[Validator, ...] = ()
    optional: bool = False  # an empty field means None (the config's "not set")
    placeholder: str = ""
    choices: tuple[str, ...] = ()
    # The choice that takes a typed value (a Ray address, a device list): picking it shows a text
    # box ``typed_ident`` next to the choice, whose text is the config's value.
    typed: str = ""
    tooltip: str = ""

    @property
    def typed_ident(self) -> str:
        """The id of the text box of a choice with a typed value."""
        return f"{self.ident}-{self.typed}"

    def to_widgets(self, value: ConfigValue) -> tuple[str, str]:
        """A choice field's config value as (the choice shown, the typed text)."""
        if value is None and self.optional:
            return OFF, ""
        if str(value) in self.choices or not self.typed:
            return str(value), ""
        return self.typed, self.format(value)

    def from_widgets(self, choice: str, text: str) -> ConfigValue:
        """The config's value from a choice field's choice and typed text (``to_widgets`` back)."""
        if choice == OFF and self.optional:
            return None
        if self.typed and choice == self.typed:
            return text.strip()
        return choice

    def format(self, value: ConfigValue) -> str:
        """The config's value as the field's text."""
        if isinstance(value, list):
            return (":" if self.kind == "range" else ",").join(map(str, value))
        return "" if value is None else str(value)

    def parse(self, text: str) -> ConfigValue:
        """The field's text as the config's value; ``ConfigError`` names the field when it is not."""
        text = text.strip()
        if not text and self.optional:
            return None
        if self.kind == "list":
            return [part.strip() for part in text.split(",") if part.strip()]
        if self.kind == "range":
            return parse_prune_range(text)
        if self.kind in _NUMBERS:
            convert, what = _NUMBERS[self.kind]
            try:
                return convert(text)
            except ValueError:
                raise ConfigError(f"{self.label} must be {what}, got {text!r}") from None
        return text

    def widget(
        self,
        value: ConfigValue,
        *,
        blink: bool = True,
        labels: dict[str, str] | None = None,
    ) -> Widget:
        """A compact widget for this field, showing ``value``; ``labels`` names some choices."""
        if self.kind == "choice":
            choice, text = self.to_widgets(value)
            names = labels or {}
            select = Select(
                [(names.get(c, c), c) for c in self.choices],
                value=choice,
                allow_blank=False,
                id=self.ident,
                compact=True,
                tooltip=self.tooltip or None,
            )
            if not self.typed:
                return select
            typed = text_input(self.typed_ident, text, self.placeholder, blink=blink)
            typed.display = choice == self.typed
            return Horizontal(select, typed, classes="typed-choice")
        widget = text_input(
            self.ident,
            self.format(value),
            self.placeholder,
            blink=blink,
            validators=self.validators,
            optional=self.optional,
        )
        widget.tooltip = self.tooltip or None
        return widget


def text_input(
    ident: str,
    value: str = "",
    placeholder: str = "",
    *,
    validators: Sequence[Validator] = (),
    optional: bool = False,
    blink: bool = True,
) -> Input:
    """The form's one kind of text box (compact, blinking unless the app is deterministic)."""
    widget = Input(
        value,
        placeholder=placeholder,
        id=ident,
        validators=list(validators),
        valid_empty=optional,
        compact=True,
    )
    widget.cursor_blink = blink
    return widget


def _range_ok(text: str) -> bool:
    try:
        parse_prune_range(text)
    except ConfigError:
        return False
    return True


def _int(ident: str, label: str, attr: str, low: int | None, group: FieldGroup = "ga") -> FormField:
    return FormField(ident, label, attr, "int", group, (Integer(low),))


def _choice(attr: str, choices: tuple[str, ...], group: FieldGroup) -> FormField:
    return FormField(attr, attr, attr, "choice", group, choices=choices)


FORM_FIELDS: tuple[FormField, ...] = (
    FormField("model", "model", "model", "text", "model", placeholder=MODEL_HINT),
    FormField(
        "metric", "metric", "metric", "text", "tasks", optional=True, placeholder=METRIC_HINT
    ),
    _int("num-fewshot", "few-shot", "num_fewshot", 0, "tasks"),
    dataclasses.replace(
        _int("limit", "limit", "limit", 1, "tasks"), optional=True, placeholder="all items"
    ),
    _choice("objective", OBJECTIVE_CHOICES, "ga"),
    dataclasses.replace(
        _choice("granularity", GRANULARITIES, "ga"),
        tooltip="layer: drop whole decoder layers; sublayer: drop attention and MLP sub-blocks "
        f"separately ({', '.join(SUBLAYER_FAMILIES)} families)",
    ),
    dataclasses.replace(
        _int("prune", PRUNE_HELP["layer"][0], "prune", 1), tooltip=PRUNE_HELP["layer"][1]
    ),
    FormField(
        "prune-range",
        "prune range",
        "prune_range",
        "range",
        "ga",
        (Function(_range_ok, f"the prune range is {RANGE_HINT}"),),
        optional=True,
        placeholder=RANGE_HINT,
    ),
    dataclasses.replace(
        _int("attention-drops", "attn drops", "attention_drops", 0),
        optional=True,
        placeholder="free",
        tooltip="how many of the k sub-blocks are attention (the rest MLP); empty: the search "
        "chooses",
    ),
    _int("protect", "protect", "protect", 0),
    dataclasses.replace(
        _choice("algorithm", ALGORITHM_CHOICES, "ga"),
        tooltip="evopress: (1 + lambda) evolution with multi-step selection; ga: the original "
        "method's operators (a Pareto run uses NSGA-II)",
    ),
    FormField(
        "baselines",
        "baselines",
        "baselines",
        "list",
        "ga",
        optional=True,
        placeholder="none",
        tooltip="scored before the search and ranked with its genomes: shortgpt, angular, "
        "last_k, greedy (greedy costs evaluations: see the estimate)",
    ),
    dataclasses.replace(
        _int("population", "population", "population", 0),
        tooltip="evopress: random starting candidates besides the baselines (0: none); "
        "ga: the population (at least 2)",
    ),
    _int("generations", "generations", "generations", 0),
    _int("offspring", "offspring", "offspring", 1),
    dataclasses.replace(
        _int("selection-tokens", "select tokens", "selection_tokens", 128),
        optional=True,
        placeholder="all",
        tooltip="evopress with KL/perplexity: children are scored on this many calibration "
        "tokens first, the best 2 on all of them",
    ),
    _int("tournament", "tournament", "tournament", 1),
    _int("seed", "seed", "seed", None),
    FormField("cxpb", "cxpb", "cxpb", "float", "ga", (Number(0, 1),)),
    FormField("mutpb", "mutpb", "mutpb", "float", "ga", (Number(0, 1),)),
    _choice("fitness", FITNESS_CHOICES, "ga"),
    _choice("invalid", INVALID_CHOICES, "ga"),
    _choice("mutation", MUTATION_CHOICES, "ga"),
    _choice("init", INIT_CHOICES, "ga"),
    FormField(
        "calibration",
        "calibration",
        "calibration",
        "text",
        "trust",
        placeholder="offline, a .txt/.jsonl file or hf:NAME",
    ),
    _int("calibration-tokens", "calib. tokens", "calibration_tokens", 2, "trust"),
    _int("finalists", "finalists", "finalists", 0, "trust"),
    dataclasses.replace(
        _int("confirm-limit", "confirm limit", "confirm_limit", 1, "trust"),
        optional=True,
        placeholder="all items",
    ),
    FormField(
        "holdout-tasks",
        "held out",
        "holdout_tasks",
        "list",
        "trust",
        optional=True,
        placeholder="default: arc_easy, piqa, winogrande (offline)",
    ),
    FormField(
        "device", "device", "device", "text", "hardware", (Function(device_ok, DEVICE_HINT),)
    ),
    _choice("dtype", DTYPE_CHOICES, "hardware"),
    _choice("scorer", SCORER_CHOICES, "hardware"),
    dataclasses.replace(_int("workers", "workers", "workers", 1, "hardware"), tooltip=WORKERS_HINT),
    # Shown only where more than one GPU is found (the screen hides it otherwise).
    FormField(
        "devices",
        "devices",
        "devices",
        "choice",
        "hardware",
        optional=True,
        choices=(OFF, "all", "list"),
        typed="list",
        placeholder="cuda:0,cuda:1",
        tooltip="one worker process per GPU, each holding the model; off: the device field only",
    ),
    FormField(
        "ray",
        "ray",
        "ray",
        "choice",
        "hardware",
        optional=True,
        choices=(OFF, "local", "auto", "address"),
        typed="address",
        placeholder="HOST:PORT",
        tooltip="Ray actors: local starts an instance here, auto joins this machine's cluster",
    ),
)


def fields_of(group: FieldGroup) -> list[FormField]:
    """The form's fields in one group, in form order."""
    return [f for f in FORM_FIELDS if f.group == group]


def _override(ident: str, attr: str) -> FormField:
    """A per-task override of a benchmark default: the same checks, empty meaning "the default"."""
    default = next(f for f in FORM_FIELDS if f.attr == attr)
    return dataclasses.replace(default, ident=ident, optional=True, placeholder=default.label)


# The per-task override row; ``attr`` is the TaskSpec field each one sets.
OVERRIDE_FIELDS: tuple[FormField, ...] = (
    _override("override-metric", "metric"),
    _override("override-fewshot", "num_fewshot"),
    _override("override-limit", "limit"),
)
