"""Confidence intervals and tests for paired comparisons (pure Python + numpy).

* :func:`wilson_interval` — Wilson score interval for a binomial proportion (NFR, PFR).
* :func:`newcombe_paired_interval` — Newcombe's (1998, method 10) hybrid score interval for
  the difference of two *paired* proportions (accuracy of new minus accuracy of old), computed
  from the 2×2 table alone, so it is mergeable like every other metric here.
* :func:`mcnemar_exact_p` — exact two-sided McNemar test on the discordant pairs
  (binomial with p = 1/2).
* :func:`normal_mean_interval` — normal-approximation interval for a mean (continuous D).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # standard normal 97.5 % quantile
_EXACT_MCNEMAR_MAX = 2000  # up to this many discordant pairs use exact integer arithmetic


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for ``k`` successes in ``n`` trials; ``None`` when n == 0."""
    if n <= 0:
        return None
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return (lower, upper)


def newcombe_paired_interval(
    a: int, b: int, c: int, d: int, z: float = Z95
) -> tuple[float, float] | None:
    """95 % interval for ``p_new - p_old`` from a paired 2×2 table.

    ``a`` = both correct, ``b`` = old correct only (negative flips), ``c`` = new correct only
    (positive flips), ``d`` = both wrong.  Newcombe (1998), method 10 ("square-and-add"):
    Wilson intervals of the two marginal proportions combined with the table's phi
    correlation (with Newcombe's n/2 correction), as in Fagerland, Lydersen & Laake (2017).
    """
    n = a + b + c + d
    if n <= 0:
        return None
    p_new, p_old = (a + c) / n, (a + b) / n
    diff = p_new - p_old
    l_new, u_new = wilson_interval(a + c, n, z)  # type: ignore[misc]
    l_old, u_old = wilson_interval(a + b, n, z)  # type: ignore[misc]
    marg = (a + b) * (c + d) * (a + c) * (b + d)
    # phi with Newcombe's correction: (A - n/2) when A > n/2, 0 for 0 <= A <= n/2, A below 0.
    det = a * d - b * c
    if marg == 0:
        phi = 0.0
    elif det > n / 2:
        phi = (det - n / 2) / math.sqrt(marg)
    elif det >= 0:
        phi = 0.0
    else:
        phi = det / math.sqrt(marg)
    dl_new, du_new = p_new - l_new, u_new - p_new
    dl_old, du_old = p_old - l_old, u_old - p_old
    lower = diff - math.sqrt(max(0.0, dl_new**2 - 2 * phi * dl_new * du_old + du_old**2))
    upper = diff + math.sqrt(max(0.0, du_new**2 - 2 * phi * du_new * dl_old + dl_old**2))
    return (max(-1.0, lower), min(1.0, upper))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``2 · P(X ≤ min(b, c))`` for X ~ Bin(b + c, 1/2),
    capped at 1 (1 with no discordant pairs: nothing differs)."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    if m <= _EXACT_MCNEMAR_MAX:
        tail = sum(math.comb(m, i) for i in range(k + 1))
        return min(1.0, 2 * tail / 2**m)
    # Log space: log pmf(i) = log C(m, i) - m log 2, built by the ratio recurrence.
    i = np.arange(k, dtype=np.float64)
    log_terms = np.concatenate(([0.0], np.cumsum(np.log((m - i) / (i + 1)))))
    log_terms -= m * math.log(2.0)
    top = float(log_terms.max())
    log_tail = top + math.log(float(np.exp(log_terms - top).sum()))
    return min(1.0, 2.0 * math.exp(log_tail))


def normal_mean_interval(
    total: float, total_sq: float, n: int, z: float = Z95
) -> tuple[float, float] | None:
    """Normal-approximation interval for a mean from its sum and sum of squares (``None``
    under two values: no spread to estimate)."""
    if n < 2:
        return None
    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z * math.sqrt(var / n)
    return (mean - half, mean + half)
