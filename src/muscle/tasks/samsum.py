"""SAMSum dialogue summarisation: greedy generation, ROUGE-1 F as the continuous score."""

from __future__ import annotations

from typing import Any

from muscle.errors import MuscleError
from muscle.tasks import register_task
from muscle.tasks._data import (
    find_file,
    iter_jsonl_docs,
    load_hub,
    looks_like_path,
    rouge_scores,
)
from muscle.tasks.base import Doc, Task

_FILES = {
    "test": ["test.jsonl"],
    "validation": ["validation.jsonl", "val.jsonl", "dev.jsonl"],
    "train": ["train.jsonl"],
}
_FIELDS = (("dialogue", "summary"), ("context", "response"))


@register_task("samsum")
class Samsum(Task):
    """JSONL with ``dialogue``/``summary`` (or ``context``/``response``)."""

    name = "samsum"
    version = "1.0"
    output_type = "generate_until"
    score_kind = "continuous"
    default_split = "test"

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is None or not looks_like_path(data):
            return load_hub(data or "Samsung/samsum", None, split, self._from_hub)
        path = find_file(data, split, _FILES, "SAMSum")
        docs: list[Doc] = []
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            for dk, sk in _FIELDS:
                if dk in obj and sk in obj:
                    docs.append(
                        {"_id": str(obj.get("id", idx)), "dialogue": obj[dk], "summary": obj[sk]}
                    )
                    break
            else:
                raise MuscleError(
                    f"{path}:{lineno}: expected fields dialogue/summary or context/response "
                    f"(fields: {', '.join(obj)})"
                )
        return docs

    @staticmethod
    def _from_hub(i: int, row: dict) -> Doc:
        return {
            "_id": str(row.get("id", i)),
            "dialogue": row["dialogue"],
            "summary": row["summary"],
        }

    def doc_to_text(self, doc: Doc) -> str:
        return f"Dialogue: {doc['dialogue']}\nSummary:"

    def doc_to_target(self, doc: Doc) -> str:
        return doc["summary"]

    def generation_kwargs(self) -> dict[str, Any]:
        return {
            "until": ["Dialogue:", "Summary:", "</s>", "\n\n"],
            "max_new_tokens": 128,
            "no_repeat_ngram_size": 2,
        }

    def score_generation(self, doc: Doc, generated: str) -> dict[str, Any]:
        return rouge_scores(doc["summary"], generated)
