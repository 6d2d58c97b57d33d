"""``muscle compare``: read per-instance results of an old model, a new model and any number
of candidates, join them on instance id, and compute the compatibility report.

Input formats (detected from the first record, or forced with ``format=``):

* ``muscle`` — the project's own per-instance JSONL (what ``muscle eval`` writes): ``id``,
  ``doc_hash``, ``prompt_hash``, ``correct`` (or ``score``), ``prediction``, ``target``.
* ``lm-eval`` — lm-evaluation-harness ``samples_<task>_*.jsonl`` (``--log_samples``): joined on
  ``doc_id``; ``metric`` = ``"name"`` or ``"name,filter"`` (e.g. ``exact_match,strict-match``).
* ``generic`` — JSONL or CSV with an id and either ``correct`` (bool / 0 / 1), ``prediction`` +
  ``target`` (exact match after trimming; numbers compared as numbers) or ``score`` (float in
  [0, 1], continuous).  Field names can be remapped; dotted paths reach nested fields
  (``6b_finetuning.is_correct``) and the id ``@line`` means the record's 0-based position.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from muscle import __version__
from muscle.errors import GateFailed, MuscleError
from muscle.io import SCHEMA_VERSION, atomic_open, make_dir, not_utf8, sha256_file, write_json
from muscle.metrics import (
    ContinuousCounts,
    DiscreteCounts,
    continuous_metrics,
    discrete_metrics,
    mcnemar_exact_p,
    newcombe_paired_interval,
)
from muscle.metrics.counts import PRED_DIFFERENT, PRED_SAME, PRED_UNKNOWN, continuous_flips

FORMATS = ("auto", "muscle", "lm-eval", "generic")
_LM_EVAL_DISCRETE = ("acc", "exact_match", "acc_norm")  # per-sample 0/1 metrics of lm-eval
FIELD_OPTIONS = ("id_field", "correct_field", "prediction_field", "target_field", "score_field")
LINE_ID = "@line"
MAX_SLICE_VALUES = 1000
OUTPUTS = ("compat.json", "flips.jsonl", "report.md", "report.html")  # what --out receives
CI_METHODS = {
    "discrete": {
        "nfr": "wilson",
        "pfr": "wilson",
        "accuracy_delta": "newcombe-paired (hybrid score, method 10)",
        "mcnemar": "exact two-sided binomial on discordant pairs",
        "delta_nfr": "newcombe-paired on the two models' negative flips (candidates vs new)",
    },
    "continuous": {
        "nfr": "wilson",
        "pfr": "wilson",
        "accuracy_delta": "normal approximation of mean D",
        "mcnemar": "exact two-sided binomial (sign test) on gains vs regressions",
        "delta_nfr": "newcombe-paired on the two models' regressions (candidates vs new)",
    },
}
_MISSING = object()


# --- reading ------------------------------------------------------------------------------


@dataclass
class Loaded:
    """One input file, parsed into columns (row i = the file's i-th record)."""

    path: str
    name: str
    format: str
    source: str  # which field / metric gave the outcome
    ids: list[str]
    values: np.ndarray  # float64: 0/1 for discrete outcomes, the score for continuous
    binary: bool  # every value is 0 or 1 (always so for a correctness field)
    # "discrete" for a correctness field (or lm-eval's acc, acc_norm, exact_match), "continuous"
    # for a score field, None when the values decide (--metric on any other field)
    declared: str | None = None
    predictions: list[Any] | None = None
    targets: list[Any] | None = None
    slices: dict[str, list[Any]] = field(default_factory=dict)
    doc_hash: list[Any] | None = None
    prompt_hash: list[Any] | None = None


def _getter(path: str) -> Callable[[dict[str, Any], int], Any]:
    """A function ``(record, index) -> value | _MISSING`` for a field path.

    A key that exists as written wins; otherwise dots walk into nested objects (and list
    indices).  ``@line`` returns the record's 0-based index.
    """
    if path == LINE_ID:
        return lambda rec, i: i
    if "." not in path:
        return lambda rec, i: rec.get(path, _MISSING)
    parts = path.split(".")

    def get(rec: dict[str, Any], i: int) -> Any:
        if path in rec:
            return rec[path]
        cur: Any = rec
        for part in parts:
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return _MISSING
        return cur

    return get


def _records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a JSONL file, or of a CSV/TSV file (by suffix)."""
    p = Path(path)
    if not p.is_file():
        what = "a folder; give the results file in it" if p.is_dir() else "file not found"
        raise MuscleError(f"{path}: {what}")
    try:
        yield from _records_of(p)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def _records_of(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    path = str(p)
    if p.suffix.lower() in (".csv", ".tsv"):
        with p.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
            for row in reader:
                if None in row:
                    raise MuscleError(f"{path}:{reader.line_num}: more cells than header columns")
                yield reader.line_num, row
    else:
        yield from _read_jsonl_fast(p)


def _read_jsonl_fast(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Like :func:`muscle.io.read_jsonl`: ``(line number, object)``, same errors."""
    for linenos, objs in _jsonl_blocks(path):
        yield from zip(linenos, objs, strict=True)


Block = tuple[list[int], list[dict[str, Any]]]  # line numbers, records


def _jsonl_blocks(path: Path, size: int = 20_000) -> Iterator[Block]:
    """Blocks of records with their line numbers; each block of ``size`` lines is parsed with
    one ``json.loads`` call on a JSON array (several times faster than line by line).
    Malformed lines raise :class:`MuscleError` naming file and line, as ``read_jsonl``."""
    loads = json.loads
    start = 1
    with path.open(encoding="utf-8") as fh:
        while lines := list(itertools.islice(fh, size)):
            linenos = list(range(start, start + len(lines)))
            start += len(lines)
            if any(not line.strip() for line in lines):
                keep = [k for k, line in enumerate(lines) if line.strip()]
                linenos = [linenos[k] for k in keep]
                lines = [lines[k] for k in keep]
            try:
                objs = loads("[" + ",".join(lines) + "]")
                ok = len(objs) == len(lines)
            except json.JSONDecodeError:
                ok = False
            if not ok:  # parse line by line to name the bad one
                objs = []
                for lineno, line in zip(linenos, lines, strict=True):
                    try:
                        objs.append(loads(line))
                    except json.JSONDecodeError as exc:
                        raise MuscleError(
                            f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or remove that line"
                        ) from None
            if not all(type(o) is dict for o in objs):
                k = next(k for k, o in enumerate(objs) if type(o) is not dict)
                raise MuscleError(
                    f"{path}:{linenos[k]}: expected a JSON object, got {type(objs[k]).__name__}"
                )
            yield linenos, objs


_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "0.0"}


def _to_bool(value: Any, where: str, fname: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise MuscleError(
        f"{where}: field '{fname}' must be true/false, 0/1 or yes/no, got {value!r}; "
        "pick another field with --correct-field"
    )


def _to_score(value: Any, where: str, fname: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise MuscleError(f"{where}: field '{fname}' must be a finite number, got {value!r}")
    return score


# A number: optional sign and $, digits with commas only as thousands separators (so "1,5" stays
# text), or a leading-dot decimal; an optional fraction and exponent.
_NUM = re.compile(
    r"^[-+]?\$?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?:[eE][-+]?[0-9]+)?\$?$"
)


def _normalise_answer(value: Any) -> Any:
    """Trimmed text; numbers (``1,000``, ``$18``, ``18$``, ``18.0``, ``.5``, ``1e3``) as floats:
    18 == 18.0, .1 == 0.10, 1e3 == 1000."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if _NUM.match(text):
        return float(text.replace(",", "").replace("$", ""))
    return text


def _hashable(value: Any) -> Any:
    """Predictions are compared for equality (NFR_mc): make lists/dicts comparable strings."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _first_record(path: str) -> tuple[int, dict[str, Any]]:
    """The first record of a file (and its line number); an empty file is an error."""
    it = _records(path)
    try:
        first = next(it, None)
    finally:
        it.close()
    if first is None:
        raise MuscleError(f"{path}: no records (empty file)")
    return first


def _detect_format(path: str) -> str:
    if Path(path).suffix.lower() in (".csv", ".tsv"):
        _first_record(path)
        return "generic"
    rec = _first_record(path)[1]
    if "doc_id" in rec and ("filtered_resps" in rec or "resps" in rec):
        return "lm-eval"
    if "id" in rec and "doc_hash" in rec and "prompt_hash" in rec:
        return "muscle"
    return "generic"


def _load_generic(
    path: str, name: str, fmt: str, fields: dict[str, str | None], slice_by: list[str]
) -> Loaded:
    """Read the ``muscle`` or ``generic`` format with the given field names."""
    id_f = fields.get("id_field") or "id"
    correct_f, score_f = fields.get("correct_field"), fields.get("score_field")
    pred_f, target_f = fields.get("prediction_field"), fields.get("target_field")
    if correct_f and score_f:
        raise MuscleError("give either --correct-field or --score-field, not both")
    first = _first_record(path)
    rec0 = first[1]
    present = {k: _getter(v)(rec0, 0) is not _MISSING for k, v in _default_names(fields).items()}
    if not correct_f and not score_f:
        if present["correct_field"]:
            correct_f = "correct"
        elif present["score_field"]:
            score_f = "score"
        elif present["prediction_field"] and present["target_field"]:
            pass  # correctness by matching prediction and target
        else:
            keys = ", ".join(sorted(rec0)[:12])
            raise MuscleError(
                f"{path}:{first[0]}: no outcome field: expected 'correct', 'score', or "
                f"'prediction' + 'target' (keys: {keys}); map yours with --correct-field, "
                "--score-field or --prediction-field/--target-field"
            )
    for key in ("prediction_field", "target_field"):
        if fields.get(key) and not present[key]:
            raise MuscleError(
                f"{path}:{first[0]}: no field '{fields[key]}' "
                f"(keys: {', '.join(sorted(rec0)[:12])}); fix --{key.replace('_', '-')}"
            )
    if not pred_f and score_f == "acc_norm" and "prediction_norm" in rec0:
        pred_f = "prediction_norm"  # our records: the choice acc_norm scored (for NFR_mc)
    pred_f = pred_f or ("prediction" if present["prediction_field"] else None)
    target_f = target_f or ("target" if present["target_field"] else None)
    if not correct_f and not score_f and not (pred_f and target_f):
        raise MuscleError(f"{path}: need both a prediction and a target field to score matches")
    hashes = fmt == "muscle"
    outcome_name = correct_f or score_f
    ids: list[str] = []
    values: list[float] = []
    preds: list[Any] = []
    targets: list[Any] = []
    slices: dict[str, list[Any]] = {s: [] for s in slice_by}
    doc_hash: list[Any] = []
    prompt_hash: list[Any] = []
    offset = 0
    for linenos, recs in _record_blocks(path):

        def where(col: list[Any], bad: Callable[[Any], bool], _ln: list = linenos) -> str:
            k = next(k for k, v in enumerate(col) if bad(v))
            return f"{path}:{_ln[k]}"

        col = _column(recs, id_f, offset)
        if _MISSING in col or None in col or "" in col:
            raise MuscleError(
                f"{where(col, lambda v: v is _MISSING or v is None or v == '')}: no id field "
                f"'{id_f}'; set --id-field (or --id-field {LINE_ID} to use the record's position)"
            )
        ids.extend(v if type(v) is str else str(v) for v in col)
        pcol = _column(recs, pred_f, offset) if pred_f else None
        tcol = _column(recs, target_f, offset) if target_f else None
        if outcome_name:
            col = _column(recs, outcome_name, offset)
            if _MISSING in col:
                loc = where(col, lambda v: v is _MISSING)
                raise MuscleError(f"{loc}: missing field '{outcome_name}'")
            start = len(values)
            conv = _BOOL_VALUES if correct_f else None
            try:
                values.extend(
                    (1.0 if v else 0.0)
                    if v is True or v is False
                    else conv[v]
                    if conv
                    else float(v)
                    for v in col
                )
                ok = conv is not None or all(math.isfinite(x) for x in values[start:])
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:  # slow path: convert one by one, naming the bad line
                del values[start:]
                to = _to_bool if correct_f else _to_score
                for lineno, v in zip(linenos, col, strict=True):
                    values.append(float(to(v, f"{path}:{lineno}", outcome_name)))
        else:
            assert pcol is not None and tcol is not None
            for c, f in ((pcol, pred_f), (tcol, target_f)):
                if _MISSING in c:
                    raise MuscleError(f"{where(c, lambda v: v is _MISSING)}: missing field '{f}'")
            norm = _normalise_answer
            values.extend(float(norm(a) == norm(b)) for a, b in zip(pcol, tcol, strict=True))
        if pcol is not None:
            preds.extend(
                v if type(v) is str else None if v is _MISSING else _hashable(v) for v in pcol
            )
        if tcol is not None:
            targets.extend(None if v is _MISSING else v for v in tcol)
        for sf in slice_by:
            slices[sf].extend(
                None if v is _MISSING else _hashable(v) for v in _column(recs, sf, offset)
            )
        if hashes:
            doc_hash.extend(rec.get("doc_hash") for rec in recs)
            prompt_hash.extend(rec.get("prompt_hash") for rec in recs)
        offset += len(recs)
    arr = np.asarray(values, dtype=np.float64)
    if score_f and ((arr < 0) | (arr > 1)).any():
        bad = int(np.argmax((arr < 0) | (arr > 1)))
        raise MuscleError(
            f"{path}: score '{score_f}' of id {ids[bad]} is {arr[bad]}, outside [0, 1]"
        )
    return Loaded(
        path=path,
        name=name,
        format=fmt,
        source=outcome_name or f"{pred_f} == {target_f}",
        ids=ids,
        values=arr,
        binary=not score_f,
        declared="continuous" if score_f else "discrete",
        predictions=preds if pred_f else None,
        targets=targets if target_f else None,
        slices=slices,
        doc_hash=doc_hash if hashes else None,
        prompt_hash=prompt_hash if hashes else None,
    )


_BOOL_VALUES: dict[Any, float] = {
    **{k: 1.0 for k in ("true", "True", "TRUE", "1", "yes", "1.0", 1, 1.0)},
    **{k: 0.0 for k in ("false", "False", "FALSE", "0", "no", "0.0", 0, 0.0)},
}


def _column(recs: list[dict[str, Any]], path: str, offset: int) -> list[Any]:
    """The values of one field path over a block of records (``_MISSING`` where absent)."""
    if path == LINE_ID:
        return list(range(offset, offset + len(recs)))
    if "." not in path:
        return [rec.get(path, _MISSING) for rec in recs]
    get = _getter(path)
    return [get(rec, offset + i) for i, rec in enumerate(recs)]


def _record_blocks(path: str, size: int = 20_000) -> Iterator[Block]:
    """Blocks of records (with line numbers) so that fields are read column by column."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() not in (".csv", ".tsv"):
        yield from _jsonl_blocks(p, size)
        return
    it = _records(path)
    while block := list(itertools.islice(it, size)):
        yield [lineno for lineno, _ in block], [rec for _, rec in block]


def _default_names(fields: dict[str, str | None]) -> dict[str, str]:
    defaults = {
        "correct_field": "correct",
        "score_field": "score",
        "prediction_field": "prediction",
        "target_field": "target",
    }
    return {k: fields.get(k) or v for k, v in defaults.items()}


def _choice_lengths(arguments: Any) -> list[float] | None:
    """Characters of each choice in an lm-eval samples line's ``arguments`` (one
    ``gen_args_k: {arg_0: context, arg_1: continuation}`` per choice), the continuation less
    lm-eval's default target delimiter (one space), as acc_norm divides by; None if absent."""
    if not isinstance(arguments, dict) or not arguments:
        return None
    conts = [a.get("arg_1") if isinstance(a, dict) else None for a in arguments.values()]
    if not all(isinstance(c, str) for c in conts):
        return None
    return [float(max(1, len(c.removeprefix(" ")))) for c in conts]


def _lm_eval_prediction(filtered: Any, lengths: list[float] | None = None) -> Any:
    """The model's answer from ``filtered_resps``: the text for generation tasks, the argmax
    choice index for log-likelihood tasks (entries ``[loglik, is_greedy]``, maybe as strings);
    with ``lengths``, the argmax of log-likelihood per character (lm-eval's acc_norm)."""
    if isinstance(filtered, list) and filtered:
        if all(isinstance(x, (list, tuple)) and len(x) == 2 for x in filtered):
            try:
                lls = np.array([float(x[0]) for x in filtered])
            except (TypeError, ValueError):
                return _hashable(filtered)
            if lengths is not None and len(lengths) == len(lls):
                lls = lls / np.asarray(lengths)
            return int(np.argmax(lls))
        if len(filtered) == 1:
            return _hashable(filtered[0])
    return _hashable(filtered)


def _load_lm_eval(path: str, name: str, metric: str | None, slice_by: list[str]) -> Loaded:
    """Read an lm-evaluation-harness samples file (one line per doc and filter)."""
    metric_name, _, want_filter = (metric or "").partition(",")
    rows: list[tuple[int, dict[str, Any]]] = []
    filters: Counter[str] = Counter()
    for lineno, rec in _records(path):
        if "doc_id" not in rec:
            raise MuscleError(f"{path}:{lineno}: no 'doc_id': not an lm-eval samples line")
        filters[str(rec.get("filter", "none"))] += 1
        rows.append((lineno, rec))
    if not rows:
        raise MuscleError(f"{path}: no records (empty file)")
    if not want_filter:
        if len(filters) > 1:
            first = rows[0][1]  # name the metric the samples list, as the default would
            listed = first.get("metrics") or [k for k in _LM_EVAL_DISCRETE if k in first]
            metric = metric_name or (str(listed[0]) if listed else "<metric>")
            opts = ", ".join(f"{metric},{f}" for f in filters)
            raise MuscleError(
                f"{path}: several filters ({', '.join(filters)}); choose one with --metric ({opts})"
            )
        want_filter = next(iter(filters))
    elif want_filter not in filters:
        raise MuscleError(
            f"{path}: no samples with filter '{want_filter}' (found: {', '.join(filters)})"
        )
    rows = [r for r in rows if str(r[1].get("filter", "none")) == want_filter]
    first = rows[0][1]
    if not metric_name:
        listed = first.get("metrics") or [k for k in _LM_EVAL_DISCRETE if k in first]
        if not listed:
            raise MuscleError(f"{path}: cannot tell the metric; pass --metric (e.g. acc)")
        metric_name = str(listed[0])
    get_slices = [(s, _getter(s)) for s in slice_by]
    ids, values, preds, targets = [], [], [], []
    doc_hash, prompt_hash = [], []
    slices: dict[str, list[Any]] = {s: [] for s in slice_by}
    binary = True
    for i, (lineno, rec) in enumerate(rows):
        if metric_name not in rec:
            avail = ", ".join(str(m) for m in rec.get("metrics", [])) or "none listed"
            raise MuscleError(
                f"{path}:{lineno}: no metric '{metric_name}' (this sample has: {avail}); "
                "choose one with --metric"
            )
        v = rec[metric_name]
        score = _to_score(v, f"{path}:{lineno}", metric_name)
        binary = binary and score in (0.0, 1.0)
        ids.append(str(rec["doc_id"]))
        values.append(score)
        lengths = _choice_lengths(rec.get("arguments")) if metric_name == "acc_norm" else None
        preds.append(_lm_eval_prediction(rec.get("filtered_resps", rec.get("resps")), lengths))
        targets.append(rec.get("target"))
        doc_hash.append(rec.get("doc_hash"))
        prompt_hash.append(rec.get("prompt_hash"))
        for s, g in get_slices:
            sv = g(rec, i)
            slices[s].append(None if sv is _MISSING else _hashable(sv))
    arr = np.asarray(values, dtype=np.float64)
    if not binary and ((arr < 0) | (arr > 1)).any():
        raise MuscleError(f"{path}: metric '{metric_name}' has values outside [0, 1]")
    declared = "discrete" if metric_name in _LM_EVAL_DISCRETE else None
    if declared and not binary:
        bad = int(np.argmax(~np.isin(arr, (0.0, 1.0))))
        raise MuscleError(
            f"{path}: metric '{metric_name}' is 0 or 1 per sample, but doc_id {ids[bad]} has "
            f"{arr[bad]}"
        )
    return Loaded(
        path=path,
        name=name,
        format="lm-eval",
        source=f"{metric_name},{want_filter}",
        ids=ids,
        values=arr,
        binary=binary,
        declared=declared,
        predictions=preds,
        targets=targets,
        slices=slices,
        doc_hash=doc_hash,
        prompt_hash=prompt_hash,
    )


def load_file(
    path: str,
    name: str,
    *,
    format: str = "auto",
    metric: str | None = None,
    slice_by: list[str] | None = None,
    **fields: str | None,
) -> Loaded:
    """Parse one input file into columns; ``fields`` are the ``*_field`` name overrides."""
    if format not in FORMATS:
        raise MuscleError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    fmt = _detect_format(path) if format == "auto" else format
    if fmt == "lm-eval":
        given = [k for k, v in fields.items() if v]
        if given:
            opts = ", ".join("--" + k.replace("_", "-") for k in given)
            raise MuscleError(
                f"{path}: {opts} do not apply to lm-eval samples (joined on doc_id); "
                "pick the metric and filter with --metric name[,filter]"
            )
        return _load_lm_eval(path, name, metric, slice_by or [])
    if metric and any(fields.get(k) for k in ("correct_field", "score_field")):
        raise MuscleError("give --metric or --correct-field/--score-field, not both")
    if metric:
        # --metric on a per-instance record names the outcome field: discrete when every
        # value is a boolean or 0/1 (acc_norm), continuous otherwise (rouge1).
        loaded = _load_generic(path, name, fmt, {**fields, "score_field": metric}, slice_by or [])
        loaded.binary = bool(np.isin(loaded.values, (0.0, 1.0)).all())
        loaded.declared = None
        return loaded
    return _load_generic(path, name, fmt, fields, slice_by or [])


# --- joining ------------------------------------------------------------------------------


def _first_few(items: list[str], k: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (", ..." if len(items) > k else "")


def _check_unique(f: Loaded) -> dict[str, int]:
    index = {rid: i for i, rid in enumerate(f.ids)}
    if len(index) != len(f.ids):
        dups = [rid for rid, c in Counter(f.ids).items() if c > 1]
        raise MuscleError(
            f"{f.path}: {len(dups)} duplicate ids (first: {_first_few(dups)}); "
            "each instance must appear once (lm-eval: pick one filter with --metric)"
        )
    return index


def _align(files: list[Loaded], allow_partial: bool) -> tuple[list[str], list[np.ndarray], dict]:
    """Common ids (in the old file's order) and, per file, the row of each common id."""
    indexes = [_check_unique(f) for f in files]
    ref = files[0]
    if all(f.ids == ref.ids for f in files[1:]):
        rows = np.arange(len(ref.ids))
        return ref.ids, [rows for _ in files], {"n_common": len(ref.ids), "dropped": {}}
    problems = []
    for f, idx in zip(files[1:], indexes[1:], strict=True):
        missing = [rid for rid in ref.ids if rid not in idx]
        extra = [rid for rid in f.ids if rid not in indexes[0]]
        if missing or extra:
            problems.append(
                f"{f.path} lacks {len(missing)} ids of {ref.path}"
                + (f" (first: {_first_few(missing)})" if missing else "")
                + f" and has {len(extra)} ids not in it"
                + (f" (first: {_first_few(extra)})" if extra else "")
            )
    if problems and not allow_partial:
        raise MuscleError(
            "; ".join(problems) + ". Compare results on the same instances, or pass "
            "--allow-partial to compare the intersection"
        )
    common = [rid for rid in ref.ids if all(rid in idx for idx in indexes[1:])]
    if not common:
        raise MuscleError("the inputs share no ids: check --id-field")
    rows = [
        np.fromiter((idx[rid] for rid in common), dtype=np.int64, count=len(common))
        for idx in indexes
    ]
    dropped = {f.name: len(f.ids) - len(common) for f in files}
    return common, rows, {"n_common": len(common), "dropped": dropped}


def _check_hashes(files: list[Loaded], rows: list[np.ndarray], ids: list[str]) -> None:
    """Refuse to compare results whose docs or prompts differ for the same id.  Doc hashes are
    compared within one format only: lm-eval hashes its dataset row, we our normalised doc."""
    ref, ref_rows = files[0], rows[0]
    for f, r in zip(files[1:], rows[1:], strict=True):
        for attr in ("doc_hash", "prompt_hash"):
            if attr == "doc_hash" and f.format != ref.format:
                continue
            a, b = getattr(ref, attr), getattr(f, attr)
            if a is None or b is None:
                continue
            av, bv = _objects(a)[ref_rows], _objects(b)[r]
            differ = (av != bv) & np.not_equal(av, None) & np.not_equal(bv, None)
            bad = [ids[k] for k in np.flatnonzero(differ).tolist()]
            if bad:
                raise MuscleError(
                    f"{f.path}: {len(bad)} of {len(ids)} instances have a different {attr} "
                    f"than in {ref.path} (first ids: {_first_few(bad)}): the runs used different "
                    "documents or prompts (task version, few-shot, template); re-run them alike"
                )


def _objects(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


# --- comparing ----------------------------------------------------------------------------


@dataclass
class Aligned:
    """All inputs aligned on the common ids."""

    names: list[str]
    ids: list[str]
    kind: str
    values: list[np.ndarray]
    predictions: list[np.ndarray | None]
    targets: list[list[Any] | None]
    slices: dict[str, np.ndarray]
    # the predictions as correctness compares them (18 = 18.0 = $18), for NFR_mc: made once
    answers: list[np.ndarray | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.answers:
            self.answers = [None if p is None else _answers(p) for p in self.predictions]


def _answers(predictions: np.ndarray) -> np.ndarray:
    """:func:`_normalise_answer` of each prediction, each distinct value normalised once."""
    memo: dict[Any, Any] = {}
    out = np.empty(len(predictions), dtype=object)
    for i, v in enumerate(predictions.tolist()):
        try:
            out[i] = memo[v]
        except KeyError:
            out[i] = memo[v] = _normalise_answer(v)
        except TypeError:  # unhashable
            out[i] = _normalise_answer(v)
    return out


def _same_prediction(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Per instance, ``PRED_SAME`` / ``PRED_DIFFERENT`` for two columns of
    :attr:`Aligned.answers`, ``PRED_UNKNOWN`` where either answer is missing."""
    if a is None or b is None:
        return None
    unknown = np.equal(a, None) | np.equal(b, None)
    same = np.asarray(a == b, dtype=bool)
    return np.where(unknown, PRED_UNKNOWN, np.where(same, PRED_SAME, PRED_DIFFERENT))


def _regressions(al: Aligned, j: int, epsilon: float) -> np.ndarray:
    """Boolean mask of the negative flips of old → input ``j``."""
    old, new = al.values[0], al.values[j]
    if al.kind == "continuous":
        return continuous_flips(new - old, epsilon)[1]
    return (old > 0.5) & ~(new > 0.5)


def quadrants(al: Aligned, j: int, epsilon: float = 0.0) -> np.ndarray:
    """Quadrant label of every instance for the pair old → input ``j``."""
    old, new = al.values[0], al.values[j]
    if al.kind == "continuous":
        out = np.full(old.shape, "unchanged", dtype=object)
        out[continuous_flips(new - old, epsilon)[0]] = "gain"
        out[_regressions(al, j, epsilon)] = "regression"
        return out
    o, n = old > 0.5, new > 0.5
    out = np.empty(o.shape, dtype=object)
    out[o & n] = "both-correct"
    out[~o & n] = "gain"
    out[_regressions(al, j, epsilon)] = "regression"
    same = _same_prediction(al.answers[0], al.answers[j])
    out[~o & ~n] = "both-wrong"  # where a prediction is unknown
    if same is not None:
        out[~o & ~n & (same == PRED_SAME)] = "same-mistake"
        out[~o & ~n & (same == PRED_DIFFERENT)] = "different-mistake"
    return out


def pair_counts(al: Aligned, j: int, epsilon: float = 0.0) -> DiscreteCounts | ContinuousCounts:
    """The mergeable table of counts for old → input ``j``."""
    old, new = al.values[0], al.values[j]
    if al.kind == "continuous":
        return ContinuousCounts.from_arrays(old, new, epsilon)
    same = _same_prediction(al.answers[0], al.answers[j])
    return DiscreteCounts.from_arrays(old > 0.5, new > 0.5, same)


def pair_counts_by(
    al: Aligned, j: int, epsilon: float, groups: np.ndarray, n_groups: int
) -> list[DiscreteCounts] | list[ContinuousCounts]:
    """One table of counts per group for old → input ``j``, in one pass over the data."""
    old, new = al.values[0], al.values[j]
    if al.kind == "continuous":
        return ContinuousCounts.grouped(old, new, epsilon, groups, n_groups)
    same = _same_prediction(al.answers[0], al.answers[j])
    return DiscreteCounts.grouped(old > 0.5, new > 0.5, same, groups, n_groups)


def _metrics(counts: DiscreteCounts | ContinuousCounts) -> dict[str, Any]:
    if isinstance(counts, ContinuousCounts):
        return continuous_metrics(counts)
    return discrete_metrics(counts)


def _pair_entry(al: Aligned, j: int, epsilon: float, base: dict[str, Any] | None) -> dict:
    entry: dict[str, Any] = {"old": al.names[0], "new": al.names[j]}
    entry.update(_metrics(pair_counts(al, j, epsilon)))
    if base is not None:  # a candidate: the paper's deltas against old → new
        nfr0, nfr_c = base["nfr"], entry["nfr"]
        entry["delta_nfr"] = nfr_c - nfr0
        entry["delta_nfr_pct"] = (nfr_c - nfr0) / nfr0 if nfr0 else None
        entry.update(_delta_nfr_stats(al, j, epsilon))
        key = "accuracy_new" if al.kind == "discrete" else "mean_score_new"
        entry["delta_accuracy"] = entry[key] - base[key]
    return entry


def _delta_nfr_stats(al: Aligned, j: int, epsilon: float) -> dict[str, Any]:
    """Is candidate ``j``'s NFR different from new's (input 1) on the same items?  The paired
    2×2 table of the two models' negative flips gives a 95 % interval for ΔNFR (Newcombe) and
    an exact McNemar p-value: flips only new makes (removed) against flips only the candidate
    makes (added)."""
    f0, fc = _regressions(al, 1, epsilon), _regressions(al, j, epsilon)
    both, only_new = int(np.sum(f0 & fc)), int(np.sum(f0 & ~fc))
    only_cand, neither = int(np.sum(~f0 & fc)), int(np.sum(~f0 & ~fc))
    ci = newcombe_paired_interval(both, only_new, only_cand, neither)
    return {
        "flips_removed": only_new,
        "flips_added": only_cand,
        "delta_nfr_ci95": None if ci is None else [ci[0], ci[1]],
        "delta_nfr_mcnemar_p": mcnemar_exact_p(only_new, only_cand),
    }


def _slice_entries(al: Aligned, epsilon: float) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    keep = (
        "n",
        "nf",
        "pf",
        "nfr",
        "pfr",
        "nfr_ci95",
        "accuracy_old",
        "accuracy_new",
        "mean_score_old",
        "mean_score_new",
        "mean_delta",
    )
    for s, col in al.slices.items():
        labels = np.array(["(missing)" if v is None else str(v) for v in col], dtype=object)
        uniq, codes = np.unique(labels, return_inverse=True) if labels.size else ([], labels)
        if len(uniq) > MAX_SLICE_VALUES:
            raise MuscleError(
                f"--slice-by {s}: {len(uniq)} distinct values; slice by a categorical field "
                "(bucket continuous values such as lengths first)"
            )
        per_pair = [
            pair_counts_by(al, j, epsilon, codes, len(uniq)) for j in range(1, len(al.names))
        ]
        rows = []
        for g, value in enumerate(uniq):
            pairs = []
            for j in range(1, len(al.names)):
                m = _metrics(per_pair[j - 1][g])
                pairs.append(
                    {"old": al.names[0], "new": al.names[j]} | {k: m[k] for k in keep if k in m}
                )
            rows.append({"value": str(value), "n": int(pairs[0]["n"]), "pairs": pairs})
        out[s] = rows
    return out


def _resolve_fields(field_map: dict[str, Any], n_files: int) -> list[dict[str, str | None]]:
    """Each ``*_field`` option is one name for all files or one name per file."""
    unknown = set(field_map) - set(FIELD_OPTIONS)
    if unknown:
        raise TypeError(f"unknown field options: {', '.join(sorted(unknown))}")
    per_file: list[dict[str, str | None]] = [{} for _ in range(n_files)]
    for key, value in field_map.items():
        if value is None or value == [] or value == ():
            continue
        vals = [value] if isinstance(value, str) else list(value)
        if len(vals) == 1:
            vals = vals * n_files
        if len(vals) != n_files:
            opt = "--" + key.replace("_", "-")
            raise MuscleError(
                f"{opt} given {len(vals)} times for {n_files} files: give it once (all files) "
                "or once per file, in order"
            )
        for d, v in zip(per_file, vals, strict=True):
            d[key] = v
    return per_file


def _default_names_for(paths: list[str]) -> list[str]:
    """File stems; when they collide, the parent folders (lm-eval writes one per model)."""
    stems = [Path(p).stem for p in paths]
    parents = [Path(p).resolve().parent.name for p in paths]
    if len(set(stems)) < len(stems) and len(set(parents)) == len(parents):
        return parents
    counts = Counter(stems)
    seen: Counter[str] = Counter()
    names = []
    for s in stems:
        seen[s] += 1
        names.append(s if counts[s] == 1 else f"{s}[{seen[s]}]")
    return names


def _slice_field(spec: str) -> tuple[str, bool]:
    """``FIELD`` or ``len(FIELD)`` (slice by length quartile of the field's text)."""
    m = re.fullmatch(r"len\((.+)\)", spec.strip())
    return (m.group(1).strip(), True) if m else (spec, False)


def _length_buckets(col: np.ndarray, n_buckets: int = 4) -> np.ndarray:
    """Label each value by its quantile bucket of text length: ``"1: [0, 41) chars"``."""
    lengths = np.array([-1 if v is None else len(str(v)) for v in col], dtype=np.int64)
    known = lengths[lengths >= 0]
    out = np.empty(len(col), dtype=object)
    out[:] = None
    if not known.size:
        return out
    distinct = np.unique(known)
    if len(distinct) <= n_buckets:  # few lengths: one slice each (quantiles would merge them)
        width = len(str(len(distinct)))
        for k, n_chars in enumerate(distinct):
            out[lengths == n_chars] = f"{k + 1:0{width}d}: {n_chars} chars"
        return out
    edges = np.unique(np.quantile(known, np.linspace(0, 1, n_buckets + 1)).round().astype(int))
    idx = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, max(0, len(edges) - 2))
    width = len(str(len(edges)))
    n_b = max(1, len(edges) - 1)
    for k in range(n_b):
        lo, hi = edges[k], edges[min(k + 1, len(edges) - 1)]
        close = "]" if k == n_b - 1 else ")"
        out[(idx == k) & (lengths >= 0)] = f"{k + 1:0{width}d}: [{lo}, {hi}{close} chars"
    return out


def load_aligned(
    paths: list[str],
    *,
    names: list[str] | None = None,
    format: str = "auto",
    metric: str | None = None,
    slice_by: list[str] | None = None,
    allow_partial: bool = False,
    **field_map: Any,
) -> tuple[Aligned, dict[str, Any]]:
    """Read, validate and join the inputs; returns the aligned columns and input metadata."""
    paths = [os.fspath(p) for p in paths]
    if len(paths) < 2:
        raise MuscleError("compare needs at least two files: OLD NEW [CANDIDATE ...]")
    names = list(names) if names else _default_names_for(paths)
    if len(names) != len(paths):
        raise MuscleError(f"{len(names)} names for {len(paths)} files: give one --name per file")
    if len(set(names)) != len(names):
        raise MuscleError(f"model names must be distinct, got {names}")
    fields = _resolve_fields(field_map, len(paths))
    slice_by = list(slice_by or [])
    slice_fields = list(dict.fromkeys(_slice_field(s)[0] for s in slice_by))
    files = [
        load_file(p, nm, format=format, metric=metric, slice_by=slice_fields, **fm)
        for p, nm, fm in zip(paths, names, fields, strict=True)
    ]
    discrete = [f for f in files if f.declared == "discrete"]
    scores = [f for f in files if not f.binary]
    if discrete and scores:
        raise MuscleError(
            f"{discrete[0].path} holds correctness (0/1) but {scores[0].path} holds scores: "
            "compare outcomes of one kind (choose them with --metric, --correct-field or "
            "--score-field)"
        )
    kind = "discrete" if all(f.binary for f in files) else "continuous"
    ids, rows, join = _align(files, allow_partial)
    _check_hashes(files, rows, ids)
    preds: list[np.ndarray | None] = []
    for f, r in zip(files, rows, strict=True):
        if f.predictions is None:
            preds.append(None)
            continue
        arr = np.empty(len(f.predictions), dtype=object)
        arr[:] = f.predictions
        preds.append(arr[r])
    slices: dict[str, np.ndarray] = {}
    for s in slice_by:
        fname, by_length = _slice_field(s)
        cols = [
            _objects(f.slices[fname])[r]
            for f, r in zip(files, rows, strict=True)
            if any(v is not None for v in f.slices[fname])
        ]
        if not cols:
            raise MuscleError(f"--slice-by {s}: no input has a field '{fname}'")
        col = cols[0].copy()  # each instance's value from the first file that has it
        for other in cols[1:]:
            gap = np.equal(col, None)
            col[gap] = other[gap]
        slices[s] = _length_buckets(col) if by_length else col
    aligned = Aligned(
        names=names,
        ids=ids,
        kind=kind,
        values=[f.values[r] for f, r in zip(files, rows, strict=True)],
        predictions=preds,
        targets=[
            None if f.targets is None else [f.targets[i] for i in r.tolist()]
            for f, r in zip(files, rows, strict=True)
        ],
        slices=slices,
    )
    inputs = [
        {
            "name": f.name,
            "path": f.path,
            "format": f.format,
            "source": f.source,
            "sha256": sha256_file(f.path),
        }
        for f in files
    ]
    join["allow_partial"] = allow_partial
    return aligned, {"inputs": inputs, "join": join}


def compare_aligned(al: Aligned, meta: dict[str, Any], *, epsilon: float = 0.0) -> dict[str, Any]:
    """The ``compat.json`` dict for aligned inputs."""
    if epsilon < 0:
        raise MuscleError(f"--epsilon must be >= 0, got {epsilon}")
    models = []
    for name, vals in zip(al.names, al.values, strict=True):
        key = "accuracy" if al.kind == "discrete" else "mean_score"
        models.append({"name": name, key: float(vals.mean()) if vals.size else None})
    base = _pair_entry(al, 1, epsilon, None)
    pairs = [base] + [_pair_entry(al, j, epsilon, base) for j in range(2, len(al.names))]
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "muscle_version": __version__,
        "n": len(al.ids),
        "kind": al.kind,
        "epsilon": epsilon if al.kind == "continuous" else None,
        "methods": CI_METHODS[al.kind],
        "models": models,
        "pairs": pairs,
    }
    for m, inp in zip(models, meta["inputs"], strict=True):
        m.update({k: inp[k] for k in ("path", "format", "source", "sha256")})
    out["join"] = meta["join"]
    if al.slices:
        out["slices"] = _slice_entries(al, epsilon)
    return out


def _json_column(values: list[Any]) -> list[str]:
    """JSON text of each value (fast path for strings, as ``ensure_ascii=False``)."""
    enc, dumps = json.encoder.encode_basestring, json.dumps  # type: ignore[attr-defined]
    return [enc(v) if type(v) is str else dumps(v, ensure_ascii=False) for v in values]


def _flip_columns(al: Aligned, epsilon: float) -> tuple[str, list[list[str]]]:
    """A %-template for a ``flips.jsonl`` line and its columns of JSON fragments.

    One JSON line per instance: id, quadrant (old → new) and every model's outcome
    (``old``, ``new``, ``candidate1`` ...; candidates also carry their quadrant against old).
    Built column-wise with one %-template per line: this is the hot path for big inputs."""
    key = "correct" if al.kind == "discrete" else "score"
    parts = ['{"id": %s, "quadrant": "%s"']
    cols: list[list[str]] = [_json_column(al.ids), quadrants(al, 1, epsilon).tolist()]
    for j, name in enumerate(al.names):
        role = "old" if j == 0 else "new" if j == 1 else f"candidate{j - 1}"
        name_json = json.dumps(name, ensure_ascii=False).replace("%", "%%")
        parts.append(f', "{role}": {{"name": {name_json}, "{key}": %s')
        if al.kind == "discrete":
            cols.append(["true" if x else "false" for x in (al.values[j] > 0.5).tolist()])
        else:
            cols.append([repr(x) for x in al.values[j].tolist()])
        if al.predictions[j] is not None:
            parts.append(', "prediction": %s')
            cols.append(_json_column(al.predictions[j].tolist()))
        if j >= 2:
            parts.append(', "quadrant": "%s"')
            cols.append(quadrants(al, j, epsilon).tolist())
        parts.append("}")
    if al.kind == "continuous":
        parts.append(', "delta": %s')
        cols.append([repr(d) for d in (al.values[1] - al.values[0]).tolist()])
    return "".join(parts) + "}\n", cols


def write_flips(path: str | os.PathLike[str], al: Aligned, epsilon: float = 0.0) -> None:
    """Write ``flips.jsonl`` atomically."""
    template, cols = _flip_columns(al, epsilon)
    with atomic_open(path) as fh:
        for s in range(0, len(al.ids), 50_000):
            rows = zip(*(c[s : s + 50_000] for c in cols), strict=True)
            fh.write("".join([template % row for row in rows]))


def compare_files(
    paths: list[str],
    out_dir: str | os.PathLike[str] | None,
    *,
    names: list[str] | None = None,
    format: str = "auto",
    metric: str | None = None,
    slice_by: list[str] | None = None,
    allow_partial: bool = False,
    epsilon: float = 0.0,
    max_rows: int = 50,
    **field_map: Any,
) -> dict[str, Any]:
    """Compare OLD, NEW and any candidates; return the ``compat.json`` dict.

    With ``out_dir`` also writes ``flips.jsonl``, ``report.md``, ``report.html`` and, last,
    ``compat.json`` (each atomically).  ``field_map`` takes ``id_field``, ``correct_field``,
    ``prediction_field``, ``target_field``, ``score_field``: a name for all files, or a list
    with one name per file.  ``max_rows`` bounds the regressions table of the reports.
    """
    if max_rows < 0:
        raise MuscleError(f"--max-rows {max_rows}: must be >= 0")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise MuscleError(f"--epsilon {epsilon}: must be a finite number >= 0")
    if out_dir is not None and not os.fspath(out_dir):
        raise MuscleError("--out is empty; give a folder for the reports (or leave --out out)")
    for what, value in (("paths", paths), ("names", names), ("slice_by", slice_by)):
        if isinstance(value, (str, os.PathLike)):  # a string would be read letter by letter
            raise TypeError(f"compare_files: {what} must be a list, got {value!r}")
    if out_dir is not None:  # none of its files may be an input (--out cf, input cf/flips.jsonl)
        from muscle.io import check_out_apart

        inputs = {f"input {i}": p for i, p in enumerate(paths, 1)}
        check_out_apart(out_dir, inputs, writes=[Path(out_dir) / f for f in OUTPUTS])
    al, meta = load_aligned(
        paths,
        names=names,
        format=format,
        metric=metric,
        slice_by=slice_by,
        allow_partial=allow_partial,
        **field_map,
    )
    compat = compare_aligned(al, meta, epsilon=epsilon)
    if out_dir is not None:
        from muscle.report import write_reports

        out = make_dir(out_dir, "--out")
        # Inputs read: an earlier run's outputs go, none stays beside new ones if this run
        # stops half-way (compat.json, written last, marks a complete run).
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        write_flips(out / "flips.jsonl", al, epsilon)
        write_reports(out, compat, al, epsilon=epsilon, max_rows=max_rows)
        write_json(out / "compat.json", compat)
    return compat


def validate_max_nfr(max_nfr: float | None) -> None:
    """A gate is a fraction: ``--max-nfr 2`` (meant as 2 %) would pass every update."""
    if max_nfr is not None and not 0.0 <= max_nfr <= 1.0:
        raise MuscleError(f"--max-nfr {max_nfr:g}: a fraction in [0, 1] (0.02 for 2 %)")


def check_gate(compat: dict[str, Any], max_nfr: float | None) -> None:
    """Raise :class:`GateFailed` when the old → new NFR exceeds ``max_nfr``."""
    validate_max_nfr(max_nfr)
    if max_nfr is None:
        return
    nfr = compat["pairs"][0]["nfr"]
    if nfr is not None and nfr > max_nfr:
        pair = compat["pairs"][0]
        raise GateFailed(
            f"NFR {pair['nf']}/{compat['n']} = {nfr:.6g} of {pair['old']} -> {pair['new']} "
            f"exceeds --max-nfr {max_nfr:g} (at most {math.floor(max_nfr * compat['n'] + 1e-9)} "
            "negative flips pass)"
        )
