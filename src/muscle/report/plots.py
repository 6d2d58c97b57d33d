"""Figures for the compatibility report, rendered with matplotlib's Agg backend to PNG and
returned base64-encoded so the HTML stays a single self-contained file."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

DISCRETE_QUADRANTS = (
    "both-correct",
    "gain",
    "regression",
    "same-mistake",
    "different-mistake",
    "both-wrong",
)
CONTINUOUS_QUADRANTS = ("gain", "unchanged", "regression")
COLOURS = {
    "both-correct": "#4c9a5b",
    "gain": "#8fd694",
    "regression": "#d9534f",
    "same-mistake": "#b0b0b0",
    "different-mistake": "#7f7f7f",
    "both-wrong": "#9a9a9a",
    "unchanged": "#c8c8c8",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _encode(fig: Any) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def quadrant_chart(pairs: list[dict[str, Any]], counts: list[dict[str, int]], kind: str) -> str:
    """Stacked horizontal bars: the share of each quadrant per pair."""
    plt = _pyplot()
    order = DISCRETE_QUADRANTS if kind == "discrete" else CONTINUOUS_QUADRANTS
    fig, ax = plt.subplots(figsize=(8, 0.7 + 0.6 * len(pairs)))
    labels = [f"{p['old']} → {p['new']}" for p in pairs]
    left = np.zeros(len(pairs))
    for q in order:
        vals = np.array([c.get(q, 0) for c in counts], dtype=float)
        if not vals.any():
            continue
        total = np.array([max(1, sum(c.values())) for c in counts], dtype=float)
        share = vals / total
        ax.barh(labels, share, left=left, color=COLOURS[q], label=q, edgecolor="white")
        left += share
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of instances")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _encode(fig)


def slice_nfr_chart(field: str, rows: list[dict[str, Any]], max_values: int = 30) -> str:
    """Grouped bars of NFR (with 95 % Wilson intervals) per slice value and pair: the
    ``max_values`` largest values, in the table's order (the title says when some are left out)."""
    plt = _pyplot()
    n_values = len(rows)
    keep = sorted(range(n_values), key=lambda i: -rows[i]["n"])[:max_values]
    rows = [rows[i] for i in sorted(keep)]
    n_pairs = len(rows[0]["pairs"]) if rows else 0
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) * max(1, n_pairs)), 3.5))
    x = np.arange(len(rows))
    width = 0.8 / max(1, n_pairs)
    for j in range(n_pairs):
        nfr = np.array([r["pairs"][j]["nfr"] or 0.0 for r in rows])
        lo = np.array([(r["pairs"][j]["nfr_ci95"] or [0, 0])[0] for r in rows])
        hi = np.array([(r["pairs"][j]["nfr_ci95"] or [0, 0])[1] for r in rows])
        label = f"{rows[0]['pairs'][j]['old']} → {rows[0]['pairs'][j]['new']}"
        ax.bar(
            x + j * width,
            nfr,
            width,
            label=label,
            yerr=[np.clip(nfr - lo, 0, None), np.clip(hi - nfr, 0, None)],
            capsize=2,
        )
    ax.set_xticks(x + width * (n_pairs - 1) / 2)
    ax.set_xticklabels(
        [f"{r['value']}\n(n={r['n']})" for r in rows], rotation=45, ha="right", fontsize=8
    )
    ax.set_ylabel("NFR")
    shown = f" (the {len(rows)} largest of {n_values} slices, by n)" if len(rows) < n_values else ""
    ax.set_title(f"Negative flip rate by {field}{shown}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _encode(fig)


def delta_histogram(deltas: list[np.ndarray], labels: list[str], epsilon: float) -> str:
    """Histogram of D = S_new − S_old for each pair (continuous scores)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(-1.025, 1.025, 42)  # width 0.05, D = 0 in a bin of its own
    for d, label in zip(deltas, labels, strict=True):
        ax.hist(d, bins=bins, alpha=0.5, label=label)
    for x in {-epsilon, epsilon}:
        ax.axvline(x, color="black", lw=0.8, ls="--")
    ax.set_xlabel("D = S_new − S_old")
    ax.set_ylabel("instances (log scale)")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _encode(fig)
