"""The demo's paper-style table (text) and its self-contained HTML report with plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from muscle.io import atomic_open

COLUMNS = (
    ("acc v1", "acc_v1"),
    ("acc v2", "acc_v2"),
    ("acc v2C", "acc_v2c"),
    ("NFR v2", "nfr_v2"),
    ("NFR v2C", "nfr_v2c"),
    ("ΔNFR_c", "delta_nfr"),
    ("Δ%NFR_c", "nfr_reduction_pct"),
    ("Δacc_c", "delta_acc"),
    ("acc none", "acc_none"),
    ("NFR none", "nfr_none"),
    ("m_g v2", "m_g_v2"),
    ("m_r v2", "m_r_v2"),
    ("m_g v2C", "m_g_v2c"),
    ("m_r v2C", "m_r_v2c"),
)


def fmt(key: str, value: Any) -> str:
    """Points (×100) for rates, accuracies and m_g/m_r (ROUGE points, as the accuracy column of a
    ROUGE task), a signed figure for changes."""
    if value is None:
        return "–"
    if key == "nfr_reduction_pct":
        return _signed(-value) + "%"  # Δ%NFR_c: negative when NFR goes down (paper convention)
    if key.startswith("delta"):
        return _signed(100 * value)
    return f"{100 * value:.1f}"


LEGEND = (
    "acc: accuracy in % (for a ROUGE task: mean ROUGE-1 in points); NFR: % of the test items "
    "v1's task model M1 gets right that this model gets wrong (ROUGE: any decrease); v2 = M2, "
    "the new task model; v2C = MUSCLE's compatibility adapter; none = M2 trained on with "
    "cross-entropy for the same steps (the control). ΔNFR_c, Δacc_c: v2C minus v2, in points; "
    "Δ%NFR_c: ΔNFR_c relative to NFR v2 (negative: fewer flips); m_g / m_r: mean gain / "
    "regression in ROUGE-1 points over the items that rose / fell."
)


def changes(summary: dict[str, Any]) -> list[str]:
    """One line per task: which of M2's negative flips MUSCLE and ``none`` removed and added,
    with the interval of ΔNFR (the table's net figure hides flips that moved)."""
    out = []
    for task, row in summary["tasks"].items():
        if row.get("flips_removed_v2c") is None:
            continue
        line = (
            f"{task}: of M2's {row['nf_v2']} negative flips ({row['n']} items), MUSCLE removed "
            f"{row['flips_removed_v2c']} and added {row['flips_added_v2c']}"
        )
        ci = row.get("delta_nfr_ci95")
        if ci is not None:
            line += f" (ΔNFR 95 % CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} points)"
        if row.get("flips_removed_none") is not None:
            line += (
                f"; none removed {row['flips_removed_none']} and added {row['flips_added_none']}"
            )
        out.append(line)
    return out


def none_checks(summary: dict[str, Any]) -> list[str]:
    """The ``none`` control against M2 per task, stated whether or not it passed."""
    out = []
    for task, row in summary["tasks"].items():
        if row.get("acc_none") is None:
            continue
        gain = 100 * (row["acc_none"] - row["acc_v2"])
        verdict = "passed" if round(gain, 7) <= 2 else "failed: M2 was probably not converged"
        out.append(
            f"{task}: none vs M2 {gain:+.1f} points accuracy, NFR {100 * row['nfr_none']:.1f} vs "
            f"{100 * row['nfr_v2']:.1f} (at most +2 points expected of a converged M2: {verdict})"
        )
    return out


def _signed(x: float) -> str:
    """``+1.5`` / ``-1.5``; ``0.0`` for what rounds to zero (no ``-0.0``)."""
    return "0.0" if round(x, 1) == 0 else f"{x:+.1f}"


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper-style table (columns with no value anywhere dropped)."""
    tasks = summary["tasks"]
    cols = [(h, k) for h, k in COLUMNS if any(row.get(k) is not None for row in tasks.values())]
    rows = [[t] + [fmt(k, row.get(k)) for _, k in cols] for t, row in tasks.items()]
    return ["task"] + [h for h, _ in cols], rows


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list[tuple[str, str]] = []
    tasks = summary["tasks"]
    # Paper Fig. 1: accuracy against NFR for v2 and v2C (and the `none` control).
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, (task, row) in zip(axes[0], tasks.items(), strict=True):
        # hollow markers of different sizes: a v2C that equals v2 stays visible
        for tag, label, marker, size in (
            ("v2", "v2 (vanilla update)", "o", 220),
            ("none", "none (CE, same steps)", "s", 110),
            ("v2c", "v2C (MUSCLE)", "*", 90),
        ):
            if row.get(f"nfr_{tag}") is None:
                continue
            colour = {"v2": "tab:blue", "none": "tab:orange", "v2c": "tab:green"}[tag]
            ax.scatter(
                100 * row[f"nfr_{tag}"],
                100 * row[f"acc_{tag}"],
                s=size,
                marker=marker,
                label=label,
                facecolors="none" if tag != "v2c" else colour,
                edgecolors=colour,
                linewidths=1.5,
            )
        score = "v1 ROUGE-1" if row["kind"] == "continuous" else "v1 accuracy"
        ax.axhline(100 * row["acc_v1"], color="grey", ls=":", lw=1, label=score)
        ax.set_xlabel("negative flip rate vs v1 (%)")
        ax.set_ylabel("ROUGE-1 (%)" if row["kind"] == "continuous" else "accuracy (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.1))
    fig.suptitle("Accuracy vs negative flips (paper Fig. 1): up and to the left is better", y=1.04)
    figs.append(("Accuracy against negative flip rate", _png(fig)))
    plt.close(fig)
    # Learning curves of M1 / M2 (and the compatibility runs) by epoch.
    training = summary.get("training", {})
    if training:
        fig, axes = plt.subplots(
            1, len(training), figsize=(4.2 * len(training), 3.4), squeeze=False
        )
        for ax, (task, runs) in zip(axes[0], training.items(), strict=True):
            for name, run in runs.items():
                eps = [e for e in run.get("epochs", []) if e.get("val_loss") is not None]
                if not eps or name not in ("v1", "v2"):
                    continue
                x = [e["epoch"] for e in eps]
                line = ax.plot(
                    x,
                    [e["val_loss"] for e in eps],
                    marker="o",
                    label=f"M{name.removeprefix('v')} val",
                )
                tr = [e.get("train_loss") for e in eps]
                if all(v is not None for v in tr):
                    ax.plot(
                        x,
                        tr,
                        ls="--",
                        color=line[0].get_color(),
                        label=f"M{name.removeprefix('v')} train",
                    )
                if run.get("best_epoch") is not None:
                    ax.axvline(run["best_epoch"], color=line[0].get_color(), ls=":", lw=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel("cross-entropy")
            ax.set_title(task)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("Task adapters M1 (base v1) and M2 (base v2); dotted: chosen epoch", y=1.04)
        figs.append(("Learning curves of the task adapters", _png(fig)))
        plt.close(fig)
    return figs


def _compare_links(summary: dict[str, Any], root: Path) -> list[tuple[str, str]]:
    """Each task's own compare report, relative to the demo report's folder."""
    import os

    work = Path(summary.get("work_dir", ""))
    out = []
    for task in summary["tasks"]:
        page = work / task / "compare" / "report.html"
        if page.is_file():
            out.append((task, Path(os.path.relpath(page.resolve(), root.resolve())).as_posix()))
    return out


def write_report(summary: dict[str, Any], path: str | Path) -> None:
    """A static, self-contained HTML page: the table, Fig. 1 and the learning curves."""
    head, rows = table_rows(summary)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    imgs = "".join(
        f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{data}'>"
        for title, data in _figures(summary)
    )

    def items(lines: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"

    warnings = summary.get("warnings") or []
    warn = (
        "<h2>What MUSCLE changed</h2>"
        + items(changes(summary))
        + "<h2>Fair-comparison checks</h2>"
        + items(none_checks(summary))
        + ("<h3>Warnings</h3>" + items(warnings) if warnings else "<p>No warnings.</p>")
    )
    links = "".join(
        f"<li><a href='{html.escape(href)}'>{html.escape(task)}</a></li>"
        for task, href in _compare_links(summary, Path(path).parent)
    )
    if links:
        warn += "<h2>Per-item flips of each task</h2><ul>" + links + "</ul>"
    seconds = summary.get("seconds") or {}
    timing = ", ".join(f"{k} {v} s" for k, v in seconds.items() if k != "total")
    timing = f"{timing}; total {seconds.get('total')} s (the tasks run side by side)"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>muscle demo (seed {summary["seed"]})</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>MUSCLE on the built-in scenario (seed {summary["seed"]}, size {summary["size"]})</h1>
<p>v1 and v2 are Llama bases pre-trained from scratch on a generated world (v2 larger, more
data); M1/M2 are LoRA task adapters with one recipe (best epoch by validation cross-entropy);
v2C is the MUSCLE compatibility adapter (<code>student-wrong</code>), <code>none</code> continues
M2 with cross-entropy for the same steps. Accuracy and NFR in %, NFR counted against v1 on the
test split; for the ROUGE task accuracy means mean ROUGE-1 and flips are any decrease.</p>
<table><tr>{th}</tr>{body}</table><p><small>{html.escape(LEGEND)}</small></p>{warn}{imgs}
<p>Time: {html.escape(timing)}</p></body></html>
"""
    with atomic_open(path) as fh:
        fh.write(page)
