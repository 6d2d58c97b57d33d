"""The MUSCLE losses against a naive per-token Python loop: values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from muscle.training.config import MASKS
from muscle.training.losses import TopK, compat_loss, label_positions, topk_from_logits

B, L, V = 3, 7, 11


def _batch(seed: int = 0, pad_rows: bool = True):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    v1 = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    v2 = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (B, L), generator=g)
    # Make a few student/teacher predictions right so every mask branch is exercised.
    for b in range(B):
        for t in range(L - 1):
            if (b + t) % 3 == 0:
                s[b, t, labels[b, t + 1]] += 6
            if (b + 2 * t) % 4 == 0:
                v1[b, t, labels[b, t + 1]] += 6
    if pad_rows:
        labels[0, :2] = -100  # prompt masked
        labels[1, -3:] = -100  # right padding
    return s, v1, v2, labels


def _lsm(x: torch.Tensor) -> list[torch.Tensor]:
    """log-softmax of a 1-D tensor, written out by hand."""
    mx = max(float(v.detach()) for v in x)
    z = sum(torch.exp(v - mx) for v in x)
    return [v - mx - torch.log(z) for v in x]


def _kl_naive(t: torch.Tensor, s: torch.Tensor, T: float) -> torch.Tensor:
    q = _lsm(t / T)
    p = _lsm(s / T)
    return sum(torch.exp(qi) * (qi - pi) for qi, pi in zip(q, p, strict=True))


def _naive(s, labels, v1, v2, mask, T, ce_weight=None, t2=True, alpha=1.0, beta=5.0):
    """Per-token loop, straight from the definitions in the issue and the paper."""
    scale = T * T if t2 else 1.0
    total = 0.0
    n = 0
    # sequence-likelihood decisions first
    seq_dec = {}
    for b in range(labels.shape[0]):
        ss, sv = 0.0, 0.0
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            ss += float(_lsm(s[b, t].detach())[y])
            sv += float(_lsm(v1[b, t])[y])
        seq_dec[b] = ss < sv
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            n += 1
            ce = -_lsm(s[b, t])[y]
            if mask == "none":
                total = total + ce
                continue
            if mask == "ensemble":  # KD from the geometric mean of the two teachers
                mix = torch.stack(
                    [(a + c) / 2 for a, c in zip(_lsm(v1[b, t]), _lsm(v2[b, t]), strict=True)]
                )
                comp = scale * _kl_naive(mix, s[b, t], T)
                total = total + (
                    comp if ce_weight is None else ce_weight * comp + (1 - ce_weight) * ce
                )
                continue
            kl1 = _kl_naive(v1[b, t], s[b, t], T)
            if mask == "focal":
                w = alpha + beta * (1.0 if int(torch.argmax(v1[b, t])) == y else 0.0)
                total = total + ce + w * scale * kl1
                continue
            s_arg = int(torch.argmax(s[b, t]))
            if mask == "student-wrong":
                m = s_arg != y
            elif mask == "old-correct":
                m = int(torch.argmax(v1[b, t])) == y
            elif mask == "old-all":
                m = True
            elif mask == "token-likelihood":
                m = float(_lsm(s[b, t])[y]) < float(_lsm(v1[b, t])[y])
            else:
                m = seq_dec[b]
            comp = scale * (kl1 if m else _kl_naive(v2[b, t], s[b, t], T))
            total = total + (comp if ce_weight is None else ce_weight * comp + (1 - ce_weight) * ce)
    return total / max(n, 1), n


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_loss_and_grad_match_naive_loop(mask: str, T: float) -> None:
    s, v1, v2, labels = _batch()
    s1 = s.clone().requires_grad_(True)
    out = compat_loss(s1, labels, v1=v1, v2=v2, mask=mask, temperature=T)
    out.loss.backward()
    s2 = s.clone().requires_grad_(True)
    ref, n = _naive(s2, labels, v1, v2, mask, T)
    ref.backward()
    assert out.n_tokens == n
    assert out.loss.detach().item() == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-6)
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-4, atol=1e-6)
    # the loss never flows into the teachers' side
    assert not v1.requires_grad and not v2.requires_grad


@pytest.mark.parametrize("mask", ["student-wrong", "old-correct", "focal"])
def test_half_precision_teachers_are_read_as_float32(mask: str) -> None:
    """``--teacher-dtype bfloat16``: the loss reads bfloat16 teacher logits exactly as their
    float32 values (no arithmetic in half precision); the student stays float32."""
    s, v1, v2, labels = _batch(seed=5)
    s = s.float()
    v1h, v2h = v1.bfloat16(), v2.bfloat16()
    x = s.clone().requires_grad_(True)
    out = compat_loss(x, labels, v1=v1h, v2=v2h, mask=mask)
    out.loss.backward()
    y = s.clone().requires_grad_(True)
    ref = compat_loss(y, labels, v1=v1h.float(), v2=v2h.float(), mask=mask)
    ref.loss.backward()
    assert out.loss.dtype == torch.float32
    assert out.loss.detach().item() == ref.loss.detach().item()
    assert torch.equal(x.grad, y.grad)
    # and the naive float64 loop on those values agrees
    naive, _ = _naive(s.double(), labels, v1h.double(), v2h.double(), mask, 2.0)
    assert out.loss.detach().item() == pytest.approx(float(naive), rel=1e-5)


@pytest.mark.parametrize("mask", ["student-wrong", "old-correct", "token-likelihood", "ensemble"])
def test_ce_weight_and_t2_option(mask: str) -> None:
    s, v1, v2, labels = _batch(seed=3)
    for lam, t2 in [(0.3, True), (0.7, False), (1.0, True), (0.0, True)]:
        x = s.clone().requires_grad_(True)
        out = compat_loss(
            x, labels, v1=v1, v2=v2, mask=mask, temperature=3.0, ce_weight=lam, kl_t2_scale=t2
        )
        out.loss.backward()
        y = s.clone().requires_grad_(True)
        ref, _ = _naive(y, labels, v1, v2, mask, 3.0, ce_weight=lam, t2=t2)
        ref.backward()
        assert out.loss.item() == pytest.approx(float(ref), rel=1e-5)
        assert torch.allclose(x.grad, y.grad, rtol=1e-4, atol=1e-7)


def test_ce_weight_zero_is_plain_cross_entropy() -> None:
    s, v1, v2, labels = _batch(seed=4)
    a = compat_loss(s, labels, v1=v1, v2=v2, mask="student-wrong", ce_weight=0.0)
    b = compat_loss(s, labels, mask="none")
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-9)


@pytest.mark.parametrize("mask", MASKS)
def test_all_padding_gives_zero_loss_and_zero_grad(mask: str) -> None:
    s, v1, v2, labels = _batch()
    labels = torch.full_like(labels, -100)
    x = s.clone().requires_grad_(True)
    out = compat_loss(x, labels, v1=v1, v2=v2, mask=mask)
    out.loss.backward()
    assert out.n_tokens == 0
    assert out.loss.item() == 0.0
    assert torch.count_nonzero(x.grad) == 0
    assert all(math.isfinite(v) for v in out.terms.values())


def test_mask_all_aligned_and_none_aligned_edge_cases() -> None:
    """student-wrong with a student always right → pure v2 KD; always wrong → pure v1 KD."""
    s, v1, v2, labels = _batch(pad_rows=False)
    right = torch.full_like(s, -5.0)
    right.scatter_(-1, labels.roll(-1, dims=1)[..., None], 5.0)
    out = compat_loss(right, labels, v1=v1, v2=v2, mask="student-wrong")
    assert out.terms["aligned_v1"] == 0.0
    kd_v2 = compat_loss(right, labels, v1=v2, mask="old-all")
    assert out.loss.item() == pytest.approx(kd_v2.loss.item(), rel=1e-9)
    wrong = right.roll(1, dims=-1)
    out = compat_loss(wrong, labels, v1=v1, v2=v2, mask="student-wrong")
    assert out.terms["aligned_v1"] == 1.0
    kd_v1 = compat_loss(wrong, labels, v1=v1, mask="old-all")
    assert out.loss.item() == pytest.approx(kd_v1.loss.item(), rel=1e-9)


def test_num_items_divides_the_sum() -> None:
    s, v1, v2, labels = _batch()
    a = compat_loss(s, labels, v1=v1, v2=v2)
    b = compat_loss(s, labels, v1=v1, v2=v2, num_items=3 * a.n_tokens)
    assert b.loss.item() == pytest.approx(a.loss.item() / 3, rel=1e-9)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("tail", [True, False])
def test_topk_is_exact_when_k_is_vocab(mask: str, tail: bool) -> None:
    s, v1, v2, labels = _batch(seed=5)
    if mask == "ensemble":  # needs the teachers' full distributions
        with pytest.raises(ValueError, match="needs full-logit teachers"):
            compat_loss(
                s, labels, v1=topk_from_logits(v1, V), v2=topk_from_logits(v2, V), mask=mask
            )
        return
    T = 2.0 if tail else 1.5
    exact = compat_loss(s, labels, v1=v1, v2=v2, mask=mask, temperature=T)
    t = T if tail else None
    cached = compat_loss(
        s,
        labels,
        v1=topk_from_logits(v1, V, t),
        v2=topk_from_logits(v2, V, t),
        mask=mask,
        temperature=T,
    )
    assert cached.loss.item() == pytest.approx(exact.loss.item(), rel=1e-6)


def _peaked(seed: int, vocab: int = 400):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 9, vocab, generator=g) * 3
    # peaked teachers, as trained language models are; student near v2
    v1 = torch.randn(2, 9, vocab, generator=g) * 4
    v2 = s + 0.3 * torch.randn(2, 9, vocab, generator=g)
    labels = torch.randint(0, vocab, (2, 9), generator=g)
    return s, v1, v2, labels


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_topk_tail_bucket_is_a_close_lower_bound(T: float) -> None:
    s, v1, v2, labels = _peaked(0)
    exact = compat_loss(s, labels, v1=v1, v2=v2, temperature=T).loss.item()
    errs = []
    for k in (8, 64, 256):
        approx = compat_loss(
            s,
            labels,
            v1=topk_from_logits(v1, k, T),
            v2=topk_from_logits(v2, k, T),
            temperature=T,
        ).loss.item()
        assert approx <= exact + 1e-6  # merging the tail never increases a KL
        errs.append((exact - approx) / exact)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02


def test_topk_tail_gradient_matches_exact_for_full_vocab() -> None:
    s, v1, v2, labels = _peaked(1, vocab=50)
    a = s.clone().requires_grad_(True)
    compat_loss(a, labels, v1=v1, v2=v2).loss.backward()
    b = s.clone().requires_grad_(True)
    compat_loss(
        b, labels, v1=topk_from_logits(v1, 50, 2.0), v2=topk_from_logits(v2, 50, 2.0)
    ).loss.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_renormalised_topk_is_biased_at_high_temperature() -> None:
    """Why the cache stores logz: without the tail, a student equal to the teacher still
    looks wrong at T > 1 (its mass outside the top-k counts as error)."""
    s, _, _, labels = _peaked(2)
    same = compat_loss(s, labels, v1=s, mask="old-all", temperature=2.0).loss.item()
    tail = compat_loss(s, labels, v1=topk_from_logits(s, 16, 2.0), mask="old-all").loss.item()
    renorm = compat_loss(s, labels, v1=topk_from_logits(s, 16), mask="old-all").loss.item()
    assert same == pytest.approx(0.0, abs=1e-5) and tail == pytest.approx(0.0, abs=1e-4)
    assert renorm > 0.1


def test_topk_label_logp_bound_for_labels_outside_topk() -> None:
    from muscle.training.losses import _label_logp

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    full = torch.log_softmax(logits, -1)
    tk = TopK(*[x for x in topk_from_logits(logits, 2)])
    inside = _label_logp(tk, torch.tensor([1]))
    assert inside.item() == pytest.approx(full[0, 1].item())
    outside = _label_logp(tk, torch.tensor([3]))
    assert full[0, 3].item() <= outside.item() <= full[0, 1].item()


def test_unknown_mask_and_missing_teacher_raise() -> None:
    s, v1, v2, labels = _batch()
    with pytest.raises(ValueError, match="unknown mask"):
        compat_loss(s, labels, mask="bogus")
    with pytest.raises(ValueError, match="v2 teacher"):
        compat_loss(s, labels, v1=v1, mask="student-wrong")


@pytest.mark.parametrize("mask", ["student-wrong", "old-correct", "token-likelihood"])
def test_logged_terms_add_up_to_the_loss(mask: str) -> None:
    s, v1, v2, labels = _batch(seed=6)
    out = compat_loss(s, labels, v1=v1, v2=v2, mask=mask, temperature=2.0)
    parts = 4.0 * (out.terms["kd_v1"] + out.terms["kd_v2"])
    assert float(parts) == pytest.approx(out.loss.item(), rel=1e-6)
    assert 0.0 < float(out.terms["aligned_v1"]) < 1.0
    assert "ce" not in out.terms
    with_ce = compat_loss(s, labels, v1=v1, v2=v2, mask=mask, ce_weight=0.25)
    expected = 0.25 * out.loss.item() + 0.75 * float(with_ce.terms["ce"])
    assert with_ce.loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "mask,topk",
    # the ensemble objective takes full-logit teachers only
    [(m, t) for m in MASKS for t in (False, True) if not (t and m == "ensemble")],
)
def test_packed_label_positions_give_the_same_loss_and_grad(mask: str, topk: bool) -> None:
    """Logits computed at the label positions only (``logits_to_keep=label_positions(labels)``,
    ``packed=True``) give the loss and gradients of the full ``(B, L, V)`` logits."""
    s, v1, v2, labels = _batch(seed=7)
    keep = label_positions(labels)
    # the mask marks exactly the positions t with a label at t + 1: a hand count
    want = [(b, t) for b in range(B) for t in range(L - 1) if labels[b, t + 1] != -100]
    assert keep.nonzero().tolist() == [list(p) for p in want]
    if topk:
        t1, t2 = topk_from_logits(v1, V, 2.0), topk_from_logits(v2, V, 2.0)
        p1, p2 = (TopK(*(x[keep] for x in t)) for t in (t1, t2))
    else:
        t1, t2, p1, p2 = v1, v2, v1[keep], v2[keep]
    full = s.clone().requires_grad_(True)
    ref = compat_loss(full, labels, v1=t1, v2=t2, mask=mask)
    ref.loss.backward()
    rows = s[keep].clone().requires_grad_(True)
    out = compat_loss(rows, labels, v1=p1, v2=p2, mask=mask, packed=True)
    out.loss.backward()
    assert out.n_tokens == ref.n_tokens == len(want)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-12)
    assert torch.allclose(rows.grad, full.grad[keep], rtol=1e-10, atol=1e-12)
    assert float(full.grad[~keep].abs().sum()) == 0.0  # the dropped positions had no gradient
    for k, v in ref.terms.items():
        assert out.terms[k].item() == pytest.approx(v.item(), rel=1e-12), k
    with pytest.raises(ValueError, match="packed logits hold"):
        compat_loss(rows[1:], labels, v1=p1, v2=p2, mask=mask, packed=True)


def _bucket_kl_float64(teacher: torch.Tensor, student: torch.Tensor, k: int, T: float):
    """Reference: KL over the teacher's top-k ids plus one bucket for the rest, per row, in
    float64 with explicit sums over the vocabulary (no cancellation)."""
    q = torch.softmax(teacher.double() / T, -1)
    p = torch.softmax(student.double() / T, -1)
    top = torch.log_softmax(teacher.double(), -1).topk(k, -1).indices
    out = []
    for r in range(q.shape[0]):
        inside = torch.zeros(q.shape[-1], dtype=torch.bool)
        inside[top[r]] = True
        kl = float((q[r, inside] * (q[r, inside].log() - p[r, inside].log())).sum())
        qt, pt = float(q[r, ~inside].sum()), float(p[r, ~inside].sum())
        out.append(kl + (qt * (math.log(qt) - math.log(pt)) if qt > 0 else 0.0))
    return out


def test_topk_tail_holds_for_a_confident_student() -> None:
    """A student far more confident than the teacher (its tail below float32's resolution of
    1 - sum(top-k)): the bucketed KL stays the float64 reference and a lower bound of the exact
    KL, and the tail's gradient keeps pulling the student's tail up."""
    g = torch.Generator().manual_seed(3)
    V, k, T = 1000, 8, 1.0
    teacher = torch.randn(1, 2, V, generator=g)
    top = torch.log_softmax(teacher[0, 0], -1).topk(k).indices
    student = torch.zeros(1, 2, V)
    student[..., top[0]] = 25.0  # sure of the teacher's first choice: its tail mass ~1e-8
    labels = torch.tensor([[0, 0]])
    exact = compat_loss(student, labels, v1=teacher, mask="old-all", temperature=T).loss.item()
    s = student.clone().requires_grad_(True)
    cached = compat_loss(
        s, labels, v1=topk_from_logits(teacher, k, T), mask="old-all", temperature=T
    )
    ref = _bucket_kl_float64(teacher[0, :1], student[0, :1], k, T)[0] * T * T
    assert cached.loss.item() == pytest.approx(ref, rel=1e-4)
    assert cached.loss.item() <= exact + 1e-4
    cached.loss.backward()
    tail = torch.ones(V, dtype=torch.bool)
    tail[top] = False
    assert (s.grad[0, 0, tail] < 0).all()  # the teacher's tail mass pulls the student's up


def test_teacher_without_mass_on_some_tokens_gives_a_finite_loss() -> None:
    """-inf teacher logits (a masked vocabulary) are 0 · log 0 = 0 in the KL, live and cached."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(1, 3, 12, generator=g)
    t = torch.randn(1, 3, 12, generator=g)
    t[..., 5:] = float("-inf")
    labels = torch.tensor([[1, 2, 3]])
    ref = 0.0
    for pos in range(2):
        q = torch.softmax(t[0, pos, :5].double() / 2, -1)
        p = torch.log_softmax(s[0, pos].double() / 2, -1)[:5]
        ref += float((q * (q.log() - p)).sum()) * 4 / 2
    for teacher in (t, topk_from_logits(t, 5, 2.0), topk_from_logits(t, 8, 2.0)):
        a = s.clone().requires_grad_(True)
        out = compat_loss(a, labels, v1=teacher, mask="old-all", temperature=2.0)
        out.loss.backward()
        assert out.loss.item() == pytest.approx(ref, rel=1e-5)
        assert torch.isfinite(a.grad).all()


def test_a_global_batch_without_label_tokens_gives_zero() -> None:
    s, v1, v2, labels = _batch()
    out = compat_loss(s, torch.full_like(labels, -100), v1=v1, v2=v2, num_items=torch.tensor(0))
    assert out.loss.item() == 0.0
