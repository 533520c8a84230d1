"""How numbers read to a user: durations, sizes, parameter counts, scores with their noise.

One module so the Setup screen, the Run and Results screens, the CLI and the model card print the
same quantity the same way. Stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: coarse on purpose, for estimates and elapsed times."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size(n_bytes: int | None) -> str:
    """Binary units, one decimal above bytes: ``512 B``, ``1.5 MiB``, ``2.3 GiB``; ``?`` if unknown."""
    if n_bytes is None or n_bytes < 0:
        return "?"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def params(n: int | None) -> str:
    """``135.0M``, ``8.03B``, ``12.5K``; ``?`` if unknown. Add the word "params" where it helps."""
    if n is None or n < 0:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    """``1 search``, ``3 searches``: the count and the noun that agrees with it."""
    if n == 1:
        return f"1 {word}"
    if plural_form is None:
        plural_form = word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")
    return f"{n} {plural_form}"


def score(value: float | None, stderr: float | None = None, digits: int = 4) -> str:
    """``0.4512 ± 0.0110`` when the standard error is known, the bare value otherwise.

    Enough decimals that the standard error shows two significant digits (a KL of 0.000692 with a
    standard error of 0.000036 reads ``0.000692 ± 0.000036``, not ``0.0007 ± 0.0000``)."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "inf"
    if stderr is not None and not math.isnan(stderr) and stderr > 0:
        digits = max(digits, min(12, 1 - math.floor(math.log10(stderr))))
    elif value != 0 and abs(value) < 10**-digits * 100:
        digits = max(digits, min(12, 2 - math.floor(math.log10(abs(value)))))
    if stderr is None or math.isnan(stderr):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def scores_line(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """One line of a genome's scores: ``hellaswag acc_norm 0.4500 ± 0.1100  ...`` (the metric of
    each task with its standard error; KL and perplexity for the calibration pseudo-task)."""
    parts = []
    for task, metrics in scores.items():
        if not metrics:
            continue
        if "kl" in metrics and "ppl" in metrics:
            parts.append(
                f"{task} kl {score(metrics['kl'], metrics.get('kl_stderr'))} "
                f"ppl {score(metrics['ppl'], metrics.get('ppl_stderr'), 2)}"
            )
            continue
        metric, value = next(iter(metrics.items()))
        parts.append(f"{task} {metric} {score(value, metrics.get(f'{metric}_stderr'))}")
    return "  ".join(parts)
