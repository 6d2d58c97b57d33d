"""Confidence intervals for the summary: Wilson for proportions, bootstrap for means."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from muscle.metrics.statistics import wilson_interval


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean (deterministic seed)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def proportion(values: Sequence[bool]) -> dict[str, object]:
    k, n = int(sum(bool(v) for v in values)), len(values)
    ci = wilson_interval(k, n) or (0.0, 1.0)  # one implementation for eval and compare
    return {"value": k / n if n else float("nan"), "ci95": list(ci), "ci": "wilson"}


def mean(values: Sequence[float]) -> dict[str, object]:
    x = [float(v) for v in values]
    value = sum(x) / len(x) if x else float("nan")
    return {"value": value, "ci95": list(bootstrap_mean_ci(x)), "ci": "bootstrap"}
