"""Compatibility metrics: hand-computed cases, statistics against independent references,
and hypothesis properties of the mergeable count tables."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muscle.metrics import (
    ContinuousCounts,
    DiscreteCounts,
    continuous_metrics,
    discrete_metrics,
    mcnemar_exact_p,
    newcombe_paired_interval,
    normal_mean_interval,
    wilson_interval,
)


def test_importing_metrics_and_compare_does_not_import_torch():
    code = (
        "import sys, muscle.metrics, muscle.compare, muscle.report;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'transformers' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --- hand-computed discrete case ------------------------------------------------------------
# i:        0  1  2  3  4  5  6  7  8  9
# old ok:   1  1  1  1  0  0  0  0  1  0
# new ok:   1  1  0  0  1  0  0  0  1  1
# old pred: a  b  c  d  e  f  g  h  i  j
# new pred: a  b  x  y  e  f  z  w  i  j
# both-correct: 0 1 8 (3); regression: 2 3 (2); gain: 4 9 (2); both wrong: 5 6 7 (3)
# both wrong with the same prediction: 5 (1); different: 6 7 (2)
OLD = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], bool)
NEW = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 1], bool)
OLD_PRED = list("abcdefghij")
NEW_PRED = list("abxyefzwij")


def test_discrete_hand_computed():
    same = np.array([a == b for a, b in zip(OLD_PRED, NEW_PRED, strict=True)])
    m = discrete_metrics(DiscreteCounts.from_arrays(OLD, NEW, same))
    assert m["n"] == 10
    assert m["accuracy_old"] == pytest.approx(5 / 10)
    assert m["accuracy_new"] == pytest.approx(5 / 10)
    assert (m["nf"], m["pf"], m["both_correct"], m["both_wrong"]) == (2, 2, 3, 3)
    assert m["nfr"] == pytest.approx(0.2)
    assert m["pfr"] == pytest.approx(0.2)
    # new wrong (2, 3, 5, 6, 7) with a changed prediction: 2, 3, 6, 7
    assert m["nfr_mc"] == pytest.approx(4 / 10)
    assert m["btc"] == pytest.approx(3 / 5)  # old-correct 0 1 2 3 8; stay correct 0 1 8
    assert m["bec"] == pytest.approx(3 / 5)  # new errors 2 3 5 6 7; old also wrong 5 6 7
    assert m["relative_nfr"] == pytest.approx(0.2 / (0.5 * 0.5))
    assert m["accuracy_delta"] == pytest.approx(0.0)
    assert m["mcnemar_p"] == pytest.approx(1.0)  # 2 vs 2 discordant: 2 * P(X <= 2 | 4) > 1


def test_discrete_without_predictions_has_no_nfr_mc():
    m = discrete_metrics(DiscreteCounts.from_arrays(OLD, NEW))
    assert m["nfr_mc"] is None
    assert m["nfr"] == pytest.approx(0.2)


def test_discrete_degenerate_denominators_are_null():
    m = discrete_metrics(DiscreteCounts.from_arrays(np.zeros(4, bool), np.ones(4, bool)))
    assert m["btc"] is None  # no old-correct instances
    assert m["bec"] is None  # no new errors
    assert m["relative_nfr"] is None  # acc_old * err_new == 0
    assert m["pfr"] == 1.0
    empty = discrete_metrics(DiscreteCounts())
    assert empty["nfr"] is None and empty["nfr_ci95"] is None and empty["mcnemar_p"] is None


# --- hand-computed continuous case ------------------------------------------------------------
def test_continuous_hand_computed():
    old = np.array([0.5, 0.2, 0.9, 0.4, 0.3])
    new = np.array([0.7, 0.2, 0.6, 0.45, 0.1])
    # D = +0.2, 0, -0.3, +0.05, -0.2
    m = continuous_metrics(ContinuousCounts.from_arrays(old, new, epsilon=0.0))
    assert (m["nf"], m["pf"]) == (2, 2)
    assert m["nfr"] == pytest.approx(0.4) and m["pfr"] == pytest.approx(0.4)
    assert m["m_g"] == pytest.approx((0.2 + 0.05) / 2)
    assert m["m_r"] == pytest.approx((0.3 + 0.2) / 2)
    assert m["mean_delta"] == pytest.approx(-0.25 / 5)
    assert m["mean_score_old"] == pytest.approx(2.3 / 5)
    assert m["mean_score_new"] == pytest.approx(2.05 / 5)
    lo, hi = m["accuracy_delta_ci95"]
    d = new - old
    half = 1.959963984540054 * d.std(ddof=1) / math.sqrt(5)
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    # with epsilon = 0.1 the +0.05 gain no longer counts
    m2 = continuous_metrics(ContinuousCounts.from_arrays(old, new, epsilon=0.1))
    assert (m2["nf"], m2["pf"]) == (2, 1)
    assert m2["m_g"] == pytest.approx(0.2)
    assert m2["epsilon"] == 0.1


def test_continuous_counts_refuse_to_merge_different_epsilon():
    a = ContinuousCounts.from_arrays([0.1], [0.2], epsilon=0.0)
    b = ContinuousCounts.from_arrays([0.1], [0.2], epsilon=0.1)
    with pytest.raises(ValueError):
        _ = a + b


# --- statistics ------------------------------------------------------------------------------
def test_wilson_textbook_value():
    # 2 successes of 10: the classic Wilson 95 % interval (0.0567, 0.5098)
    lo, hi = wilson_interval(2, 10)
    assert lo == pytest.approx(0.05668, abs=1e-4)
    assert hi == pytest.approx(0.50984, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0


def test_eval_summary_and_compare_give_one_wilson_interval():
    """``muscle eval``'s summary and ``muscle compare`` report the same interval for the same
    count (the summary had its own copy, 1.4e-17 instead of 0 for 0 of 24)."""
    from muscle.evaluation.stats import proportion

    for k, n in [(0, 24), (24, 24), (7, 24), (2, 10)]:
        assert proportion([True] * k + [False] * (n - k))["ci95"] == list(wilson_interval(k, n))
    assert proportion([])["ci95"] == [0.0, 1.0]
    assert wilson_interval(0, 0) is None


def _naive_mcnemar(b: int, c: int) -> float:
    m, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(m, i) * 0.5**m for i in range(k + 1)))


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 3), (2, 9), (10, 25), (88, 260), (7, 0)])
def test_mcnemar_exact_matches_naive_binomial(b, c):
    assert mcnemar_exact_p(b, c) == pytest.approx(_naive_mcnemar(b, c), rel=1e-9)


def test_mcnemar_log_space_path_matches_exact_integers():
    from fractions import Fraction

    b, c = 1180, 1320  # 2500 discordant pairs: above the exact-integer threshold
    m = b + c
    exact = Fraction(2 * sum(math.comb(m, i) for i in range(b + 1)), 2**m)
    assert mcnemar_exact_p(b, c) == pytest.approx(float(exact), rel=1e-9)
    assert mcnemar_exact_p(0, 0) == 1.0  # no discordant pair: nothing differs (statsmodels too)


def test_mcnemar_hand_value():
    # b = 1, c = 5: 2 * (1 + 6) / 64 = 0.21875
    assert mcnemar_exact_p(1, 5) == pytest.approx(0.21875)


def test_newcombe_interval_covers_at_nominal_rate():
    """Simulate paired tables from a known multinomial: about 95 % of intervals must contain
    the true accuracy difference (an independent check of the formula)."""
    rng = np.random.default_rng(0)
    probs = np.array([0.55, 0.08, 0.15, 0.22])  # both, old only, new only, neither
    true_diff = probs[2] - probs[1]
    n, trials = 200, 2000
    tables = rng.multinomial(n, probs, size=trials)
    hits = 0
    for a, b, c, d in tables:
        lo, hi = newcombe_paired_interval(int(a), int(b), int(c), int(d))
        hits += lo <= true_diff <= hi
    assert 0.93 <= hits / trials <= 0.97


def test_newcombe_interval_approaches_wald_for_large_n():
    a, b, c, d = 50_000, 8_000, 12_000, 30_000
    n = a + b + c + d
    diff = (c - b) / n
    se = math.sqrt((b + c) / n - diff**2) / math.sqrt(n)  # Wald for paired proportions
    lo, hi = newcombe_paired_interval(a, b, c, d)
    assert lo == pytest.approx(diff - 1.959963984540054 * se, abs=2e-4)
    assert hi == pytest.approx(diff + 1.959963984540054 * se, abs=2e-4)
    assert lo < diff < hi


def test_normal_mean_interval_single_and_empty():
    assert normal_mean_interval(0.3, 0.09, 1) is None  # one value: no spread to estimate
    assert normal_mean_interval(0.0, 0.0, 0) is None


# --- properties -------------------------------------------------------------------------------
bool_pairs = st.integers(min_value=0, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(bool_pairs)
def test_quadrants_sum_to_n(data):
    old, new, po, pn = (np.array(x) for x in data)
    c = DiscreteCounts.from_arrays(old, new, po == pn)
    assert c.both_correct + c.negative_flips + c.positive_flips + c.both_wrong == len(old)
    assert c.n == len(old)


@settings(max_examples=60, deadline=None)
@given(bool_pairs)
def test_nfr_of_a_to_b_is_pfr_of_b_to_a(data):
    old, new, _, _ = (np.array(x) for x in data)
    ab = discrete_metrics(DiscreteCounts.from_arrays(old, new))
    ba = discrete_metrics(DiscreteCounts.from_arrays(new, old))
    assert ab["nfr"] == ba["pfr"] and ab["pfr"] == ba["nfr"]
    assert ab["mcnemar_p"] == ba["mcnemar_p"]


@settings(max_examples=60, deadline=None)
@given(bool_pairs, st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_instance_order(data, rnd):
    old, new, po, pn = (np.array(x) for x in data)
    perm = np.array(rnd.sample(range(len(old)), len(old)), dtype=np.int64)
    a = discrete_metrics(DiscreteCounts.from_arrays(old, new, po == pn))
    b = discrete_metrics(DiscreteCounts.from_arrays(old[perm], new[perm], (po == pn)[perm]))
    assert a == b


@settings(max_examples=60, deadline=None)
@given(bool_pairs, st.integers(0, 60))
def test_merged_counts_equal_counts_of_concatenation(data, cut):
    old, new, po, pn = (np.array(x) for x in data)
    same = po == pn
    cut = min(cut, len(old))
    merged = DiscreteCounts.from_arrays(old[:cut], new[:cut], same[:cut]) + (
        DiscreteCounts.from_arrays(old[cut:], new[cut:], same[cut:])
    )
    whole = DiscreteCounts.from_arrays(old, new, same)
    assert np.array_equal(merged.table, whole.table)
    assert discrete_metrics(merged) == discrete_metrics(whole)


scores = st.floats(min_value=0, max_value=1, allow_nan=False)
score_pairs = st.integers(0, 40).flatmap(
    lambda n: st.tuples(
        st.lists(scores, min_size=n, max_size=n), st.lists(scores, min_size=n, max_size=n)
    )
)


@settings(max_examples=60, deadline=None)
@given(score_pairs, st.integers(0, 40), st.sampled_from([0.0, 0.05]))
def test_continuous_merge_and_symmetry(data, cut, eps):
    old, new = (np.array(x, dtype=float) for x in data)
    cut = min(cut, len(old))
    whole = ContinuousCounts.from_arrays(old, new, eps)
    merged = ContinuousCounts.from_arrays(old[:cut], new[:cut], eps) + (
        ContinuousCounts.from_arrays(old[cut:], new[cut:], eps)
    )
    assert np.allclose(merged.values, whole.values)
    ab, ba = (
        continuous_metrics(whole),
        continuous_metrics(ContinuousCounts.from_arrays(new, old, eps)),
    )
    assert ab["nfr"] == ba["pfr"] and ab["pfr"] == ba["nfr"]
    assert ab["nf"] + ab["pf"] <= len(old)
    # naive loop reference for the counts (a flip: |D| beyond epsilon + the rounding tolerance)
    from muscle.metrics.counts import FLIP_TOLERANCE

    d = [b - a for a, b in zip(old, new, strict=True)]
    m = eps + FLIP_TOLERANCE
    assert ab["nf"] == sum(x < -m for x in d) and ab["pf"] == sum(x > m for x in d)


def test_counts_round_trip_through_json_and_sum():
    import json

    rng = np.random.default_rng(3)
    parts = [
        DiscreteCounts.from_arrays(rng.random(50) < 0.5, rng.random(50) < 0.6, rng.random(50) < 0.3)
        for _ in range(4)
    ]
    gathered = [DiscreteCounts.from_dict(json.loads(json.dumps(p.to_dict()))) for p in parts]
    total = sum(gathered, DiscreteCounts())
    assert total.n == 200 and np.array_equal(total.table, sum(p.table for p in parts))
    c = ContinuousCounts.from_arrays(rng.random(30), rng.random(30), 0.05)
    back = ContinuousCounts.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back.epsilon == 0.05 and np.array_equal(back.values, c.values)


@settings(max_examples=50, deadline=None)
@given(bool_pairs, st.integers(1, 4), st.randoms(use_true_random=False))
def test_grouped_counts_equal_counts_of_each_group(data, n_groups, rnd):
    old, new, po, pn = (np.array(x) for x in data)
    groups = np.array([rnd.randrange(n_groups) for _ in range(len(old))], dtype=np.int64)
    same = po == pn
    grouped = DiscreteCounts.grouped(old, new, same, groups, n_groups)
    for g in range(n_groups):
        m = groups == g
        assert np.array_equal(
            grouped[g].table, DiscreteCounts.from_arrays(old[m], new[m], same[m]).table
        )
    cont = ContinuousCounts.grouped(old * 0.7, new * 0.4, 0.1, groups, n_groups)
    for g in range(n_groups):
        m = groups == g
        ref = ContinuousCounts.from_arrays(old[m] * 0.7, new[m] * 0.4, 0.1)
        assert np.allclose(cont[g].values, ref.values)


def test_newcombe_interval_published_example():
    """Cavo et al. (2012) paired table from Fagerland, Lydersen & Laake, *Statistical Analysis
    of Contingency Tables* (ch. 8): estimate -0.0621, 95 % CI -0.1186 to -0.0046."""
    # rows = the "new" outcome, columns = the "old": 59 both, 6 new only, 16 old only, 80 neither
    lo, hi = newcombe_paired_interval(a=59, b=16, c=6, d=80)
    assert (lo, hi) == pytest.approx((-0.1186, -0.0046), abs=6e-5)


def test_mcnemar_published_example():
    # Cavo et al. (2012), 16 vs 6 discordant pairs: exact conditional P = 0.052479 (Fagerland)
    assert mcnemar_exact_p(16, 6) == pytest.approx(0.052479, abs=5e-7)


def test_a_difference_equal_to_epsilon_is_no_flip_despite_float_rounding():
    """0.55 - 0.5 is 0.05000000000000004 in floats: at epsilon 0.05 it is no gain (nor 0.45 a
    regression); clearly larger differences still are."""
    from muscle.metrics import ContinuousCounts, continuous_metrics

    old = np.array([0.5, 0.5, 0.5, 0.5, 0.3])
    new = np.array([0.55, 0.45, 0.56, 0.44, 0.35])
    assert new[0] - old[0] > 0.05  # the rounding at issue
    m = continuous_metrics(ContinuousCounts.from_arrays(old, new, epsilon=0.05))
    assert (m["pf"], m["nf"]) == (1, 1)  # only 0.56 and 0.44 flip
    (g,) = ContinuousCounts.grouped(old, new, 0.05, np.zeros(5, dtype=int), 1)
    assert continuous_metrics(g)["pf"] == 1 and continuous_metrics(g)["nf"] == 1
