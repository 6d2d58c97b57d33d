"""Batched greedy generation with a KV cache (left padding) and stop sequences."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from muscle.evaluation.loglik import model_max_length


class StopOnStrings(StoppingCriteria):
    """Per-row stop once the generated text, after its leading whitespace, contains one of
    ``until`` (the same rule as :func:`truncate_at`)."""

    def __init__(self, tokenizer: Any, until: Sequence[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.until = [u for u in until if u]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_len :].tolist(), skip_special_tokens=False
        )
        done = [any(u in t.lstrip() for u in self.until) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def truncate_at(text: str, until: Sequence[str]) -> str:
    """The text before the first stop sequence (lm-eval: ``s.split(term)[0]`` for each term),
    except that leading whitespace never stops: instruction models often open with a blank
    line, which a blank-line stop (samsum's) would turn into an empty answer."""
    body = text.lstrip()
    lead = text[: len(text) - len(body)]
    for term in until:
        if term:
            body = body.split(term)[0]
    return lead + body


@torch.no_grad()
def iter_generations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    order: Sequence[int],
    batch_size: int,
    *,
    until: Sequence[str],
    max_new_tokens: int,
    pad_id: int,
    **gen_kwargs: Any,
) -> Iterator[list[tuple[int, str]]]:
    """Yield, per batch of prompts taken in ``order``, ``(index, generated text)``; the text
    is cut at the first stop sequence."""
    device = next(model.parameters()).device
    eos = getattr(tokenizer, "eos_token_id", None)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=eos,
        **gen_kwargs,
    )
    max_len = model_max_length(model)
    for start in range(0, len(order), batch_size):
        idxs = list(order[start : start + batch_size])
        rows = [prompts[i][-max(1, max_len - max_new_tokens) :] for i in idxs]
        lp = max(len(r) for r in rows)
        ids = torch.full((len(rows), lp), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), lp), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, lp - len(r) :] = torch.tensor(r)
            mask[k, lp - len(r) :] = 1
        stop = StoppingCriteriaList([StopOnStrings(tokenizer, until, lp)])
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=cfg,
            stopping_criteria=stop,
        )
        texts = tokenizer.batch_decode(out[:, lp:].tolist(), skip_special_tokens=True)
        yield [(i, truncate_at(t, until)) for i, t in zip(idxs, texts, strict=True)]
