"""Compatibility metrics for continuous scores in [0, 1] (e.g. ROUGE-1 of a summary).

``D = S_new − S_old`` per instance; a negative flip is ``D < −ε``, a positive flip ``D > ε``
(ε = 0 by default, as in the paper).  ``m_g`` is the mean D over gains, ``m_r`` the mean |D|
over regressions.
"""

from __future__ import annotations

from typing import Any

from muscle.metrics.counts import ContinuousCounts
from muscle.metrics.discrete import _ci, _div
from muscle.metrics.statistics import mcnemar_exact_p, normal_mean_interval, wilson_interval


def continuous_metrics(counts: ContinuousCounts) -> dict[str, Any]:
    """All metrics of one old → new pair of continuous scores.

    ``accuracy_delta`` is the mean score difference (= mean D) with a normal-approximation
    interval; ``mcnemar_p`` is the exact sign test on the flipped instances (gains vs
    regressions).  Discrete-only keys (``btc``, ``bec``, ``relative_nfr``, ``nfr_mc``) are
    ``None``.
    """
    n = int(counts.n)
    nf, pf = int(counts.n_regression), int(counts.n_gain)
    mean_delta = _div(counts.sum_delta, n)
    return {
        "n": n,
        "mean_score_old": _div(counts.sum_old, n),
        "mean_score_new": _div(counts.sum_new, n),
        "nf": nf,
        "pf": pf,
        "nfr": _div(nf, n),
        "pfr": _div(pf, n),
        "nfr_ci95": _ci(wilson_interval(nf, n)),
        "pfr_ci95": _ci(wilson_interval(pf, n)),
        "nfr_mc": None,
        "btc": None,
        "bec": None,
        "relative_nfr": None,
        "mcnemar_p": mcnemar_exact_p(nf, pf) if n else None,
        "accuracy_delta": mean_delta,
        "accuracy_delta_ci95": _ci(normal_mean_interval(counts.sum_delta, counts.sum_delta_sq, n)),
        "m_g": _div(counts.sum_gain, pf),
        "m_r": _div(counts.sum_regression, nf),
        "mean_delta": mean_delta,
        "epsilon": counts.epsilon,
    }
