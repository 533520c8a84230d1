"""``export_genome``: the kept layers of a model folder, merged by MergeKit and installed atomically.

This is the part of an export that needs no run: a source folder, the layers to keep, a target.
``export_run`` builds on it, passing a ``finalize`` step (verification and card) that runs on the
finished partial folder before the rename, so the target only ever appears complete.
``build_atomically`` is that install flow (checked target, partial folder, rename, failed marker),
shared with the sub-block writer (``sublayer.export_sublayer``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gaprune_tui.core.errors import ExportError, GapruneError
from gaprune_tui.core.modelspec import read_config
from gaprune_tui.engine.export.install import (
    check_target,
    fix_permissions,
    fresh_partial,
    install,
    mark_failed,
)
from gaprune_tui.engine.export.lineage import export_dtype
from gaprune_tui.engine.export.mergekit import (
    check_kept,
    check_written,
    contiguous_runs,
    recipe_hub_id,
    run_mergekit,
    source_layer_count,
)
from gaprune_tui.engine.export.plan import Progress, silent


def export_genome(
    source_dir: Path,
    kept: Sequence[int],
    out: Path,
    *,
    dtype: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    trust_remote_code: bool = False,
    finalize: Callable[[Path], None] | None = None,
    spec: str | None = None,
) -> Path:
    """Write the model keeping only ``kept`` layers of ``source_dir`` into ``out``, atomically.

    ``dtype`` None keeps the checkpoint's own dtype (lossless). ``finalize(folder)`` runs on the
    finished partial folder before the rename. ``spec`` is the model as the run named it: its hub
    id, where one is known (``recipe_hub_id``), is what the saved MergeKit recipe names. Returns
    ``out``.
    """
    progress = progress or silent
    source_dir = Path(source_dir).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    src_config = read_config(source_dir, ExportError)
    n_layers = source_layer_count(src_config, source_dir / "config.json")
    kept = check_kept(kept, n_layers)
    out_dtype = export_dtype(dtype, src_config)

    def write(partial: Path) -> None:
        progress(
            "merge",
            f"MergeKit passthrough: {len(kept)}/{n_layers} layers in {len(contiguous_runs(kept))} slices ({out_dtype})",
        )
        hub_id = recipe_hub_id(source_dir, src_config, spec)
        sliced = run_mergekit(
            source_dir, kept, n_layers, out_dtype, partial, trust_remote_code, hub_id
        )
        if sliced:
            progress("merge", f"sliced per-layer config fields: {', '.join(sliced)}")
        check_written(partial, kept)

    return build_atomically(
        out, force=force, protect=[source_dir], write=write, finalize=finalize, progress=progress
    )


def build_atomically(
    out: Path,
    *,
    force: bool,
    protect: Sequence[Path],
    write: Callable[[Path], None],
    finalize: Callable[[Path], None] | None,
    progress: Progress,
) -> Path:
    """Check ``out``, ``write(partial)`` the model into a fresh partial folder, ``finalize`` it,
    and rename it onto ``out``; on any failure (Ctrl+C included) the partial folder becomes
    ``<out>.failed-*`` with the reason, and a ``GapruneError`` names it. Returns ``out``.

    The one install flow of every export: MergeKit's (``export_genome``) and the sub-block
    writer's (``sublayer.export_sublayer``)."""
    check_target(out, force, protect=protect)
    partial = fresh_partial(out)
    try:
        write(partial)
        if finalize is not None:
            finalize(partial)
        fix_permissions(partial)
        check_target(out, force, protect=protect)  # someone may have created it meanwhile
        install(partial, out)
    except BaseException as exc:
        failed = mark_failed(partial, out, exc)
        if isinstance(exc, GapruneError):
            raise type(exc)(f"{exc} (partial export kept in {failed})") from exc
        raise
    progress("done", f"wrote {out}")
    return out
