"""Batched log-likelihood of continuations, the context encoded once per instance.

For a batch of instances the contexts run once (left-padded, so the last position of every
row is its last real token); the KV cache is then repeated per choice and the continuations
run on top of it (right-padded).  Tokenisation follows lm-evaluation-harness: trailing
spaces of the context move to the continuation, ``continuation = enc(ctx + cont)[len(enc(ctx)):]``,
no BOS token, contexts left-truncated to the model's maximum length.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class MCRequest:
    """One instance: its context tokens and one token list per choice."""

    context: list[int]
    continuations: list[list[int]]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: context tokens and continuation tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx) :]


def build_request(
    tokenizer: Any, context: str, choices: Sequence[str], delimiter: str
) -> MCRequest:
    """Tokenise one multiple-choice instance (the context once, lm-eval style)."""
    ctx: list[int] | None = None
    conts: list[list[int]] = []
    for choice in choices:
        c, k = encode_pair(tokenizer, context, delimiter + choice)
        if ctx is not None and c != ctx:  # pragma: no cover - encode(ctx) is deterministic
            raise AssertionError("context tokenisation differs between choices")
        ctx = c
        conts.append(k)
    assert ctx is not None
    if not ctx:  # empty context: condition on a prefix token as lm-eval does
        prefix = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        ctx = [prefix]
    return MCRequest(ctx, conts)


def _cache_kw() -> str:
    # transformers >= 5.x renamed ``past_key_values`` to ``cache``.
    from transformers import LlamaForCausalLM

    params = inspect.signature(LlamaForCausalLM.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


_CACHE_KW = _cache_kw()


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _max_length(model: Any) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "max_position_embeddings", None) or 2048)


@torch.no_grad()
def iter_loglikelihoods(
    model: Any,
    requests: Sequence[MCRequest],
    order: Sequence[int],
    batch_size: int,
    pad_id: int,
) -> Iterator[list[tuple[int, list[float]]]]:
    """Yield, per batch of instances taken in ``order``, ``(index, [logprob per choice])``."""
    device = next(model.parameters()).device
    max_len = _max_length(model)
    for start in range(0, len(order), batch_size):
        idxs = list(order[start : start + batch_size])
        scores = _score_batch(model, [requests[i] for i in idxs], device, max_len, pad_id)
        yield list(zip(idxs, scores, strict=True))


def _score_batch(
    model: Any, reqs: list[MCRequest], device: torch.device, max_len: int, pad_id: int
) -> list[list[float]]:
    # Left-truncate contexts so that context + longest continuation fits the model.
    ctxs = []
    for r in reqs:
        room = max(1, max_len - max(len(c) for c in r.continuations))
        ctxs.append(r.context[-room:])
    b = len(reqs)
    lc = max(len(c) for c in ctxs)
    ids = torch.full((b, lc), pad_id, dtype=torch.long)
    mask = torch.zeros((b, lc), dtype=torch.long)
    for i, c in enumerate(ctxs):
        ids[i, lc - len(c) :] = torch.tensor(c)
        mask[i, lc - len(c) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
    )
    first_lp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [b, V]

    # One row per (instance, choice).
    owner = [i for i, r in enumerate(reqs) for _ in r.continuations]
    conts = [c for r in reqs for c in r.continuations]
    n = len(conts)
    owner_t = torch.tensor(owner, device=device)
    scores = first_lp[owner_t, torch.tensor([c[0] for c in conts], device=device)]
    lk = max(len(c) for c in conts) - 1  # tokens still to score after the first
    if lk > 0:
        cache = _cache_of(out)
        cache.batch_select_indices(owner_t)
        cids = torch.full((n, lk), pad_id, dtype=torch.long)
        cmask = torch.zeros((n, lk), dtype=torch.long)
        for j, c in enumerate(conts):
            cids[j, : len(c) - 1] = torch.tensor(c[:-1])
            cmask[j, : len(c) - 1] = 1
        cids, cmask = cids.to(device), cmask.to(device)
        full_mask = torch.cat([mask[owner_t], cmask], dim=1)
        cpos = mask.sum(-1)[owner_t].unsqueeze(1) + torch.arange(lk, device=device).unsqueeze(0)
        cout = model(
            input_ids=cids,
            attention_mask=full_mask,
            position_ids=cpos,
            use_cache=True,
            **{_CACHE_KW: cache},
        )
        logits = cout.logits.float()  # [n, lk, V]: position t predicts continuation token t+1
        targets = torch.full((n, lk), 0, dtype=torch.long)
        tmask = torch.zeros((n, lk), dtype=torch.bool)
        for j, c in enumerate(conts):
            targets[j, : len(c) - 1] = torch.tensor(c[1:])
            tmask[j, : len(c) - 1] = True
        targets, tmask = targets.to(device), tmask.to(device)
        tok_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        scores = scores + (tok_lp * tmask).sum(-1)
    flat = scores.double().cpu().tolist()
    result: list[list[float]] = [[] for _ in reqs]
    for j, i in enumerate(owner):
        result[i].append(flat[j])
    return result
