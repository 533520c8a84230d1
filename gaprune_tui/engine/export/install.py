"""Atomic installation of an export: checked target, hidden partial folder, rename, failed marker.

The model is written into a hidden ``.<name>.partial-<pid>`` folder beside the target and renamed
into place only when everything (verification and model card included) is written. A failure or
Ctrl+C renames the partial folder to ``<name>.failed-<timestamp>`` with a ``FAILED.txt`` holding
the reason; a kill -9 leaves the ``.partial-<pid>`` folder, recognisably named. The target is never
half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from gaprune_tui.core.errors import ExportError

FAILED_FILE = "FAILED.txt"


def _check_parent(out: Path) -> None:
    """The nearest existing ancestor of ``out`` must be a writable folder, or nothing can start."""
    for ancestor in out.parents:
        if not ancestor.exists():
            continue
        if not ancestor.is_dir():
            raise ExportError(
                f"export folder {out} cannot be created: {ancestor} is a file, not a folder; choose another --out folder"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ExportError(
                f"export folder {out} cannot be created: {ancestor} is not writable; choose another --out folder"
            )
        return


def check_target(out: Path, force: bool, *, protect: Sequence[Path] = ()) -> None:
    """Refuse a target that cannot be created, that exists and is not empty (unless ``force``), or
    that would clobber something we must never delete (the base model, the run folder)."""
    out = Path(out).expanduser().resolve()
    for keep in protect:
        keep = Path(keep).resolve()
        if out == keep or out in keep.parents:
            raise ExportError(
                f"export folder {out} would replace {keep}: choose another --out folder"
            )
    if not out.exists():
        _check_parent(out)
        return
    if not out.is_dir():
        raise ExportError(f"export target {out} is a file: choose another --out folder")
    if any(out.iterdir()) and not force:
        raise ExportError(
            f"export folder {out} already exists and is not empty: pass --force to replace it or --out to choose another"
        )


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def fresh_partial(out: Path) -> Path:
    """An empty partial folder for ``out`` (its parents created; a leftover of our pid removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_dir(out)
    if partial.exists():  # a leftover of a killed process that had our pid
        shutil.rmtree(partial)
    partial.mkdir()
    return partial


def mark_failed(partial: Path, out: Path, exc: BaseException) -> Path:
    """Rename the partial folder to ``<name>.failed-<timestamp>`` and write the reason into it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    failed = out.parent / f"{out.name}.failed-{stamp}"
    if failed.exists():
        failed = out.parent / f"{out.name}.failed-{stamp}-{os.getpid()}"
    reason = (
        "interrupted (KeyboardInterrupt)"
        if isinstance(exc, KeyboardInterrupt)
        else f"{type(exc).__name__}: {exc}"
    )
    text = (
        f"gaprune-tui export FAILED at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"target: {out} (left untouched)\nreason: {reason}\n\n"
        "This folder holds whatever was written before the failure; it is not a usable model.\n\n"
        + "".join(traceback.format_exception(exc))
    )
    with contextlib.suppress(OSError):
        partial.mkdir(parents=True, exist_ok=True)
        (partial / FAILED_FILE).write_text(text, encoding="utf-8")
    try:
        os.rename(partial, failed)
    except OSError:
        return partial
    return failed


def install(partial: Path, out: Path) -> None:
    """Rename the finished partial folder onto the target (replacing an old one if there is one)."""
    old: Path | None = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.replaced-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(out, old)
        else:
            out.rmdir()
    try:
        os.rename(partial, out)
    except BaseException:
        if old is not None and not out.exists():
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fix_permissions(folder: Path) -> None:
    """MergeKit writes shards 0600 (via temp files); give every file the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
