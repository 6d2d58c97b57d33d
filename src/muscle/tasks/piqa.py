"""PIQA (Bisk et al., 2020): physical commonsense, two solutions; lm-eval's default prompt."""

from __future__ import annotations

from pathlib import Path

from muscle.errors import MuscleError
from muscle.tasks import register_task
from muscle.tasks._data import find_file, iter_jsonl_docs, load_hub, looks_like_path, require
from muscle.tasks.base import Doc, Task

_FILES = {
    "validation": ["valid.jsonl", "dev.jsonl"],
    "train": ["train.jsonl"],
    "test": ["tests.jsonl", "test.jsonl"],
}


@register_task("piqa")
class Piqa(Task):
    """``valid.jsonl`` (``goal``, ``sol1``, ``sol2``) + ``valid-labels.lst`` (0/1 per line)."""

    name = "piqa"
    version = "1.0"
    output_type = "multiple_choice"
    default_split = "validation"
    hub_name = "baber/piqa"

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is None or not looks_like_path(data):
            return load_hub(data or self.hub_name, None, split, self._from_hub)
        path = find_file(data, split, _FILES, "PIQA")
        labels_path = _labels_path(path)
        if not labels_path.is_file():
            raise MuscleError(f"{labels_path}: PIQA labels file not found beside {path.name}")
        labels = labels_path.read_text(encoding="utf-8").split("\n")
        docs: list[Doc] = []
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            require(path, lineno, obj, ("goal", "sol1", "sol2"))
            raw = labels[idx].strip() if idx < len(labels) else ""
            if raw not in ("0", "1"):
                raise MuscleError(
                    f"{labels_path}:{idx + 1}: expected label 0 or 1 for {path.name} line "
                    f"{lineno}, got {raw!r}"
                )
            docs.append(
                {"_id": str(idx), "goal": obj["goal"], "sol1": obj["sol1"], "sol2": obj["sol2"]}
                | {"label": int(raw)}
            )
        return docs

    @staticmethod
    def _from_hub(i: int, row: dict) -> Doc:
        return {"_id": str(i), **{k: row[k] for k in ("goal", "sol1", "sol2")}} | {
            "label": int(row["label"])
        }

    def doc_to_text(self, doc: Doc) -> str:
        return f"Question: {doc['goal']}\nAnswer:"

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return [doc["sol1"], doc["sol2"]]

    def gold_index(self, doc: Doc) -> int:
        return int(doc["label"])


def _labels_path(path: Path) -> Path:
    stem = path.name.removesuffix(".jsonl")
    return path.with_name(f"{stem}-labels.lst")
