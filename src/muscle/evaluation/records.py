"""Per-instance records (one JSON line per doc), partial files for resume, and the summary."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from muscle.evaluation import stats
from muscle.io import sha256_text
from muscle.tasks._data import canonical_json
from muscle.tasks.base import Doc, Task


def base_record(task: Task, doc: Doc, prompt: str) -> dict[str, Any]:
    """The fields every record carries."""
    doc_id = task.doc_id(doc)
    public = {k: v for k, v in doc.items() if not k.startswith("_")}  # the record as read
    rec: dict[str, Any] = {
        "id": doc_id,
        "doc_id": doc_id,
        "task": task.name,
        "task_version": task.version,
        "doc_hash": sha256_text(canonical_json(public)),
        "prompt_hash": sha256_text(prompt),
        "target": task.target(doc),
    }
    category = doc.get("_category")
    if category is not None:
        rec["category"] = category
    return rec


def mc_fields(
    loglikelihoods: list[float], choices: list[str], gold: int, metric: str = "acc"
) -> dict[str, Any]:
    """Multiple-choice scoring as lm-eval: ``acc`` = argmax of the log-likelihoods,
    ``acc_norm`` = argmax of log-likelihood / number of characters of the choice.
    ``prediction`` and ``correct`` follow the task's ``metric`` (what ``muscle compare`` reads)."""
    pred = max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))
    normed = [ll / max(1, len(c)) for ll, c in zip(loglikelihoods, choices, strict=True)]
    pred_norm = max(range(len(normed)), key=lambda i: (normed[i], -i))
    primary = pred_norm if metric == "acc_norm" else pred
    return {
        "prediction": primary,
        "prediction_norm": pred_norm,
        "correct": primary == gold,
        "acc": pred == gold,
        "acc_norm": pred_norm == gold,
        "loglikelihoods": loglikelihoods,
    }


def partial_paths(out: Path) -> list[Path]:
    """Every partial file of ``out``: ``OUT.partial`` and ``OUT.partial.rank<N>`` (single- and
    multi-process runs), matched by exact name (a glob would read ``[``, ``*``, ``?`` in the
    user's file name as wildcards)."""
    if not out.parent.is_dir():
        return []
    single = out.name + ".partial"
    ranked = re.compile(re.escape(single) + r"\.rank[0-9]+")
    return sorted(p for p in out.parent.iterdir() if p.name == single or ranked.fullmatch(p.name))


def partial_path(out: Path, rank: int, world: int) -> Path:
    return (
        out.with_name(out.name + ".partial")
        if world == 1
        else out.with_name(f"{out.name}.partial.rank{rank}")
    )


def read_partial(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Records already written, by id.  A line cut short by a kill is ignored."""
    done: dict[str, dict[str, Any]] = {}
    for p in paths:
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "id" in rec:
                    done[str(rec["id"])] = rec
    return done


def remove_partials(out: Path) -> None:
    for p in partial_paths(out):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def metrics(task: Task, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary metrics with 95 % intervals."""
    m: dict[str, Any] = {}
    if not records:
        return m
    if task.output_type == "multiple_choice":
        m["acc"] = stats.proportion([r["acc"] for r in records])
        m["acc_norm"] = stats.proportion([r["acc_norm"] for r in records])
        return m
    if task.score_kind == "continuous":
        m["score"] = stats.mean([r["score"] for r in records])
        for key in ("rouge1", "rouge2", "rougeL"):
            if key in records[0]:
                m[key] = stats.mean([r[key] for r in records])
        return m
    m["exact_match"] = stats.proportion([r["correct"] for r in records])
    for key in ("correct_strict", "correct_flexible"):
        if key in records[0]:
            m["exact_match_" + key.removeprefix("correct_")] = stats.proportion(
                [r[key] for r in records]
            )
    return m


def warnings(task: Task, records: list[dict[str, Any]]) -> list[str]:
    """What makes the figures mean less than they seem: prompts cut to fit the model, and a
    multiple-choice split whose gold answers are all one choice (a split whose labels are
    hidden, such as GLUE's test sets, ships placeholders)."""
    out = []
    cut = sum(1 for r in records if r.get("truncated"))
    if cut:
        out.append(
            f"{cut} of {len(records)} prompts were longer than the model takes and lost their "
            'start (records marked "truncated"); use fewer --num-fewshot or a longer model'
        )
    golds = {r["target"] for r in records} if task.output_type == "multiple_choice" else set()
    if len(records) >= 20 and len(golds) == 1:
        out.append(
            f"every gold answer is choice {golds.pop()}: are this split's labels hidden "
            "placeholders (as in GLUE's test sets)? Accuracy would then mean nothing"
        )
    return out


def primary_metric(task: Task) -> str:
    """The task's headline metric: ``acc`` or a spec task's ``acc_norm`` (multiple choice),
    ``exact_match`` or ``score`` (generation)."""
    if task.output_type == "multiple_choice":
        return "acc_norm" if task.metric == "acc_norm" else "acc"
    return "score" if task.score_kind == "continuous" else "exact_match"
