"""checked_transitions (the small-array route of attention_rollout: validation and the rollout's
transition matrices in one numba read) and the bit-level range check it shares with checked_fuse,
against slow, independent numpy code in float64."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, attention_rollout
from flowlens.core.capture import check_probabilities
from flowlens.core.onepass import checked_fuse, checked_transitions


def oracle_transitions(probs, residual):
    """float64 rownorm((1 - r)·mean_heads(A) + r·I), row by row in plain loops."""
    num_layers, _, n, _ = probs.shape
    out = np.zeros((num_layers, n, n))
    for layer in range(num_layers):
        fused = probs[layer].astype(np.float64).mean(axis=0)
        for q in range(n):
            row = (1 - residual) * fused[q]
            row[q] += residual
            total = row.sum()
            out[layer, q] = row / (total if total > 0 else 1.0)
    return out


def oracle_rollout(probs, rows, residual, all_layers):
    """float64 rows of J_l = T_l ⋯ T_0 by full n×n products (every layer, or only the last)."""
    joint, out = None, []
    for t in oracle_transitions(probs, residual):
        joint = t if joint is None else t @ joint
        out.append(joint[rows])
    return np.stack(out) if all_layers else out[-1][None]


def softmax(shape, seed, dtype, peak=3.0):
    logits = np.random.default_rng(seed).normal(size=shape) * peak
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)


def messages(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except FlowlensError as err:
            return "error", str(err)
    return "warnings", [str(w.message) for w in caught]


def test_literal_transitions():
    # one layer, two heads over two tokens: head mean [[.5, .5], [.25, .75]];
    # r = 0.5: 0.5·mean + 0.5·I = [[.75, .25], [.125, .875]] (rows already sum to 1)
    p = np.array([[[[0.5, 0.5], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    got = checked_transitions(p, "attention", residual=0.5, dtype=np.float64)
    np.testing.assert_allclose(got[0], [[0.75, 0.25], [0.125, 0.875]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(checked_transitions(p, "attention", residual=1.0, dtype=np.float64)[0], np.eye(2))
    np.testing.assert_allclose(checked_transitions(p, "attention", residual=0.0, dtype=np.float64)[0],
                               [[0.5, 0.5], [0.25, 0.75]], rtol=0, atol=1e-15)


def test_zero_rows_keep_d_at_one():
    p = np.zeros((1, 1, 3, 3))
    p[0, 0, 0] = [0.0, 1.0, 0.0]  # rows 1 and 2 are all zero (masked tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows 1, 2 sum to 0: warned about, as check_probabilities does
        got = checked_transitions(p, "attention", residual=0.0, dtype=np.float64)
    np.testing.assert_array_equal(got[0], [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2, 3, 63, 64, 65]), layers=st.integers(1, 4), heads=st.integers(1, 3),
       residual=st.sampled_from([0.0, 1.0, 0.5, 0.3]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 1000))
def test_transitions_match_the_oracle(n, layers, heads, residual, dtype, seed):
    probs = softmax((layers, heads, n, n), seed, np.float64)
    expected = oracle_transitions(probs, residual)
    got = checked_transitions(probs, "attention", residual=residual, dtype=dtype)
    assert got.dtype == dtype and got.shape == (layers, n, n)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("value", "raises"), [
    (-0.0, False), (-1e-7, False), (-2e-6, True), (1.0 + 1e-7, False), (1.0 + 2e-6, True),
    (np.nan, True), (np.inf, True), (-np.inf, True), (7.5, True),
])
def test_range_check_says_what_check_probabilities_says(dtype, value, raises):
    att = softmax((2, 3, 6, 6), 1, dtype)
    att[1, 2, 4, 3] = value
    for fn in (lambda: checked_transitions(att, "attention", residual=0.5),
               lambda: checked_fuse(att, "attention")):
        got = messages(fn)
        assert got == messages(lambda: check_probabilities(att, "attention"))
        assert (got[0] == "error") == raises


def test_row_sum_warning_once_and_at_the_callers_line():
    att = softmax((2, 2, 10, 10), 0, np.float32)
    att[0, 1, 2] *= 0.5
    att[1, 0, 0, 0] = -0.0  # flagged by the bit check: check_probabilities warns, once
    with pytest.warns(UserWarning, match=r"worst row \(0, 1, 2\) sums to 0\.500000") as record:
        attention_rollout(att, query=[0])
    assert len(record) == 1 and record[0].filename == __file__


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([1, 2, 63, 64, 65, 255, 256, 257]), layers=st.integers(1, 3), heads=st.integers(1, 2),
       residual=st.sampled_from([0.0, 1.0, 0.5]), all_layers=st.booleans(),
       precision=st.sampled_from(["float32", "float64"]), data=st.data())
def test_attention_rollout_matches_the_oracle_around_the_size_switch(n, layers, heads, residual, all_layers,
                                                                     precision, data):
    probs = softmax((layers, heads, n, n), data.draw(st.integers(0, 1000)), np.float64)
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 70), unique=True))
    got = attention_rollout(probs, query=rows, residual=residual, all_layers=all_layers, precision=precision)
    expected = oracle_rollout(probs, rows, residual, all_layers)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 if precision == "float32" else 1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from([2, 3, 63, 64, 65]), all_layers=st.booleans(), data=st.data())
def test_valid_mask_matches_the_oracle_on_the_kept_tokens(n, all_layers, data):
    probs = softmax((2, 2, n, n), data.draw(st.integers(0, 1000)), np.float64)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    keep[0] = True
    idx = np.flatnonzero(keep)
    probs[..., ~keep] = 0.0  # kept rows sum to 1 over the kept keys; removed rows are garbage
    probs[:, :, idx] /= probs[:, :, idx].sum(-1, keepdims=True)
    sub = probs[:, :, idx[:, None], idx[None, :]]
    got = attention_rollout(probs, query=[0], valid=keep, all_layers=all_layers, precision="float64")
    expected = oracle_rollout(sub, [0], 0.5, all_layers)
    np.testing.assert_allclose(got[..., idx], expected, rtol=0, atol=1e-12)
    assert (got[..., ~keep] == 0).all()
