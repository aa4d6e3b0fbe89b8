"""checked_fuse: the one-read validation + head fusion behind attention_rollout, against the two-step
numpy route (check_probabilities then fuse_heads) it replaces, and float64 rollout against a float64 oracle."""

import warnings

import numpy as np
import pytest

from flowlens import FlowlensError, attention_rollout
from flowlens.core.capture import check_probabilities
from flowlens.core.graph import fuse_heads
from flowlens.core.onepass import checked_fuse


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
