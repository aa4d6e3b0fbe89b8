"""checked_fuse: the one-read validation + head fusion behind attention_rollout, against the two-step
numpy route (check_probabilities then fuse_heads) it replaces, and float64 rollout against a float64 oracle;
checked_transitions (the small-array route: validation and the rollout's transition matrices in one numba
read) and the bit-level range check both share, against slow, independent float64 numpy code."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, attention_rollout
from flowlens.core.capture import check_probabilities
from flowlens.core.graph import fuse_heads
from flowlens.core.onepass import checked_fuse, checked_transitions, streamed_fuse


def softmax_attention(shape, seed=0, dtype=np.float32):
    logits = np.random.default_rng(seed).normal(size=shape) * 3
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads", ["mean", "max", 1, [0, 2]])
def test_fusion_and_row_sums_equal_the_two_step_route(dtype, in_dtype, heads):
    att = softmax_attention((3, 4, 37, 37), dtype=in_dtype)
    fused, sums = checked_fuse(att, "attention", heads=heads, dtype=dtype)
    expected = fuse_heads(att, heads, axis=1, dtype=dtype)
    assert fused.dtype == dtype
    if in_dtype == dtype or heads != "mean":
        np.testing.assert_array_equal(fused, expected)  # bit-identical to the one head fusion
    else:
        np.testing.assert_allclose(fused, expected, rtol=1e-6)
    np.testing.assert_allclose(sums, fused.astype(np.float64).sum(-1), rtol=0, atol=1e-12)


def messages(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except FlowlensError as err:
            return "error", str(err)
    return "warnings", [str(w.message) for w in caught]


@pytest.mark.parametrize("damage", ["nan", "inf", "logits", "row_sum", "clean"])
def test_checks_say_what_check_probabilities_says(damage):
    att = softmax_attention((2, 3, 20, 20), seed=1)
    valid = np.ones(20, dtype=bool)
    if damage == "nan":
        att[1, 2, 5, 7] = np.nan
    elif damage == "inf":
        att[0, 1, 3, 0] = np.inf
    elif damage == "logits":
        att[1, 0, 4, 4] = 7.5
    elif damage == "row_sum":
        att[1, 1, 9] *= 0.9
        att[0, 2, 3] *= 0.995
        valid[3] = False  # an invalid row's sum is not checked
    got = messages(lambda: checked_fuse(att, "attention", valid_rows=valid))
    assert got == messages(lambda: check_probabilities(att, "attention", valid_rows=valid))
    expected = {
        "nan": ("error", "first at index (1, 2, 5, 7)"), "inf": ("error", "first at index (0, 1, 3, 0)"),
        "logits": ("error", "got values in [0, 7.5]"), "row_sum": ("warnings", "worst row (1, 1, 9) sums to 0.9"),
    }
    if damage == "clean":
        assert got == ("warnings", [])
    else:
        kind, text = expected[damage]
        assert got[0] == kind and text in str(got[1])


def test_row_sum_warning_points_at_the_callers_line():
    att = softmax_attention((2, 2, 10, 10))
    att[0, 1, 2] *= 0.5
    with pytest.warns(UserWarning, match=r"worst row \(0, 1, 2\) sums to 0\.500000") as record:
        attention_rollout(att, query=[0])
    assert record[0].filename == __file__


def float64_oracle(attention, rows, residual=0.5):
    fused = attention.mean(axis=1)
    joint, out = None, []
    for a in fused:
        t = (1 - residual) * a + residual * np.eye(a.shape[0])
        t /= t.sum(axis=-1, keepdims=True)
        joint = t if joint is None else t @ joint
        out.append(joint[rows])
    return np.stack(out)


@pytest.mark.parametrize("n", [40, 300])  # both routes of rollout_rows (batched transitions / folded chain)
@pytest.mark.parametrize("rows", [[5], list(range(0, 40, 3))])
def test_float64_precision_is_float64_throughout(n, rows):
    att = softmax_attention((6, 3, n, n), seed=2, dtype=np.float64)
    expected = float64_oracle(att, rows)
    every = attention_rollout(att, query=rows, precision="float64")
    last = attention_rollout(att, query=rows, all_layers=False, precision="float64")
    np.testing.assert_allclose(every, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(last[0], expected[-1], rtol=0, atol=1e-12)
    # float32 products stay near, but are measurably not float64 (so the test above can fail)
    f32 = attention_rollout(att, query=rows)
    assert 1e-12 < np.abs(f32 - expected).max() < 1e-6


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
    probs = softmax_attention((layers, heads, n, n), seed, np.float64)
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
    att = softmax_attention((2, 3, 6, 6), 1, dtype)
    att[1, 2, 4, 3] = value
    for fn in (lambda: checked_transitions(att, "attention", residual=0.5),
               lambda: checked_fuse(att, "attention")):
        got = messages(fn)
        assert got == messages(lambda: check_probabilities(att, "attention"))
        assert (got[0] == "error") == raises


def test_row_sum_warning_once_and_at_the_callers_line():
    att = softmax_attention((2, 2, 10, 10), 0, np.float32)
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
    probs = softmax_attention((layers, heads, n, n), data.draw(st.integers(0, 1000)), np.float64)
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 70), unique=True))
    got = attention_rollout(probs, query=rows, residual=residual, all_layers=all_layers, precision=precision)
    expected = oracle_rollout(probs, rows, residual, all_layers)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 if precision == "float32" else 1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from([2, 3, 63, 64, 65]), all_layers=st.booleans(), data=st.data())
def test_valid_mask_matches_the_oracle_on_the_kept_tokens(n, all_layers, data):
    probs = softmax_attention((2, 2, n, n), data.draw(st.integers(0, 1000)), np.float64)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_fuse_fills_what_checked_fuse_returns(dtype):
    att = softmax_attention((3, 2, 257, 257), seed=3)
    fused, sums = checked_fuse(att, "attention", dtype=dtype)
    with streamed_fuse(att, "attention", dtype=dtype) as (got, got_sums, wait):
        for layer in (2, 1, 0):
            wait(layer)
            np.testing.assert_array_equal(got[layer], fused[layer])  # bit-identical, layer by layer
    np.testing.assert_array_equal(got_sums, sums)


@pytest.mark.parametrize("damage", ["nan", "logits", "row_sum", "negzero", "clean"])
def test_streamed_route_says_what_check_probabilities_says(damage):
    att = softmax_attention((2, 2, 260, 260), seed=4)
    entries = {"nan": ((0, 1, 200, 3), np.nan), "logits": ((1, 0, 4, 4), 7.5), "negzero": ((0, 0, 0, 0), -0.0)}
    if damage == "row_sum":
        att[1, 1, 9] *= 0.9
    elif damage in entries:
        att[entries[damage][0]] = entries[damage][1]
    got = messages(lambda: attention_rollout(att, query=[259], all_layers=False))
    assert got == messages(lambda: check_probabilities(att, "attention"))
    assert (got[0] == "error") == (damage in ("nan", "logits"))
    assert (got == ("warnings", [])) == (damage in ("negzero", "clean"))


def test_streamed_route_warns_at_the_callers_line_and_matches_the_oracle():
    att = softmax_attention((3, 2, 300, 300), seed=5, dtype=np.float64)
    att[2, 0, 7] *= 0.5
    with pytest.warns(UserWarning, match=r"worst row \(2, 0, 7\) sums to 0\.500000") as record:
        got = attention_rollout(att, query=[7, 299], precision="float64")
    assert len(record) == 1 and record[0].filename == __file__
    np.testing.assert_allclose(got, oracle_rollout(att, [7, 299], 0.5, True), rtol=0, atol=1e-12)


def test_streamed_fuse_lets_an_error_in_the_block_through():
    att = softmax_attention((4, 1, 256, 256), seed=6)
    with pytest.raises(KeyError):
        with streamed_fuse(att, "attention") as (_, _, wait):
            wait(3)
            raise KeyError("the caller's own error")
