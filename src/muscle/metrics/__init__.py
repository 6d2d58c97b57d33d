"""Compatibility metrics (numpy only; importing this package never imports torch).

Build a mergeable table of counts per old → new pair (:class:`DiscreteCounts`,
:class:`ContinuousCounts`), sum tables across batches or processes, then compute rates with
:func:`discrete_metrics` / :func:`continuous_metrics`.
"""

from muscle.metrics.continuous import continuous_metrics
from muscle.metrics.counts import ContinuousCounts, DiscreteCounts
from muscle.metrics.discrete import discrete_metrics
from muscle.metrics.statistics import (
    mcnemar_exact_p,
    newcombe_paired_interval,
    normal_mean_interval,
    wilson_interval,
)

__all__ = [
    "ContinuousCounts",
    "DiscreteCounts",
    "continuous_metrics",
    "discrete_metrics",
    "mcnemar_exact_p",
    "newcombe_paired_interval",
    "normal_mean_interval",
    "wilson_interval",
]
