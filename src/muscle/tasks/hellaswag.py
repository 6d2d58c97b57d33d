"""HellaSwag (Zellers et al., 2019) with lm-eval's preprocessing; 4 endings.

Two local formats: the original ``hellaswag_val.jsonl`` (``activity_label``, ``ctx_a``,
``ctx_b``, ``endings``, ``label``) and the 6-lines-per-item text format (optionally
``.bz2``): ``activity_label: ctx``, gold label 0-3, then the four endings.
"""

from __future__ import annotations

import bz2
import re
from pathlib import Path

from muscle.errors import MuscleError
from muscle.tasks import register_task
from muscle.tasks._data import find_file, iter_jsonl_docs, load_hub, looks_like_path, require
from muscle.tasks.base import Doc, Task

_FILES = {
    "validation": [
        "hellaswag_val.jsonl",
        "validation.jsonl",
        "hellaswag_val_full.txt.bz2",
        "hellaswag_val_full.txt",
    ],
    "train": ["hellaswag_train.jsonl", "train.jsonl", "hellaswag_train.txt", "train.txt"],
    "test": ["hellaswag_test.jsonl", "test.jsonl", "hellaswag_test.txt", "test.txt"],
}


def preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py`` cleaning of WikiHow artefacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def make_doc(
    idx: str, activity: str, ctx_a: str, ctx_b: str, endings: list[str], label: int
) -> Doc:
    ctx = ctx_a + " " + ctx_b.capitalize()
    return {
        "_id": idx,
        "query": preprocess(activity + ": " + ctx),
        "choices": [preprocess(e) for e in endings],
        "label": int(label),
        "_category": activity,  # logged as the record's ``category`` (--slice-by category)
    }


@register_task("hellaswag")
class Hellaswag(Task):
    name = "hellaswag"
    version = "1.0"
    output_type = "multiple_choice"
    default_split = "validation"

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is None or not looks_like_path(data):
            return load_hub(data or "Rowan/hellaswag", None, split, self._from_hub)
        path = find_file(data, split, _FILES, "HellaSwag")
        if path.name.endswith((".txt", ".txt.bz2")):
            return _read_text_format(path)
        docs: list[Doc] = []
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            require(path, lineno, obj, ("activity_label", "ctx_a", "ctx_b", "endings", "label"))
            if not isinstance(obj["endings"], list) or len(obj["endings"]) != 4:
                raise MuscleError(f"{path}:{lineno}: 'endings' must be a list of 4 strings")
            if str(obj["label"]) not in ("0", "1", "2", "3"):
                raise MuscleError(f"{path}:{lineno}: label must be 0-3, got {obj['label']!r}")
            docs.append(
                make_doc(
                    str(obj.get("ind", idx)),
                    obj["activity_label"],
                    obj["ctx_a"],
                    obj["ctx_b"],
                    obj["endings"],
                    int(obj["label"]),
                )
            )
        return docs

    @staticmethod
    def _from_hub(i: int, row: dict) -> Doc:
        return make_doc(
            str(row.get("ind", i)),
            row["activity_label"],
            row["ctx_a"],
            row["ctx_b"],
            row["endings"],
            int(row["label"]),
        )

    def doc_to_text(self, doc: Doc) -> str:
        return doc["query"]

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return list(doc["choices"])

    def gold_index(self, doc: Doc) -> int:
        return int(doc["label"])


def _split_ctx(ctx: str) -> tuple[str, str]:
    """Recover (ctx_a, ctx_b) from the joined context of the text format: ``ctx_b`` is the
    trailing lower-case sentence fragment (e.g. ``"... on a roof. he"``), else empty."""
    head, sep, tail = ctx.rpartition(". ")
    if sep and tail and tail[0].islower():
        return head + ".", tail
    return ctx, ""


def _read_text_format(path: Path) -> list[Doc]:
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, EOFError) as exc:
        raise MuscleError(f"{path}: cannot read ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise MuscleError(
            f"{path}:{len(lines)}: expected 6 lines per item, the file has {len(lines)} lines "
            f"(last item incomplete)"
        )
    docs: list[Doc] = []
    for k in range(0, len(lines), 6):
        head, label = lines[k], lines[k + 1].strip()
        activity, sep, ctx = head.partition(": ")
        if not sep:
            raise MuscleError(f"{path}:{k + 1}: expected 'activity_label: context', got {head!r}")
        if label not in ("0", "1", "2", "3"):
            raise MuscleError(f"{path}:{k + 2}: expected a gold label 0-3, got {label!r}")
        ctx_a, ctx_b = _split_ctx(ctx)
        docs.append(make_doc(str(k // 6), activity, ctx_a, ctx_b, lines[k + 2 : k + 6], int(label)))
    return docs
