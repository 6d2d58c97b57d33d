"""Batched log-likelihood of continuations, the context encoded once per instance.

Each instance is packed in one row, ``context + choice_1 + choice_2 + ...``, with a 4D
attention mask in which every choice sees the context and itself only and position ids that
restart after the context: one forward pass scores all choices, no token is computed twice,
and rows sorted by packed length need little padding.  The output head runs only on the
positions whose predictions are scored.  Tokenisation follows lm-evaluation-harness: trailing
spaces of the context move to the continuation, ``continuation = enc(ctx + cont)[len(enc(ctx)):]``,
the tokenizer's own special tokens (BOS where it adds one).  Where packing would not be exact —
an input longer than the model takes (lm-eval cuts each choice's context from the left on its
own), a sliding attention window reached, ALiBi models — each choice gets its own row instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from muscle.logits import logits_at


@dataclass
class MCRequest:
    """One instance: its context tokens and one token list per choice."""

    context: list[int]
    continuations: list[list[int]]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids as lm-eval (0.4.13) encodes them: with the tokenizer's own special tokens
    (e.g. a BOS where the tokenizer adds one), unless the text already starts with BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: context tokens and continuation tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
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


def text_config(model: Any) -> Any:
    """The config of the model's text decoder: ``config.get_text_config(decoder=True)``, the
    nested ``text_config`` of composite models (Gemma 3/4, Llama 4, Mistral 3, …), which holds
    their length, soft-capping and attention window; the config itself for the others."""
    cfg = getattr(model, "config", None)
    get = getattr(cfg, "get_text_config", None)
    return get(decoder=True) if callable(get) else cfg


def model_max_length(model: Any) -> int:
    """The longest input the model takes (``max_position_embeddings``; 2048 if unknown)."""
    cfg = text_config(model)
    return int(getattr(cfg, "max_position_embeddings", None) or 2048)


def packed_length(req: MCRequest) -> int:
    """Tokens of an instance packed in one row: the context once, then every continuation but
    its last token (whose output is never needed)."""
    return len(req.context) + sum(max(0, len(c) - 1) for c in req.continuations)


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
    max_len = model_max_length(model)
    for start in range(0, len(order), batch_size):
        idxs = list(order[start : start + batch_size])
        scores = _score_batch(model, [requests[i] for i in idxs], device, max_len, pad_id)
        yield list(zip(idxs, scores, strict=True))


def _plain_head(model: Any) -> bool:
    """True when logits are exactly ``lm_head(last hidden state)`` (no soft-capping or
    scaling), so the head can run on the needed positions only."""
    cfg = text_config(model)
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(cfg, attr, None) not in (None, 1, 1.0):
            return False
    decoder = getattr(model, "get_decoder", None)
    # Llama 4's causal LM answers get_decoder() with itself (its output: logits, not states);
    # behind a PEFT wrapper, with the model inside it
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (
        callable(decoder)
        and decoder() not in (model, base)
        and model.get_output_embeddings() is not None
    )


def is_truncated(req: MCRequest, max_len: int) -> bool:
    """Whether a choice's input, ``context + continuation`` less its last token, exceeds the
    model's length, so that lm-eval cuts the start of the context for it."""
    return any(len(req.context) + len(c) - 1 > max_len for c in req.continuations)


def _sliding_window(model: Any) -> int | None:
    """The attention window of models that use one (Mistral, Gemma 2/3, Phi-3, …; Llama 4's
    chunks: a query sees its own chunk of ``attention_chunk_size`` positions), else None."""
    cfg = text_config(model)
    chunk = getattr(cfg, "attention_chunk_size", None)
    if chunk and "chunked_attention" in (getattr(cfg, "layer_types", None) or ()):
        return int(chunk)
    window = getattr(cfg, "sliding_window", None)
    if not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return int(window)


def _needs_own_mask(model: Any) -> bool:
    """Models that take no 4D mask with restarting positions (ALiBi: Bloom, MPT, Falcon)."""
    cfg = text_config(model)
    return getattr(cfg, "model_type", None) in ("bloom", "mpt") or bool(
        getattr(cfg, "alibi", False)
    )


def _score_batch(
    model: Any, reqs: list[MCRequest], device: torch.device, max_len: int, pad_id: int
) -> list[list[float]]:
    """Packed scoring (below) where it is exact; otherwise one row per choice, as lm-eval."""
    window = _sliding_window(model)

    def beyond_window(r: MCRequest) -> bool:  # a query farther than the window from a key
        return window is not None and len(r.context) + max(map(len, r.continuations)) > window

    if _needs_own_mask(model) or any(is_truncated(r, max_len) or beyond_window(r) for r in reqs):
        return _score_unpacked(model, reqs, device, max_len, pad_id)
    return _score_packed(model, reqs, device, pad_id)


def _score_unpacked(
    model: Any, reqs: list[MCRequest], device: torch.device, max_len: int, pad_id: int
) -> list[list[float]]:
    """lm-eval's rule, one row per choice: ``(context + continuation)[-(max_len + 1):][:-1]``,
    right-padded with a plain 2D mask, so the model applies its own attention (sliding
    windows, ALiBi) and each choice keeps as much context as fits beside it."""
    rows, conts = [], []
    for req in reqs:
        for cont in req.continuations:
            rows.append((req.context + cont)[-(max_len + 1) :][:-1])
            conts.append(cont)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    # the scored positions: each row's last n (a continuation longer than the model: its end)
    g_row, g_pos, g_tok = [], [], []
    for i, (row, cont) in enumerate(zip(rows, conts, strict=True)):
        n = min(len(cont), len(row))
        g_row += [i] * n
        g_pos += range(len(row) - n, len(row))
        g_tok += cont[len(cont) - n :]
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    flat = _sum_logprobs(model, inputs, (g_row, g_pos, g_tok, g_row), len(rows), device)
    return _per_request(flat, reqs)  # one row per choice: rows are the choices


def _score_packed(
    model: Any, reqs: list[MCRequest], device: torch.device, pad_id: int
) -> list[list[float]]:
    """One row per instance: ``context + cont_1[:-1] + cont_2[:-1] + ...`` with a 4D mask in
    which each continuation sees the context and itself only, and positions restart after the
    context; right padding.  The context is thus encoded once per instance and nothing is
    computed twice."""
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[tuple[int, int]]] = []  # per row: (start, end) of each continuation
    # gather plan: (row, position whose output predicts the token, token, flat choice index)
    g_row: list[int] = []
    g_pos: list[int] = []
    g_tok: list[int] = []
    g_choice: list[int] = []
    n_choices = 0
    for r_i, req in enumerate(reqs):
        ctx = req.context  # untruncated: _score_batch sends instances to cut elsewhere
        row, pos, segs = list(ctx), list(range(len(ctx))), []
        for cont in req.continuations:
            start = len(row)
            for k, tok in enumerate(cont):
                g_row.append(r_i)
                g_pos.append(len(ctx) - 1 if k == 0 else start + k - 1)
                g_tok.append(tok)
                g_choice.append(n_choices)
            row.extend(cont[:-1])
            pos.extend(range(len(ctx), len(ctx) + max(0, len(cont) - 1)))
            segs.append((start, len(row)))
            n_choices += 1
        rows.append(row)
        positions.append(pos)
        segments.append(segs)

    b, width = len(rows), max(len(r) for r in rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos_t = torch.zeros((b, width), dtype=torch.long)
    allowed = torch.zeros((b, width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for r_i, (row, pos, segs) in enumerate(zip(rows, positions, segments, strict=True)):
        n = len(row)
        c = segs[0][0] if segs else n  # context length
        ids[r_i, :n] = torch.tensor(row)
        pos_t[r_i, :n] = torch.tensor(pos)
        allowed[r_i, :c, :c] = causal[:c, :c]
        for s, e in segs:
            allowed[r_i, s:e, :c] = True
            allowed[r_i, s:e, s:e] = causal[: e - s, : e - s]
        idx = torch.arange(n, width)
        allowed[r_i, idx, idx] = True  # padding attends to itself only (no empty softmax)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros((b, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
    ids, pos_t, mask = ids.to(device), pos_t.to(device), mask.to(device)

    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos_t}
    flat = _sum_logprobs(model, inputs, (g_row, g_pos, g_tok, g_choice), n_choices, device)
    return _per_request(flat, reqs)


def _sum_logprobs(
    model: Any,
    inputs: dict[str, torch.Tensor],
    plan: tuple[list[int], list[int], list[int], list[int]],
    n_choices: int,
    device: torch.device,
) -> list[float]:
    """Run the model on ``inputs`` and sum, per choice, the log-probabilities of the tokens in
    ``plan`` = (row, position whose output predicts the token, token, choice index).  The
    output head runs on those positions only (:mod:`muscle.logits`; plain ``lm_head(hidden)``
    heads also where the model takes no ``logits_to_keep``)."""
    g_row, g_pos, g_tok, g_choice = (torch.tensor(x, device=device) for x in plan)
    if _plain_head(model):
        hidden = model.get_decoder()(**inputs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[g_row, g_pos])
    else:  # soft-capped or scaled heads: the model's own head, at those positions where it can
        keep = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool, device=device)
        keep[g_row, g_pos] = True
        at = keep.flatten().cumsum(0) - 1  # row-major rank of each kept position
        logits = logits_at(model, inputs, keep)[at[g_row * keep.shape[1] + g_pos]]
    logits = logits.float()
    tok_lp = logits.gather(-1, g_tok.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    sums = torch.zeros(n_choices, dtype=torch.float64, device=device)
    sums.index_add_(0, g_choice, tok_lp.double())
    return sums.cpu().tolist()


def _per_request(flat: list[float], reqs: list[MCRequest]) -> list[list[float]]:
    """Choice scores in request order, split back into one list per request."""
    result, k = [], 0
    for req in reqs:
        result.append(flat[k : k + len(req.continuations)])
        k += len(req.continuations)
    return result
