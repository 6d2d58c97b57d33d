"""Training data: docs → token ids and labels, the seeded train/validation split, collation.

The training text of a doc is ``doc_to_text(doc) + target_delimiter + doc_to_target(doc)``
followed by the tokenizer's EOS token (so generation tasks learn to stop).  Prompt and answer are
tokenised as lm-evaluation-harness splits a context and its continuation (``encode_pair``: the
whole text encoded, the prompt's tokens cut off), so the answer tokens are exactly those
evaluation scores, for SentencePiece tokenizers too; where a token spans both, the text's own
tokens are kept and the answer starts at that token.  Generation tasks start from the prompt's
ids as generation does (a prompt's trailing space is not moved into the answer there).
``loss_on="answer"`` sets the prompt labels to ``-100``.
An example longer than ``max_length`` keeps the end of its prompt and the start of its answer
(:func:`kept_lengths`): the prompt loses its start first, the answer staying whole, down to half
of ``max_length``; an answer longer than the rest then loses its end (and the EOS), so that no
example is an answer without its question.  Training and validation rows, and so the teacher
cache, are cut alike.
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
    tok: PreTrainedTokenizerBase, task: Task, doc: Doc
) -> tuple[list[int], list[int]]:
    """The prompt's and the answer's token ids (the answer ending in EOS), uncut."""
    from muscle.evaluation.loglik import encode, encode_pair

    prompt = task.doc_to_text(doc)
    answer = task.target_delimiter + task.doc_to_target(doc)
    split = _generation_split(tok, prompt, answer) if task.output_type == "generate_until" else None
    if split is not None:
        p_ids, a_ids = split
    else:
        p_ids, a_ids = encode_pair(tok, prompt, answer)
        whole = encode(tok, prompt + answer)
        if p_ids + a_ids != whole:
            # The prompt's own tokens are not the start of the text's (a merge across the
            # boundary, or an EOS the tokenizer appends to every text): train on the text's
            # tokens, so the ids always spell the training text, the answer from the first
            # token reaching into it.
            n = _answer_start(tok, prompt, answer, whole)
            p_ids, a_ids = whole[:n], whole[n:]
    if tok.eos_token_id is not None and (not a_ids or a_ids[-1] != tok.eos_token_id):
        a_ids = [*a_ids, tok.eos_token_id]
    return list(p_ids), list(a_ids)


def _generation_split(
    tok: PreTrainedTokenizerBase, prompt: str, answer: str
) -> tuple[list[int], list[int]] | None:
    """Generation tasks: the prompt's ids exactly as generation starts from them (the whole
    prompt encoded, as ``muscle eval`` and lm-eval's ``generate_until`` do: a trailing space stays
    in the prompt, where scoring moves it into the answer), and the answer's ids after them.
    ``None`` where no such split spells the text (the caller then splits as scoring does)."""
    from muscle.evaluation.loglik import encode

    p_ids, whole = encode(tok, prompt), encode(tok, prompt + answer)
    if p_ids and p_ids[-1] == tok.eos_token_id:  # the tokenizer appends EOS to every text
        return None
    if whole[: len(p_ids)] == p_ids:
        return p_ids, whole[len(p_ids) :]
    # A token spans the boundary (a prompt's trailing space merges into the answer's first
    # word): the answer's own tokens, where they spell the text after the prompt's; with a
    # tokenizer that prepends a space to every text (SentencePiece's "▁"), the first without it.
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    tries = [a_ids]
    first = tok.convert_ids_to_tokens(a_ids[0]) if a_ids else ""
    if len(first) > 1 and first[0] in ("\u2581", "\u0120"):  # "▁", byte-level BPE's "Ġ"
        bare = tok.convert_tokens_to_ids(first[1:])
        if bare is not None and bare != tok.unk_token_id:
            tries.append([bare, *a_ids[1:]])
    text = tok.decode(whole, skip_special_tokens=True)
    for ids in tries:
        if tok.decode(p_ids + ids, skip_special_tokens=True) == text:
            return p_ids, ids
    return None


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


def kept_lengths(n_prompt: int, n_answer: int, max_length: int) -> tuple[int, int]:
    """How many tokens of the prompt (its end) and of the answer (its start) an example keeps:
    all of both when they fit; else the prompt is cut first, the answer staying whole, but not
    below half of ``max_length`` (or its own length), and the answer fills the rest."""
    if n_prompt + n_answer <= max_length:
        return n_prompt, n_answer
    keep_prompt = min(n_prompt, max(max_length - n_answer, max_length // 2))
    return keep_prompt, max_length - keep_prompt


def _example(
    p_ids: list[int], a_ids: list[int], loss_on: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of one example, cut to ``max_length`` (:func:`kept_lengths`)."""
    n_p, n_a = kept_lengths(len(p_ids), len(a_ids), max_length)
    prompt, answer = p_ids[len(p_ids) - n_p :], a_ids[:n_a]
    labels = ([-100] * n_p if loss_on == "answer" else list(prompt)) + list(answer)
    # No logit predicts the first token: never a label.  (The loss reads labels[1:] anyway,
    # but transformers counts the label tokens of a batch with or without the first one,
    # depending on the model class: GPT-2 counted it, diluting the loss.)
    labels[0] = -100
    return {"input_ids": prompt + answer, "labels": labels}


def encode_doc(
    tok: PreTrainedTokenizerBase, task: Task, doc: Doc, loss_on: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of one doc's training text."""
    return _example(*_full_encoding(tok, task, doc), loss_on, max_length)


class EncodedDataset:
    """Encoded examples; each item also carries its global ``index`` (``offset + i``), its row
    in the teacher cache (train rows first, then validation rows)."""

    def __init__(
        self,
        rows: list[dict[str, list[int]]],
        offset: int = 0,
        n_truncated: int = 0,
        n_answer_cut: int = 0,
    ) -> None:
        self.rows = rows
        self.offset = offset
        self.n_truncated = n_truncated  # examples longer than max_length, cut
        self.n_answer_cut = n_answer_cut  # of those, the ones whose answer lost its end

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
    full = [_full_encoding(tok, task, d) for d in docs]
    rows = [_example(p, a, loss_on, max_length) for p, a in full]
    cut = sum(1 for p, a in full if len(p) + len(a) > max_length)
    answer_cut = sum(1 for p, a in full if kept_lengths(len(p), len(a), max_length)[1] < len(a))
    return EncodedDataset(rows, offset, cut, answer_cut)


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
