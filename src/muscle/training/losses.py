"""MUSCLE losses: pure functions of logits and labels.

All objectives are per token, on causal-LM positions (the logits at position ``t`` predict the
label at ``t + 1``), and summed over label tokens (label ``-100`` = ignored; padding carries
``-100``).  The sum is divided by ``num_items`` when given (the Trainer's count of label tokens
over the whole accumulated, multi-device batch) or else by the number of label tokens here.

Notation: ``p_s`` student, ``p_v1`` old task model, ``p_v2`` new task model, all at temperature
``T`` for the distillation terms; ``KL(p_t || p_s)`` is scaled by ``T**2`` when ``kl_t2_scale``
(default, Hinton et al. 2015: keeps gradient magnitudes comparable across temperatures).

Masks (``m = 1``: align to v1, else to v2):

- ``student-wrong`` (MUSCLE Eq. 1): ``m = 1[argmax p_s != label]``
- ``old-correct``: ``m = 1[argmax p_v1 == label]``
- ``old-all``: ``m = 1`` (KD from v1 on every token)
- ``token-likelihood``: ``m = 1[p_s(label) < p_v1(label)]`` (at T = 1)
- ``sequence-likelihood``: the same, decided once per sequence from summed log-likelihoods
- ``focal`` (positive-congruent training, Yan et al. 2021): ``CE + (alpha + beta*1[v1 correct])
  * KL(p_v1 || p_s)``
- ``ensemble`` (beyond the paper; ELODI-style, Zhao et al. 2022): on every token, KD from the
  ensemble of the two task models, ``log q = (log p_v1 + log p_v2) / 2`` renormalised (their
  geometric mean; the token-level form of scoring a choice by the mean of the two models'
  log-likelihoods); full-logit teachers only
- ``none``: cross-entropy only (the vanilla update)

With ``ce_weight = lam`` the KD masks become ``lam * L_comp + (1 - lam) * CE`` (paper Eq. 5).

With ``packed=True`` the student's logits and the teachers hold the label positions only,
``(N, V)`` (or ``(N, k)``) in the row-major order of ``labels[:, 1:] != -100``: what
``logits_to_keep`` returns for that boolean mask, so no logits are computed for prompt tokens
(see :func:`label_positions`).

Teachers are given either as full logits ``(B, L, V)`` or as a :class:`TopK` cache entry
(top-k log-probabilities at T = 1 and their token ids, ``(B, L, k)``, plus
``logz = logsumexp(log p / T)`` over the full vocabulary, ``(B, L)``).  The cache uses *top-k
plus a tail bucket*: the teacher's tempered probabilities of its k ids are exact
(``q_i = exp(logp_i / T - logz)``), the rest of the vocabulary is one outcome with mass
``1 - sum q_i``, the student is read the same way (its exact probabilities of those k ids and
its remaining mass), and the KL is taken over these k + 1 outcomes.  That is a lower bound of
the exact KL (merging outcomes never increases it), exact when ``k = V``, and what it drops is
only how the teacher and student spread their tail mass.  Without ``logz`` the teacher is the
renormalised top-k distribution ``softmax(logp_i / T)`` over its k ids (biased upwards at
T > 1 because the student's mass outside the k ids counts as error).  The teacher's probability of a
label outside its top-k (needed by the likelihood masks) is bounded by
``min(p_k, 1 - sum_topk p)`` and that bound is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from muscle.training.config import MASKS


def needs_teachers(mask: str) -> tuple[bool, bool]:
    """Which teachers ``mask`` needs: ``(v1, v2)``."""
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}")
    return mask != "none", mask not in ("none", "old-all", "focal")  # ensemble: both


class TopK(NamedTuple):
    """A cached teacher: top-k log-probabilities (T = 1, full-vocabulary normalised), their
    ids, and optionally ``logz = logsumexp(log p / T)`` over the full vocabulary, which makes
    the tempered probabilities of the k ids exact and gives the tail mass (see module doc)."""

    logp: torch.Tensor
    idx: torch.Tensor
    logz: torch.Tensor | None = None


Teacher = torch.Tensor | TopK


@dataclass
class LossOutput:
    """The loss (to backpropagate) and detached per-token means of each term."""

    loss: torch.Tensor
    n_tokens: int
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision → float32 for the softmax arithmetic; float32/64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` boolean mask of the positions whose logits predict a label (``labels[:, t +
    1] != -100``): pass it as ``logits_to_keep`` and the model returns ``(N, V)`` logits, the
    ``packed`` layout of :func:`compat_loss`."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


def _select(x: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
    """Positions ``0..L-2`` of ``x`` (the predicting positions) where ``sel`` holds; ``None``:
    ``x`` is already packed."""
    return x if sel is None else x[:, :-1][sel]


def _select_teacher(t: Teacher, sel: torch.Tensor | None) -> Teacher:
    if isinstance(t, TopK):
        logz = None if t.logz is None else _upcast(_select(t.logz, sel))
        return TopK(_upcast(_select(t.logp, sel)), _select(t.idx, sel).long(), logz)
    return _upcast(_select(t, sel))


def _kl(teacher: Teacher, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token ``KL(q_T || p_s,T)`` for student logits ``s`` ``(N, V)``."""
    if isinstance(teacher, TopK):
        p_all = torch.log_softmax(s / temperature, dim=-1)
        if teacher.logz is not None:
            q_log = teacher.logp / temperature - teacher.logz[:, None]
            return _kl_topk_tail(q_log, p_all, teacher.idx)
        q_log = torch.log_softmax(teacher.logp / temperature, dim=-1)
        return _plogq(q_log, p_all.gather(-1, teacher.idx)).sum(-1)
    with torch.no_grad():
        q_log = torch.log_softmax(teacher / temperature, dim=-1)
    return _TemperedKL.apply(s, q_log, temperature)


class _TemperedKL(torch.autograd.Function):
    """``KL(q || softmax(s / T))`` per row, with the gradient w.r.t. the student logits ``s``
    written out, ``(softmax(s / T) - q) / T``: the same values and gradients as autograd through
    log-softmax, with fewer full-vocabulary temporaries (the teacher gets no gradient)."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, q_log: torch.Tensor, temperature: float) -> torch.Tensor:
        p_log = torch.log_softmax(s / temperature, dim=-1)
        q = q_log.exp()
        # 0 · log 0 = 0 where the teacher gives a token no mass (a -inf logit)
        kl = torch.einsum("nv,nv->n", q, torch.where(q > 0, q_log - p_log, 0.0))
        ctx.save_for_backward(p_log, q)
        ctx.temperature = temperature
        return kl

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        p_log, q = ctx.saved_tensors
        return (p_log.exp() - q).mul_(grad[:, None] / ctx.temperature), None, None


def _pick_rows(
    m: torch.Tensor, a: torch.Tensor, b: torch.Tensor, sel: torch.Tensor | None
) -> torch.Tensor:
    """Full-logit teachers: per selected position, ``a``'s logits where ``m`` else ``b``'s
    (float32, ``(N, V)``), read straight from the ``(B, L, V)`` (or packed) tensors."""
    if sel is None:
        where: tuple[torch.Tensor, ...] = (torch.arange(m.numel(), device=m.device),)
    else:
        where = sel.nonzero(as_tuple=True)
    dtype = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
    out = torch.empty((m.numel(), a.shape[-1]), dtype=dtype, device=a.device)
    out[m] = a[tuple(w[m] for w in where)].to(out.dtype)
    out[~m] = b[tuple(w[~m] for w in where)].to(out.dtype)
    return out


def _plogq(q_log: torch.Tensor, p_log: torch.Tensor) -> torch.Tensor:
    """Elementwise ``q (log q - log p)``, 0 where ``q`` is 0 (no 0 · -inf = NaN)."""
    q = q_log.exp()
    return torch.where(q > 0, q * (q_log - p_log), 0.0)


def _kl_topk_tail(q_log: torch.Tensor, p_all: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """KL over the k cached ``idx`` plus one bucket for the rest of the vocabulary; ``q_log``
    are the teacher's exact tempered log-probabilities of its k ids, ``p_all`` the student's
    over the whole vocabulary.  Both tail masses come from log-space sums: ``1 - sum(p_k)``
    rounds to 0 in float32 once a confident student's tail is below ~1e-7, which broke the
    bound and zeroed the tail's gradient."""
    kl = _plogq(q_log, p_all.gather(-1, idx)).sum(-1)
    if idx.shape[-1] >= p_all.shape[-1]:  # every id cached: no tail
        return kl
    q_tail = (-torch.expm1(torch.logsumexp(q_log, -1).clamp(max=0.0))).clamp(min=0.0)
    outside = torch.ones_like(p_all, dtype=torch.bool).scatter_(-1, idx, False)
    p_tail_log = torch.logsumexp(p_all.masked_fill(~outside, float("-inf")), -1)
    q_tail_log = torch.log(q_tail.clamp(min=torch.finfo(q_tail.dtype).tiny))
    return kl + torch.where(q_tail > 0, q_tail * (q_tail_log - p_tail_log), 0.0)


def _where_teacher(m: torch.Tensor, a: Teacher, b: Teacher) -> Teacher:
    """Per token, teacher ``a`` where ``m`` else ``b`` (one KL instead of two)."""
    if isinstance(a, TopK) and isinstance(b, TopK):
        mk = m[:, None]
        logz = None
        if a.logz is not None and b.logz is not None:
            logz = torch.where(m, a.logz, b.logz)
        return TopK(torch.where(mk, a.logp, b.logp), torch.where(mk, a.idx, b.idx), logz)
    if isinstance(a, TopK) or isinstance(b, TopK):
        raise ValueError("both teachers must be full logits or both top-k")
    return torch.where(m[:, None], a, b)


def _ensemble(t1: Teacher, v2: Teacher, sel: torch.Tensor | None) -> torch.Tensor:
    """The two teachers' geometric mean, ``(log p_v1 + log p_v2) / 2`` (as logits, ``(N, V)``)."""
    if isinstance(t1, TopK) or isinstance(v2, TopK):
        raise ValueError("mask 'ensemble' needs full-logit teachers, not a top-k cache")
    t2 = _select_teacher(v2, sel)
    return (torch.log_softmax(t1, dim=-1) + torch.log_softmax(t2, dim=-1)) / 2  # type: ignore[arg-type]


def _ce(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(s, y, reduction="none") if y.numel() else s.sum(-1)


def _argmax(teacher: Teacher) -> torch.Tensor:
    if isinstance(teacher, TopK):
        return teacher.idx.gather(-1, teacher.logp.argmax(-1, keepdim=True)).squeeze(-1)
    return teacher.argmax(-1)


def _label_logp(teacher: Teacher, y: torch.Tensor) -> torch.Tensor:
    """Teacher log-probability (T = 1) of each label; top-k: bound for labels outside top-k."""
    if isinstance(teacher, TopK):
        hit = teacher.idx == y[:, None]
        inside = torch.where(hit, teacher.logp, torch.full_like(teacher.logp, -torch.inf))
        inside = inside.max(-1).values
        mass = teacher.logp.exp().sum(-1).clamp(max=1.0)
        tail = torch.log1p(-mass + 1e-12).clamp(min=-1e4)
        bound = torch.minimum(teacher.logp.min(-1).values, tail)
        return torch.where(hit.any(-1), inside, bound)
    return torch.log_softmax(teacher, dim=-1).gather(-1, y[:, None]).squeeze(-1)


def compat_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    v1: Teacher | None = None,
    v2: Teacher | None = None,
    mask: str = "student-wrong",
    temperature: float = 2.0,
    ce_weight: float | None = None,
    kl_t2_scale: bool = True,
    focal_alpha: float = 1.0,
    focal_beta: float = 5.0,
    num_items: int | torch.Tensor | None = None,
    with_ce: bool = False,
    packed: bool = False,
) -> LossOutput:
    """The MUSCLE objective selected by ``mask`` (see the module docstring).

    ``student_logits`` ``(B, L, V)`` (``packed``: ``(N, V)`` at the label positions, as are
    the teachers), ``labels`` ``(B, L)`` (unshifted, ``-100`` ignored).
    ``terms`` holds detached per-token means (0-d tensors, no device sync): ``kd_v1`` and
    ``kd_v2`` (the two parts of the compatibility term, unscaled KL, zero where the token is
    aligned to the other teacher), ``aligned_v1`` (share of tokens aligned to v1) and ``ce``
    where cross-entropy is part of the loss or ``with_ce`` asks for it (then only reported).
    """
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose one of {', '.join(MASKS)}")
    need_v1, need_v2 = needs_teachers(mask)
    if need_v1 and v1 is None:
        raise ValueError(f"mask {mask!r} needs the v1 teacher")
    if need_v2 and v2 is None:
        raise ValueError(f"mask {mask!r} needs the v2 teacher")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")

    shifted = labels[:, 1:]
    sel = shifted != -100
    y = shifted[sel]  # (N,)
    n = int(y.numel())
    seq = _seq_ids(sel) if mask == "sequence-likelihood" else None
    if packed:
        if student_logits.shape[0] != n:
            raise ValueError(f"packed logits hold {student_logits.shape[0]} rows, labels {n}")
        sel = None
    s = _upcast(_select(student_logits, sel))  # (N, V)
    scale = temperature**2 if kl_t2_scale else 1.0
    terms: dict[str, torch.Tensor] = {}

    if mask == "none":
        tok = _ce(s, y)
        terms["ce"] = tok
    else:
        # student-wrong needs v1 only where the student is wrong: picked below, row by row
        t1 = None if mask == "student-wrong" else _select_teacher(v1, sel)  # type: ignore[arg-type]
        if mask == "focal":
            kl1 = _kl(t1, s, temperature)  # type: ignore[arg-type]
            correct = (_argmax(t1) == y).float()  # type: ignore[arg-type]
            ce = _ce(s, y)
            tok = ce + (focal_alpha + focal_beta * correct) * scale * kl1
            terms.update(ce=ce, kd_v1=kl1, aligned_v1=correct)
        else:
            if mask == "ensemble":
                kl = _kl(_ensemble(t1, v2, sel), s, temperature)  # type: ignore[arg-type]
                terms["kd_ensemble"] = kl
            else:
                with torch.no_grad():
                    m = _mask(mask, s, y, t1, seq, labels.shape[0])
                if mask == "old-all":
                    teacher = t1
                elif isinstance(v1, TopK) or isinstance(v2, TopK):
                    t1 = t1 if t1 is not None else _select_teacher(v1, sel)  # type: ignore[arg-type]
                    teacher = _where_teacher(m, t1, _select_teacher(v2, sel))  # type: ignore[arg-type]
                else:
                    teacher = _pick_rows(m, v1, v2, sel)  # type: ignore[arg-type]
                kl = _kl(teacher, s, temperature)  # type: ignore[arg-type]
                zero = torch.zeros_like(kl)
                terms.update(
                    kd_v1=torch.where(m, kl, zero), kd_v2=torch.where(m, zero, kl), aligned_v1=m
                )
            tok = scale * kl
            if ce_weight is not None:
                ce = _ce(s, y)
                terms["ce"] = ce
                tok = ce_weight * tok + (1.0 - ce_weight) * ce

    if with_ce and "ce" not in terms:
        with torch.no_grad():
            terms["ce"] = _ce(s, y)
    denom = num_items if num_items is not None else n
    # a global batch without label tokens (all prompt, or all padding) gives 0, not 0 / 0
    loss = tok.sum() / (denom.clamp(min=1) if torch.is_tensor(denom) else max(denom, 1))
    means = {
        k: (v.detach().float().mean() if n else torch.zeros((), device=s.device))
        for k, v in terms.items()
    }
    return LossOutput(loss=loss, n_tokens=n, terms=means)


def _seq_ids(sel: torch.Tensor) -> torch.Tensor:
    """The batch row of each selected position."""
    rows = torch.arange(sel.shape[0], device=sel.device)[:, None].expand_as(sel)
    return rows[sel]


def _mask(
    mask: str,
    s: torch.Tensor,
    y: torch.Tensor,
    t1: Teacher,
    seq: torch.Tensor | None,
    batch: int,
) -> torch.Tensor:
    """Boolean per-token mask, True where the student is aligned to v1."""
    if mask == "student-wrong":
        return s.argmax(-1) != y
    if mask == "old-correct":
        return _argmax(t1) == y
    if mask == "old-all":
        return torch.ones_like(y, dtype=torch.bool)
    s_ll = s.gather(-1, y[:, None]).squeeze(-1) - torch.logsumexp(s, dim=-1)
    v1_ll = _label_logp(t1, y)
    if mask == "token-likelihood":
        return s_ll < v1_ll
    if mask == "sequence-likelihood":
        assert seq is not None
        s_sum = torch.zeros(batch, dtype=s_ll.dtype, device=s_ll.device).index_add(0, seq, s_ll)
        v_sum = torch.zeros(batch, dtype=s_ll.dtype, device=s_ll.device).index_add(0, seq, v1_ll)
        return (s_sum < v_sum)[seq]
    raise ValueError(f"unknown mask {mask!r}")


def topk_from_logits(logits: torch.Tensor, k: int, temperature: float | None = None) -> TopK:
    """Top-k log-probabilities at T = 1 (sorted, descending) and their ids, as cached; with
    ``temperature``, also ``logz`` for the exact top-k-plus-tail KL at that temperature."""
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    vals, idx = logp.topk(min(k, logits.shape[-1]), dim=-1)
    logz = None if temperature is None else torch.logsumexp(logp / temperature, dim=-1)
    return TopK(vals, idx, logz)
