"""Logits at chosen positions only.

Where a model supports it (``logits_to_keep`` with a boolean ``(B, L)`` mask, transformers ≥ 5),
its output head runs at the kept positions only: a long prompt then costs no ``(B, L, V)``
logits.  Training keeps the label positions (student and teachers), evaluation the positions
whose outputs score a continuation.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


@functools.cache
def _slices_with_mask() -> bool:
    """Whether this transformers slices hidden states by a boolean ``(B, L)`` ``logits_to_keep``."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[True, False]]))
    return tuple(probe.shape) == (1, 1)


@functools.cache
def _accepts_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters and _slices_with_mask()


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether ``model`` (a transformers model, or a PEFT model around one) can return logits
    at the positions of a boolean ``logits_to_keep`` mask only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _accepts_keep(type(base))


def with_keep(model: torch.nn.Module, inputs: dict[str, Any], keep: torch.Tensor) -> dict:
    """``inputs`` plus ``logits_to_keep=keep`` where ``model`` supports it."""
    return {**inputs, "logits_to_keep": keep} if keeps_logits(model) else inputs


def packed_logits(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(N, V)`` logits at ``keep``'s positions, whether the model applied ``keep`` or not."""
    return logits if logits.dim() == 2 else logits[keep]


def logits_at(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    keep: torch.Tensor,
    runner: torch.nn.Module | None = None,
) -> torch.Tensor:
    """``(N, V)`` logits of ``model`` at ``keep``'s positions (computed there only, where it
    supports that); ``runner`` (default ``model``) runs the forward, e.g. an FSDP wrapper."""
    return packed_logits((runner or model)(**with_keep(model, inputs, keep)).logits, keep)


def fit_width(logits: torch.Tensor, width: int) -> torch.Tensor:
    """A teacher's logits over the student's ``width`` ids, where their output layers differ in
    padding rows only (the tokenizer is shared; Qwen2.5 pads 3B to 151,936 rows, 7B to
    152,064): extra ids are dropped, missing ones get no probability (a logit far below the
    rest, finite so that ``0 * log 0`` terms stay 0 at any temperature and precision)."""
    have = logits.shape[-1]
    if have >= width:
        return logits[..., :width]
    floor = logits.detach().amin() - 1e4
    pad = floor.expand(*logits.shape[:-1], width - have).to(logits.dtype)
    return torch.cat([logits, pad], dim=-1)
