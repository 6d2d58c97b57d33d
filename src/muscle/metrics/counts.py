"""Mergeable tables of counts for one old → new pair.

Every metric is a function of these tables, so batches, shards and processes can be
counted separately and summed (``a + b``) before any rate is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Last axis of DiscreteCounts.table: how the two predictions relate.
PRED_DIFFERENT, PRED_SAME, PRED_UNKNOWN = 0, 1, 2


@dataclass
class DiscreteCounts:
    """``table[old_correct, new_correct, pred_relation]`` — a 2×2×3 int64 array.

    ``pred_relation`` is :data:`PRED_DIFFERENT`, :data:`PRED_SAME` or :data:`PRED_UNKNOWN`
    (no predictions given).  ``n`` is the table's sum.
    """

    table: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 3), dtype=np.int64))

    @classmethod
    def from_arrays(
        cls,
        old_correct: np.ndarray,
        new_correct: np.ndarray,
        same_prediction: np.ndarray | None = None,
    ) -> DiscreteCounts:
        """Count from boolean arrays; ``same_prediction`` is a bool array, an array of
        ``PRED_*`` codes (unknown where a prediction is missing), or ``None``."""
        flat = cls._cells(old_correct, new_correct, same_prediction)
        table = np.bincount(flat, minlength=12).reshape(2, 2, 3)
        return cls(table.astype(np.int64))

    @classmethod
    def grouped(
        cls,
        old_correct: np.ndarray,
        new_correct: np.ndarray,
        same_prediction: np.ndarray | None,
        groups: np.ndarray,
        n_groups: int,
    ) -> list[DiscreteCounts]:
        """One table per group (``groups`` holds codes 0..n_groups-1), in one pass."""
        whole = cls._cells(old_correct, new_correct, same_prediction)
        flat = np.asarray(groups, dtype=np.int64) * 12 + whole
        tables = np.bincount(flat, minlength=12 * n_groups).reshape(n_groups, 2, 2, 3)
        return [cls(t.astype(np.int64)) for t in tables]

    @staticmethod
    def _cells(
        old_correct: np.ndarray, new_correct: np.ndarray, same_prediction: np.ndarray | None
    ) -> np.ndarray:
        old = np.asarray(old_correct, dtype=bool)
        new = np.asarray(new_correct, dtype=bool)
        if old.shape != new.shape:
            raise ValueError("old and new arrays differ in length")
        if same_prediction is None:
            rel = np.full(old.shape, PRED_UNKNOWN, dtype=np.int64)
        else:
            rel = np.asarray(same_prediction)
            rel = rel.astype(np.int64) if rel.dtype == bool else rel.astype(np.int64, copy=False)
            if rel.shape != old.shape or ((rel < 0) | (rel > PRED_UNKNOWN)).any():
                raise ValueError("same_prediction: one bool or PRED_* code per instance")
        return old.astype(np.int64) * 6 + new.astype(np.int64) * 3 + rel

    def __add__(self, other: DiscreteCounts) -> DiscreteCounts:
        return DiscreteCounts(self.table + other.table)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, e.g. to gather tables from several processes."""
        return {"kind": "discrete", "table": self.table.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiscreteCounts:
        return cls(np.asarray(d["table"], dtype=np.int64).reshape(2, 2, 3))

    @property
    def n(self) -> int:
        return int(self.table.sum())

    def cell(self, old_correct: bool, new_correct: bool) -> int:
        return int(self.table[int(old_correct), int(new_correct)].sum())

    @property
    def both_correct(self) -> int:
        return self.cell(True, True)

    @property
    def negative_flips(self) -> int:
        return self.cell(True, False)

    @property
    def positive_flips(self) -> int:
        return self.cell(False, True)

    @property
    def both_wrong(self) -> int:
        return self.cell(False, False)

    @property
    def has_predictions(self) -> bool:
        return int(self.table[..., PRED_UNKNOWN].sum()) == 0

    @property
    def new_wrong_changed(self) -> int:
        """New model wrong and its prediction differs from the old one's."""
        return int(self.table[:, 0, PRED_DIFFERENT].sum())


_CONT_FIELDS = (
    "n",
    "n_gain",
    "n_regression",
    "sum_gain",
    "sum_regression",
    "sum_delta",
    "sum_delta_sq",
    "sum_old",
    "sum_new",
)


# Differences within this much of ±ε are float rounding (0.55 - 0.5 = 0.05000000000000004),
# not flips; scores live in [0, 1], so real differences are far larger.
FLIP_TOLERANCE = 1e-12


def continuous_flips(d: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of gains (D > ε) and regressions (D < −ε) of ``d = S_new − S_old``, the one
    definition of a continuous flip (up to :data:`FLIP_TOLERANCE`)."""
    margin = epsilon + FLIP_TOLERANCE
    return d > margin, d < -margin


@dataclass
class ContinuousCounts:
    """Sufficient statistics of ``D = S_new - S_old`` with threshold ``epsilon``.

    ``values`` holds, in order: n, gains (D > ε), regressions (D < −ε), Σ D over gains,
    Σ |D| over regressions, Σ D, Σ D², Σ S_old, Σ S_new.
    """

    epsilon: float = 0.0
    values: np.ndarray = field(default_factory=lambda: np.zeros(len(_CONT_FIELDS)))

    @classmethod
    def from_arrays(
        cls, old_score: np.ndarray, new_score: np.ndarray, epsilon: float = 0.0
    ) -> ContinuousCounts:
        old = np.asarray(old_score, dtype=np.float64)
        new = np.asarray(new_score, dtype=np.float64)
        if old.shape != new.shape:
            raise ValueError("old and new arrays differ in length")
        d = new - old
        gain, reg = continuous_flips(d, epsilon)
        vals = np.array(
            [
                d.size,
                gain.sum(),
                reg.sum(),
                d[gain].sum(),
                -d[reg].sum(),
                d.sum(),
                (d * d).sum(),
                old.sum(),
                new.sum(),
            ],
            dtype=np.float64,
        )
        return cls(float(epsilon), vals)

    @classmethod
    def grouped(
        cls,
        old_score: np.ndarray,
        new_score: np.ndarray,
        epsilon: float,
        groups: np.ndarray,
        n_groups: int,
    ) -> list[ContinuousCounts]:
        """One set of sums per group (``groups`` holds codes 0..n_groups-1), in one pass."""
        old = np.asarray(old_score, dtype=np.float64)
        new = np.asarray(new_score, dtype=np.float64)
        g = np.asarray(groups, dtype=np.int64)
        d = new - old
        gain, reg = continuous_flips(d, epsilon)
        cols = [
            np.ones_like(d),
            gain.astype(np.float64),
            reg.astype(np.float64),
            np.where(gain, d, 0.0),
            np.where(reg, -d, 0.0),
            d,
            d * d,
            old,
            new,
        ]
        sums = np.stack([np.bincount(g, weights=c, minlength=n_groups) for c in cols], axis=1)
        return [cls(float(epsilon), row) for row in sums]

    def __add__(self, other: ContinuousCounts) -> ContinuousCounts:
        if self.epsilon != other.epsilon:
            raise ValueError("cannot merge counts made with different epsilon")
        return ContinuousCounts(self.epsilon, self.values + other.values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, e.g. to gather tables from several processes."""
        return {"kind": "continuous", "epsilon": self.epsilon, "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContinuousCounts:
        return cls(float(d["epsilon"]), np.asarray(d["values"], dtype=np.float64))

    def __getattr__(self, name: str) -> float:
        if name in _CONT_FIELDS:
            return float(self.values[_CONT_FIELDS.index(name)])
        raise AttributeError(name)
