"""Shared data helpers for the built-in tasks: local files first, the hub as a fallback."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from muscle.errors import MuscleError
from muscle.io import not_utf8, read_jsonl
from muscle.tasks.base import Doc


def canonical_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) used for ``doc_hash``."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_scores(target: str, generated: str) -> dict[str, Any]:
    """The record of a summary scored by ROUGE-1/2/L F (``rouge-score``, stemmed, as lm-eval):
    ``prediction`` (the trimmed text), ``score`` = ROUGE-1, and the three F values as floats
    (``rouge-score`` gives an int 0 for an empty match)."""
    pred = generated.strip()
    s = _rouge_scorer().score(target, pred)
    r1, r2, rl = (float(s[k].fmeasure) for k in ("rouge1", "rouge2", "rougeL"))
    return {"prediction": pred, "score": r1, "rouge1": r1, "rouge2": r2, "rougeL": rl}


def looks_like_path(data: str) -> bool:
    """A ``--data`` value that names a local file/folder rather than a hub dataset (``org/name``
    whose ``org/`` is a local folder counts as a path: most likely a typo)."""
    parent = Path(data).parent
    return (
        Path(data).exists()
        or data.startswith((".", "/", "~"))
        or data.endswith((".jsonl", ".json", ".txt", ".bz2", ".lst", ".yaml", ".csv"))
        or data.count("/") > 1
        or (str(parent) != "." and parent.is_dir())
    )


def find_file(data: str, split: str, candidates: dict[str, list[str]], what: str) -> Path:
    """``data`` itself if it is a file, else the first candidate name for ``split`` in the
    folder ``data``.  Raises a :class:`MuscleError` listing what was looked for."""
    p = Path(data).expanduser()
    names = candidates.get(split)
    if names is None:  # a file too: the records would say they are of that split
        raise MuscleError(
            f"unknown split {split!r} for {what}; available: {', '.join(sorted(candidates))}"
        )
    if p.is_file():
        return p
    if not p.exists():
        raise MuscleError(f"{p}: data file or folder not found")
    for name in names:
        if (p / name).is_file():
            return p / name
    raise MuscleError(f"{p}: no {what} file for split {split!r} (looked for {', '.join(names)})")


def iter_jsonl_docs(path: Path) -> Iterator[tuple[int, Doc]]:
    """``(line_number, object)`` from a JSONL file (or a JSON list)."""
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None
        except json.JSONDecodeError as exc:
            raise MuscleError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(rows, list):
            raise MuscleError(f"{path}: expected a JSON list of objects (or use JSONL)")
        for i, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise MuscleError(f"{path}: item {i}: expected an object")
            yield i, row
        return
    yield from read_jsonl(path)


def require(path: Path, lineno: int, obj: Doc, fields: list[str] | tuple[str, ...]) -> None:
    """Raise naming file and line when a record lacks one of ``fields``."""
    for f in fields:
        if f not in obj:
            raise MuscleError(
                f"{path}:{lineno}: record has no field {f!r} (fields: {', '.join(obj)})"
            )


def load_hub(
    name: str, config: str | None, split: str, convert: Callable[[int, dict[str, Any]], Doc]
) -> list[Doc]:
    """Load ``split`` of a hub dataset with ``datasets`` and convert each row.  Any failure
    (typically: no network) becomes a one-line :class:`MuscleError`."""
    if not _hub_reachable():
        raise MuscleError(
            f"the Hugging Face hub is unreachable to load the dataset {name!r}; pass --data with "
            "a local file or folder in the task's original format (a --data that is no local "
            "path is taken for a hub dataset) or set HF_HUB_OFFLINE=1 to use a cached copy"
        )
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing dataset...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise MuscleError(
            f"could not load dataset {name!r} (split {split!r}) from the Hugging Face hub: "
            f"{first}; pass --data with a local file in the task's original format"
        ) from None
    return [convert(i, dict(row)) for i, row in enumerate(ds)]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub, so an offline machine fails at once instead of
    after ``datasets``' retries.  Skipped (True) when ``HF_HUB_OFFLINE`` asks for the cache."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True
