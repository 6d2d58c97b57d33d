"""Render ``report.md`` and ``report.html`` from the ``compat.json`` dict and the aligned
inputs (the latter for quadrant counts, the histogram of D and the regressions table)."""

from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from muscle.io import atomic_open
from muscle.report import plots

if TYPE_CHECKING:
    from muscle.compare import Aligned

_TRUNC = 160


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(v: list[float] | None) -> str:
    return "–" if v is None else f"[{v[0]:.4f}, {v[1]:.4f}]"


def _p(v: float | None) -> str:
    return "–" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")


def _pair(p: dict[str, Any]) -> str:
    return f"{p['old']} → {p['new']}"


def _dropped(join: dict[str, Any]) -> str:
    return ", ".join(f"{name} {n}" for name, n in join["dropped"].items())


def _intro(compat: dict[str, Any], epsilon: float) -> tuple[str, str]:
    """The report's opening sentence and its methods note (plain text)."""
    disc = compat["kind"] == "discrete"
    first = (
        f"{compat['n']} instances, {compat['kind']} outcomes"
        + ("" if disc else f", ε = {epsilon:g}")
        + f"; muscle-llm {compat.get('muscle_version', '?')}."
    )
    methods = compat["methods"]
    note = (
        f"Intervals: NFR/PFR {methods['nfr']}; "
        + ("accuracy difference " if disc else "mean D ")
        + f"{methods['accuracy_delta']}; McNemar: {methods['mcnemar']}."
    )
    return first, note


def _short(v: Any) -> str:
    text = "" if v is None else str(v)
    text = " ".join(text.split())
    return text if len(text) <= _TRUNC else text[: _TRUNC - 1] + "…"


def summary_rows(compat: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (one row per pair)."""
    disc = compat["kind"] == "discrete"
    old_key = "accuracy_old" if disc else "mean_score_old"
    new_key = "accuracy_new" if disc else "mean_score_new"
    head = ["pair", "n", "acc old" if disc else "score old", "acc new" if disc else "score new"]
    head += ["NF", "PF", "NFR [95% CI]", "PFR [95% CI]"]
    head += ["Δacc [95% CI]" if disc else "mean D [95% CI]", "McNemar p"]
    head += ["NFR_mc", "BTC", "BEC", "rel. NFR"] if disc else ["m_g", "m_r"]
    head += ["ΔNFR vs new [95% CI]", "Δ%NFR", "flips removed / added (p)"]
    head += ["Δacc vs new" if disc else "Δscore vs new"]
    rows = []
    for p in compat["pairs"]:
        row = [_pair(p), str(p["n"]), _fmt(p[old_key]), _fmt(p[new_key])]
        row += [str(p["nf"]), str(p["pf"])]
        row += [f"{_fmt(p['nfr'])} {_ci(p['nfr_ci95'])}", f"{_fmt(p['pfr'])} {_ci(p['pfr_ci95'])}"]
        row += [f"{_fmt(p['accuracy_delta'])} {_ci(p['accuracy_delta_ci95'])}", _p(p["mcnemar_p"])]
        if disc:
            row += [_fmt(p["nfr_mc"]), _fmt(p["btc"]), _fmt(p["bec"]), _fmt(p["relative_nfr"])]
        else:
            row += [_fmt(p["m_g"]), _fmt(p["m_r"])]
        pct = p.get("delta_nfr_pct")
        delta = moved = "–"
        if "flips_removed" in p:  # a candidate, against old → new
            delta = f"{_fmt(p['delta_nfr'])} {_ci(p['delta_nfr_ci95'])}"
            moved = f"{p['flips_removed']} / {p['flips_added']} ({_p(p['delta_nfr_mcnemar_p'])})"
        row += [delta, "–" if pct is None else f"{100 * pct:+.1f}%", moved]
        row += [_fmt(p.get("delta_accuracy"))]
        rows.append(row)
    return head, rows


def regression_rows(al: Aligned, epsilon: float, max_rows: int) -> tuple[int, list[dict]]:
    """The old → new regressions (worst D first for continuous scores), at most ``max_rows``."""
    from muscle.compare import quadrants

    q = quadrants(al, 1, epsilon)
    idx = np.flatnonzero(q == "regression")
    if al.kind == "continuous":
        d = al.values[1][idx] - al.values[0][idx]
        idx = idx[np.argsort(d, kind="stable")]
    rows = []
    for i in idx[:max_rows].tolist():
        row: dict[str, Any] = {"id": al.ids[i], "outputs": {}}
        for j, name in enumerate(al.names):
            preds = al.predictions[j]
            val = al.values[j][i]
            row["outputs"][name] = {
                "value": bool(val > 0.5) if al.kind == "discrete" else float(val),
                "prediction": None if preds is None else preds[i],
            }
        targets = next((t for t in al.targets if t is not None), None)
        row["target"] = None if targets is None else targets[i]
        rows.append(row)
    return int(idx.size), rows


def _quadrant_counts(al: Aligned, epsilon: float) -> list[dict[str, int]]:
    from muscle.compare import quadrants

    return [dict(Counter(quadrants(al, j, epsilon).tolist())) for j in range(1, len(al.names))]


def _outcome(v: Any) -> str:
    if isinstance(v, bool):
        return "✓" if v else "✗"
    return f"{v:.4f}"


def input_rows(compat: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the inputs table (name, file, format, outcome source, hash)."""
    head = [
        "model",
        "file",
        "format",
        "outcome",
        "accuracy" if compat["kind"] == "discrete" else "mean score",
        "sha256",
    ]
    key = "accuracy" if compat["kind"] == "discrete" else "mean_score"
    rows = [
        [
            m["name"],
            str(m.get("path", "")),
            str(m.get("format", "")),
            str(m.get("source", "")),
            _fmt(m.get(key)),
            str(m.get("sha256", ""))[:12],
        ]
        for m in compat["models"]
    ]
    return head, rows


def glossary(kind: str) -> list[str]:
    """One line per metric of the summary table, for readers of the reports."""
    flips = (
        "NF / PF: negative flips (old right, new wrong) / positive flips (old wrong, new right)."
        if kind == "discrete"
        else "NF / PF: negative flips (D < −ε, the new score lower) / positive flips (D > ε)."
    )
    disc = kind == "discrete"
    common = [
        "acc old / new: share of instances each model gets right."
        if disc
        else "score old / new: mean score S of each model.",
        flips,
        "NFR / PFR: NF / N and PF / N over all N instances.",
        "Δacc: acc new − acc old, with a paired 95 % interval."
        if disc
        else "mean D: mean of D = S_new − S_old, with a 95 % interval.",
        "McNemar p: exact two-sided test that flips in both directions are equally likely.",
        "ΔNFR, Δ%NFR (candidates): NFR_c − NFR and (NFR_c − NFR) / NFR, against old → new "
        "(negative: fewer flips).",
        "flips removed / added (candidates): negative flips of the new model that the candidate "
        "does not make / negative flips the candidate makes that the new model does not, with "
        "the exact McNemar p of these two counts.",
        "Δacc vs new (candidates): the candidate's accuracy minus the new model's."
        if disc
        else "Δscore vs new (candidates): the candidate's mean score minus the new model's.",
    ]
    if disc:
        return common + [
            "NFR_mc: share with the new model wrong and a prediction different from the old one.",
            "BTC: share of old-correct instances that stay correct; BEC: share of the new "
            "model's errors that the old model also made.",
            "rel. NFR: NFR / ((1 − err_old) · err_new), the observed NFR over the NFR expected "
            "if the two models erred independently (1: as by chance; below 1: fewer flips).",
            "Quadrants: both-correct, gain (positive flip), regression (negative flip), and "
            "instances both models get wrong — same-mistake / different-mistake where "
            "predictions are known, else both-wrong. ✓ / ✗: right / wrong.",
        ]
    return common + [
        "D = S_new − S_old per instance; a flip is |D| > ε, unchanged otherwise. m_g: mean D "
        "over gains; m_r: mean |D| over regressions.",
    ]


def render_markdown(compat: dict[str, Any], al: Aligned, epsilon: float, max_rows: int) -> str:
    head, rows = summary_rows(compat)
    first, note = _intro(compat, epsilon)
    lines = [f"# Compatibility report: {_md(' → '.join(al.names[:2]))}", "", first, note]
    if compat["join"].get("dropped"):
        lines.append(
            f"Partial comparison on the {compat['join']['n_common']} common ids "
            f"(records dropped per input: {_md(_dropped(compat['join']))})."
        )
    lines += ["", "## Summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    lines += [""] + [f"- {g}" for g in glossary(compat["kind"])]
    ih, irows = input_rows(compat)
    lines += ["", "## Inputs", "", "| " + " | ".join(ih) + " |", "|" + "---|" * len(ih)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in irows]
    counts = _quadrant_counts(al, epsilon)
    qn = _quadrant_names(compat, counts)
    lines += [
        "",
        "## Quadrants",
        "",
        "| pair | " + " | ".join(qn) + " |",
        "|---|" + "---|" * len(qn),
    ]
    for p, c in zip(compat["pairs"], counts, strict=True):
        lines.append(f"| {_md(_pair(p))} | " + " | ".join(str(c.get(q, 0)) for q in qn) + " |")
    for field, srows in compat.get("slices", {}).items():
        lines += [
            "",
            f"## NFR by {_md(field)}",
            "",
            "| value | n | " + " | ".join(f"NFR {_md(p['new'])}" for p in srows[0]["pairs"]) + " |",
            "|---|---|" + "---|" * len(srows[0]["pairs"]),
        ]
        for r in srows:
            lines.append(
                f"| {_md(r['value'])} | {r['n']} | "
                + " | ".join(f"{_fmt(p['nfr'])} {_ci(p['nfr_ci95'])}" for p in r["pairs"])
                + " |"
            )
    total, regs = regression_rows(al, epsilon, max_rows)
    lines += [
        "",
        f"## Regressions {_md(al.names[0])} → {_md(al.names[1])}",
        "",
        f"{total} regressions"
        + (f"; the first {len(regs)} shown" if total > len(regs) else "")
        + ". All instances are in `flips.jsonl`.",
        "",
    ]
    if regs:
        has_target = any(r["target"] is not None for r in regs)
        cols = ["id", *(_md(n) for n in al.names)] + (["target"] if has_target else [])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in regs:
            cells = [_md(r["id"])]
            for n in al.names:
                v = r["outputs"][n]
                pred = "" if v["prediction"] is None else f" {_md(_short(v['prediction']))}"
                cells.append(_outcome(v["value"]) + pred)
            if has_target:
                cells.append(_md(_short(r["target"])))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: Any) -> str:
    """A table cell's text: no column breaks, no raw HTML, one line."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _quadrant_names(compat: dict[str, Any], counts: list[dict[str, int]]) -> tuple[str, ...]:
    """The quadrant columns: both-wrong instances split by mistake where a pair has predictions
    (pairs may differ: a candidate without predictions keeps ``both-wrong``)."""
    if compat["kind"] == "continuous":
        return plots.CONTINUOUS_QUADRANTS
    wrong = [q for q in plots.DISCRETE_QUADRANTS[3:] if any(c.get(q) for c in counts)]
    if not wrong:  # no instance wrong for both: name the columns after pair 0
        has_preds = compat["pairs"][0]["nfr_mc"] is not None
        wrong = ["same-mistake", "different-mistake"] if has_preds else ["both-wrong"]
    return ("both-correct", "gain", "regression", *wrong)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
img{max-width:100%} .note{color:#555;font-size:0.9em} code{background:#f6f6f6}
"""


def render_html(compat: dict[str, Any], al: Aligned, epsilon: float, max_rows: int) -> str:
    esc = html.escape
    head, rows = summary_rows(compat)
    title = f"Compatibility report: {' → '.join(al.names[:2])}"
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"
    ]
    first, note = _intro(compat, epsilon)
    parts.append(f"<p>{esc(first)} <span class='note'>{esc(note)}</span></p>")
    if compat["join"].get("dropped"):
        parts.append(
            f"<p class='note'>Partial comparison on the {compat['join']['n_common']} "
            f"common ids; records dropped per input: {esc(_dropped(compat['join']))}</p>"
        )
    parts.append("<h2>Summary</h2>" + _table(head, rows))
    parts.append(
        "<ul class='note'>"
        + "".join(f"<li>{esc(g)}</li>" for g in glossary(compat["kind"]))
        + "</ul>"
    )
    parts.append("<h2>Inputs</h2>" + _table(*input_rows(compat)))
    counts = _quadrant_counts(al, epsilon)
    parts.append("<h2>Quadrants</h2>")
    parts.append(
        _img(
            plots.quadrant_chart(compat["pairs"], counts, compat["kind"]),
            "quadrant shares per pair",
        )
    )
    qn = _quadrant_names(compat, counts)
    parts.append(
        _table(
            ["pair", *qn],
            [
                [_pair(p), *[str(c.get(q, 0)) for q in qn]]
                for p, c in zip(compat["pairs"], counts, strict=True)
            ],
        )
    )
    if compat["kind"] == "continuous":
        deltas = [al.values[j] - al.values[0] for j in range(1, len(al.names))]
        labels = [f"{al.names[0]} → {al.names[j]}" for j in range(1, len(al.names))]
        parts.append("<h2>Distribution of D</h2>")
        parts.append(_img(plots.delta_histogram(deltas, labels, epsilon), "histogram of D"))
    for field, srows in compat.get("slices", {}).items():
        parts.append(f"<h2>NFR by {esc(field)}</h2>")
        parts.append(_img(plots.slice_nfr_chart(field, srows), f"NFR by {field}"))
        sh = ["value", "n"] + [f"NFR {p['new']} [95% CI]" for p in srows[0]["pairs"]]
        parts.append(
            _table(
                sh,
                [
                    [
                        str(r["value"]),
                        str(r["n"]),
                        *[f"{_fmt(p['nfr'])} {_ci(p['nfr_ci95'])}" for p in r["pairs"]],
                    ]
                    for r in srows
                ],
            )
        )
    total, regs = regression_rows(al, epsilon, max_rows)
    parts.append(f"<h2>Regressions {esc(al.names[0])} → {esc(al.names[1])}</h2>")
    parts.append(
        f"<p>{total} regressions"
        + (f"; the first {len(regs)} shown" if total > len(regs) else "")
        + ". All instances are in <code>flips.jsonl</code>.</p>"
    )
    if regs:
        has_target = any(r["target"] is not None for r in regs)
        cols = ["id", *al.names] + (["target"] if has_target else [])
        body = []
        for r in regs:
            cells = [esc(str(r["id"]))]
            for n in al.names:
                v = r["outputs"][n]
                pred = "" if v["prediction"] is None else f" {esc(_short(v['prediction']))}"
                cells.append(esc(_outcome(v["value"])) + pred)
            if has_target:
                cells.append(esc(_short(r["target"])))
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append(
            "<table><tr>"
            + "".join(f"<th>{esc(c)}</th>" for c in cols)
            + "</tr>"
            + "".join(body)
            + "</table>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _img(b64: str, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


def write_reports(
    out_dir: str | os.PathLike[str],
    compat: dict[str, Any],
    al: Aligned,
    *,
    epsilon: float = 0.0,
    max_rows: int = 50,
) -> None:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    with atomic_open(out / "report.md") as fh:
        fh.write(render_markdown(compat, al, epsilon, max_rows))
    with atomic_open(out / "report.html") as fh:
        fh.write(render_html(compat, al, epsilon, max_rows))
