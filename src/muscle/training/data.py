"""Training data: docs → token ids and labels, the seeded train/validation split, collation.

The training text of a doc is ``doc_to_text(doc) + target_delimiter + doc_to_target(doc)``
followed by the tokenizer's EOS token (so generation tasks learn to stop).  Prompt and answer are
tokenised as lm-evaluation-harness splits a context and its continuation (``encode_pair``: the
whole text encoded, the prompt's tokens cut off), so the answer tokens are exactly those
evaluation scores, for SentencePiece tokenizers too; where a token spans both, the text's own
tokens are kept and the answer starts at that token.  ``loss_on="answer"`` sets the prompt labels
to ``-100``.
Sequences longer than ``max_length`` keep their last ``max_length`` tokens (the answer).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from muscle.errors import MuscleError
from muscle.io import sha256_text
from muscle.tasks.base import Doc, Task

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from muscle.training.cache import TeacherCache


def resolve_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    from muscle.tasks import get_task

    return get_task(task)


def load_docs(task: Task, data: str | None, split: str, limit: int | None) -> list[Doc]:
    docs = task.load_docs(data, split)
    if limit is not None:
        docs = docs[:limit]
    if len(docs) < 2:
        raise MuscleError(
            f"task {task.name}: split {split!r} has {len(docs)} doc(s); training needs at least 2"
        )
    return docs


def docs_hash(docs: list[Doc]) -> str:
    """SHA-256 of the canonical JSON of the docs (order-sensitive)."""
    return sha256_text(json.dumps(docs, sort_keys=True, ensure_ascii=False, default=str))


def split_docs(docs: list[Doc], val_fraction: float, seed: int) -> tuple[list[Doc], list[Doc]]:
    """Seeded shuffle, then the first ``1 - val_fraction`` for training, the rest validation."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = round(len(docs) * val_fraction)
    if val_fraction > 0:
        n_val = min(max(n_val, 1), len(docs) - 1)
    val = [docs[i] for i in order[:n_val]]
    train = [docs[i] for i in order[n_val:]]
    return train, val


def _full_encoding(
    tok: PreTrainedTokenizerBase, task: Task, doc: Doc, loss_on: str
) -> tuple[list[int], list[int]]:
    from muscle.evaluation.loglik import encode, encode_pair

    prompt = task.doc_to_text(doc)
    answer = task.target_delimiter + task.doc_to_target(doc)
    p_ids, a_ids = encode_pair(tok, prompt, answer)
    whole = encode(tok, prompt + answer)
    if p_ids + a_ids != whole:
        # The prompt's own tokens are not the start of the text's (a merge across the boundary,
        # or an EOS the tokenizer appends to every text): train on the text's tokens, so the ids
        # always spell the training text, the answer from the first token reaching into it.
        n = _answer_start(tok, prompt, answer, whole)
        p_ids, a_ids = whole[:n], whole[n:]
    if tok.eos_token_id is not None and (not a_ids or a_ids[-1] != tok.eos_token_id):
        a_ids = [*a_ids, tok.eos_token_id]
    labels = ([-100] * len(p_ids) if loss_on == "answer" else list(p_ids)) + list(a_ids)
    return p_ids + a_ids, labels


def _answer_start(tok: PreTrainedTokenizerBase, prompt: str, answer: str, ids: list[int]) -> int:
    """Index of the first token of ``ids`` (the encoded ``prompt + answer``) that holds a
    character of the answer: from the character offsets of a fast tokenizer, else the prompt's
    own token count (without an EOS the tokenizer appends)."""
    bos = getattr(tok, "bos_token", None)
    text = prompt + answer
    try:
        enc = tok(
            text,
            add_special_tokens=not (bos and text.startswith(bos)),
            return_offsets_mapping=True,
        )
    except NotImplementedError:  # slow tokenizers have no offsets
        enc = None
    if enc is not None and enc["input_ids"] == ids:
        cut = len(prompt)
        inside = [i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > cut]
        return inside[0] if inside else len(ids)
    from muscle.evaluation.loglik import encode

    p_ids = encode(tok, prompt)
    return len(p_ids) - (1 if p_ids and p_ids[-1] == tok.eos_token_id else 0)


def _truncated(ids: list[int], labels: list[int], max_length: int) -> dict[str, list[int]]:
    ids, labels = ids[-max_length:], labels[-max_length:]
    # No logit predicts the first token: never a label.  (The loss reads labels[1:] anyway,
    # but transformers counts the label tokens of a batch with or without the first one,
    # depending on the model class: GPT-2 counted it, diluting the loss.)
    labels[0] = -100
    return {"input_ids": ids, "labels": labels}


def encode_doc(
    tok: PreTrainedTokenizerBase, task: Task, doc: Doc, loss_on: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of one doc's training text."""
    return _truncated(*_full_encoding(tok, task, doc, loss_on), max_length)


class EncodedDataset:
    """Encoded examples; each item also carries its global ``index`` (``offset + i``), its row
    in the teacher cache (train rows first, then validation rows)."""

    def __init__(
        self, rows: list[dict[str, list[int]]], offset: int = 0, n_truncated: int = 0
    ) -> None:
        self.rows = rows
        self.offset = offset
        self.n_truncated = n_truncated  # examples longer than max_length, cut from the left

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.rows[i], "index": self.offset + i}

    def fingerprint(self) -> str:
        return sha256_text(json.dumps(self.rows, separators=(",", ":")))

    def n_label_tokens(self) -> int:
        return sum(sum(1 for y in r["labels"][1:] if y != -100) for r in self.rows)


def encode_docs(
    tok: PreTrainedTokenizerBase,
    task: Task,
    docs: list[Doc],
    loss_on: str,
    max_length: int,
    offset: int = 0,
) -> EncodedDataset:
    full = [_full_encoding(tok, task, d, loss_on) for d in docs]
    rows = [_truncated(ids, labels, max_length) for ids, labels in full]
    cut = sum(1 for ids, _ in full if len(ids) > max_length)
    return EncodedDataset(rows, offset, cut)


@dataclass
class Collator:
    """Right-pads ``input_ids`` (pad id), ``attention_mask`` (0) and ``labels`` (-100).  With a
    teacher cache, also ``{name}_logp`` / ``{name}_idx`` ``(N, k)`` and ``{name}_logz``
    ``(N,)`` for each cached teacher: the batch's label tokens, packed."""

    pad_token_id: int
    cache: TeacherCache | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        n = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), n), self.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(items), n), dtype=torch.long)
        lab = torch.full((len(items), n), -100, dtype=torch.long)
        for b, it in enumerate(items):
            m = len(it["input_ids"])
            ids[b, :m] = torch.tensor(it["input_ids"])
            att[b, :m] = 1
            lab[b, :m] = torch.tensor(it["labels"])
        batch = {"input_ids": ids, "attention_mask": att, "labels": lab}
        if self.cache is not None:
            batch.update(self.cache.batch([it["index"] for it in items]))
        return batch
