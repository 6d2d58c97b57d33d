"""GSM8K (Cobbe et al., 2021): greedy generation, exact match on the final number.

lm-eval's ``gsm8k.yaml``: prompt ``Question: {question}\\nAnswer:``, answers extracted by a
strict regex (``#### N``) and a flexible one (the last number), both normalised as lm-eval's
``exact_match`` does (case, commas, ``$``, trailing full stop).  ``correct`` is the flexible
match (zero-shot instruction models rarely write ``####``); the strict one is also logged.
Five-shot by default and greedy until ``Question:`` (or an end-of-turn token), as lm-eval's
yaml; version 1.0 also stopped at a blank line, which cut chain-of-thought answers written in
paragraphs.
"""

from __future__ import annotations

import re
from typing import Any

from muscle.tasks import register_task
from muscle.tasks._data import find_file, iter_jsonl_docs, load_hub, looks_like_path, require
from muscle.tasks.base import Doc, Task

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
INVALID = "[invalid]"
_FILES = {"test": ["test.jsonl"], "train": ["train.jsonl"]}


def extract_strict(text: str) -> str:
    m = STRICT.findall(text)
    return m[0].strip() if m else INVALID


def extract_flexible(text: str) -> str:
    matches = FLEXIBLE.findall(text)
    if not matches:
        return INVALID
    last = matches[-1]
    if isinstance(last, tuple):
        last = next((g for g in last if g), "")
    return last.strip()


def normalize(text: str) -> str:
    """lm-eval ``exact_match`` normalisation with gsm8k's ``regexes_to_ignore``."""
    for pat in _IGNORE:
        text = re.sub(pat, "", text)
    return text.lower().strip()


@register_task("gsm8k")
class Gsm8k(Task):
    name = "gsm8k"
    version = "1.1"
    output_type = "generate_until"
    default_split = "test"
    default_num_fewshot = 5

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is None or not looks_like_path(data):
            cfg = "main" if data is None else None
            return load_hub(data or "openai/gsm8k", cfg, split, self._from_hub)
        path = find_file(data, split, _FILES, "GSM8K")
        docs: list[Doc] = []
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            require(path, lineno, obj, ("question", "answer"))
            docs.append({"_id": str(idx), "question": obj["question"], "answer": obj["answer"]})
        return docs

    @staticmethod
    def _from_hub(i: int, row: dict) -> Doc:
        return {"_id": str(i), "question": row["question"], "answer": row["answer"]}

    def doc_to_text(self, doc: Doc) -> str:
        return f"Question: {doc['question']}\nAnswer:"

    def doc_to_target(self, doc: Doc) -> str:
        return doc["answer"]

    def target(self, doc: Doc) -> str:
        return normalize(doc["answer"])

    def generation_kwargs(self) -> dict[str, Any]:
        return {"until": ["Question:", "</s>", "<|im_end|>"], "max_new_tokens": 256}

    def score_generation(self, doc: Doc, generated: str) -> dict[str, Any]:
        gold = normalize(doc["answer"])
        strict = extract_strict(generated)
        flexible = extract_flexible(generated)
        ok_strict = strict != INVALID and normalize(strict) == gold
        ok_flexible = flexible != INVALID and normalize(flexible) == gold
        return {
            "prediction": normalize(flexible) if flexible != INVALID else INVALID,
            "prediction_strict": strict,
            "prediction_flexible": flexible,
            "correct": ok_flexible,
            "correct_strict": ok_strict,
            "correct_flexible": ok_flexible,
        }
