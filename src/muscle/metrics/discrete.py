"""Compatibility metrics for discrete (correct / wrong) outcomes.

Every rate's denominator is all N instances, as in the paper, except the two conditional
shares BTC and BEC, whose denominators are stated.
"""

from __future__ import annotations

from typing import Any

from muscle.metrics.counts import DiscreteCounts
from muscle.metrics.statistics import mcnemar_exact_p, newcombe_paired_interval, wilson_interval


def _div(num: float, den: float) -> float | None:
    return num / den if den else None


def discrete_metrics(counts: DiscreteCounts) -> dict[str, Any]:
    """All metrics of one old → new pair from its table of counts.

    ``nfr_mc`` (new wrong *and* a changed prediction) is ``None`` without predictions;
    ``btc`` = old-correct that stay correct / old-correct; ``bec`` = new errors the old model
    also made / new errors; ``relative_nfr`` = NFR / ((1 − err_old) · err_new).
    """
    n = counts.n
    a, b, c, d = (
        counts.both_correct,
        counts.negative_flips,
        counts.positive_flips,
        counts.both_wrong,
    )
    acc_old, acc_new = _div(a + b, n), _div(a + c, n)
    nfr, pfr = _div(b, n), _div(c, n)
    err_new = None if acc_new is None else 1.0 - acc_new
    rel_den = acc_old * err_new if acc_old is not None and err_new is not None else 0.0
    ci = newcombe_paired_interval(a, b, c, d)
    return {
        "n": n,
        "accuracy_old": acc_old,
        "accuracy_new": acc_new,
        "both_correct": a,
        "both_wrong": d,
        "nf": b,
        "pf": c,
        "nfr": nfr,
        "pfr": pfr,
        "nfr_ci95": _ci(wilson_interval(b, n)),
        "pfr_ci95": _ci(wilson_interval(c, n)),
        "nfr_mc": _div(counts.new_wrong_changed, n) if counts.has_predictions else None,
        "btc": _div(a, a + b),
        "bec": _div(d, b + d),
        "relative_nfr": _div(nfr, rel_den) if nfr is not None else None,
        "mcnemar_p": mcnemar_exact_p(b, c) if n else None,
        "accuracy_delta": None if n == 0 else (c - b) / n,
        "accuracy_delta_ci95": _ci(ci),
    }


def _ci(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]
