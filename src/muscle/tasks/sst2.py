"""SST-2 sentiment (GLUE); lm-eval's default prompt and label words."""

from __future__ import annotations

from muscle.errors import MuscleError
from muscle.tasks import register_task
from muscle.tasks._data import find_file, iter_jsonl_docs, load_hub, looks_like_path, require
from muscle.tasks.base import Doc, Task

_FILES = {
    "validation": ["dev.jsonl", "validation.jsonl", "valid.jsonl"],
    "train": ["train.jsonl"],
    "test": ["test.jsonl"],
}
CHOICES = ["negative", "positive"]


@register_task("sst2")
class Sst2(Task):
    """JSONL with ``sentence`` and ``label`` (0/1, int or string)."""

    name = "sst2"
    version = "1.0"
    output_type = "multiple_choice"
    default_split = "validation"

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is None or not looks_like_path(data):
            if data is None:
                return load_hub("nyu-mll/glue", "sst2", split, self._from_hub)
            return load_hub(data, None, split, self._from_hub)
        path = find_file(data, split, _FILES, "SST-2")
        docs: list[Doc] = []
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            require(path, lineno, obj, ("sentence", "label"))
            label = str(obj["label"]).strip()
            if label not in ("0", "1"):
                raise MuscleError(f"{path}:{lineno}: label must be 0 or 1, got {obj['label']!r}")
            docs.append({"_id": str(idx), "sentence": obj["sentence"], "label": int(label)})
        return docs

    @staticmethod
    def _from_hub(i: int, row: dict) -> Doc:
        return {"_id": str(row.get("idx", i)), "sentence": row["sentence"], "label": row["label"]}

    def doc_to_text(self, doc: Doc) -> str:
        return f"{doc['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:"

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return list(CHOICES)

    def gold_index(self, doc: Doc) -> int:
        return int(doc["label"])
