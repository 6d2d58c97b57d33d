"""Confidence intervals for the summary: Wilson for proportions, bootstrap for means."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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
    return {"value": k / n if n else float("nan"), "ci95": list(wilson_ci(k, n)), "ci": "wilson"}


def mean(values: Sequence[float]) -> dict[str, object]:
    x = [float(v) for v in values]
    value = sum(x) / len(x) if x else float("nan")
    return {"value": value, "ci95": list(bootstrap_mean_ci(x)), "ci": "bootstrap"}
