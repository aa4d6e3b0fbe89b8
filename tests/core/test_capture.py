import warnings

import numpy as np
import pytest

from flowlens import Capture, FlowlensError
from flowlens.core import AttentionPass, PassKind, make_capture
from flowlens.testing import synthetic_capture, toy_layout


def test_synthetic_pi0_capture_has_openpi_shapes():
    cap = synthetic_capture("pi0", num_layers=2, num_heads=8, num_steps=3)
    assert cap.prefix.probs.shape == (2, 8, 816, 816)
    assert [p.probs.shape for p in cap.steps] == [(2, 8, 51, 867)] * 3
    assert cap.times == (1.0, pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert cap.prefix.probs.dtype == np.float32
    # a fully masked query row (third camera) is uniform, as openpi's softmax makes it
    np.testing.assert_allclose(cap.prefix.probs[0, 0, 600], 1 / 816, rtol=1e-5)
    # prefix queries never see the suffix; masked keys get exactly zero
    assert cap.prefix.probs[0, :, :512, 512:768].max() == 0.0


def test_step_access_and_errors():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=3)
    assert cap.step(-1).step == 2
    with pytest.raises(FlowlensError, match=r"step 5 out of range: this capture has 3 denoising steps \(0–2\)"):
        cap.step(5)
    with pytest.raises(FlowlensError, match="layer 7 was not recorded"):
        cap.prefix.layer_index(7)


def test_shape_mismatch_with_layout_is_explained():
    lay = toy_layout()
    probs = np.full((1, 2, lay.prefix_len, lay.prefix_len + 1), 1 / (lay.prefix_len + 1), np.float32)
    with pytest.raises(FlowlensError, match=r"has 17 keys but the layout expects 16"):
        make_capture(lay, prefix_probs=probs)


def test_nan_and_logits_are_rejected():
    lay = toy_layout()
    probs = np.full((1, 1, lay.prefix_len, lay.prefix_len), 1 / lay.prefix_len, np.float32)
    probs[0, 0, 3, 2] = np.nan
    with pytest.raises(FlowlensError, match=r"NaN or inf \(first at index \(0, 0, 3, 2\)\)"):
        make_capture(lay, prefix_probs=probs)
    with pytest.raises(FlowlensError, match="Pass softmax outputs, not logits"):
        make_capture(lay, prefix_probs=np.full_like(probs, 3.0))


def test_rows_not_summing_to_one_warn_with_worst_row():
    lay = toy_layout()
    probs = np.full((1, 1, lay.prefix_len, lay.prefix_len), 1 / lay.prefix_len, np.float32)
    probs[0, 0, 9] *= 0.9
    with pytest.warns(UserWarning, match=r"worst row \(0, 0, 9\) sums to 0.900000"):
        make_capture(lay, prefix_probs=probs)
    # a masked row (camera 2 starts at token 4) is not checked: it is garbage that gets dropped
    probs[0, 0, 9] /= 0.9
    probs[0, 0, 5] *= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_capture(lay, prefix_probs=probs)


def test_pass_validation_messages():
    with pytest.raises(FlowlensError, match=r"\[layer, head, query, key\]"):
        AttentionPass(PassKind.PREFIX, np.zeros((2, 3, 4)), (0, 1), np.arange(3))
    with pytest.raises(FlowlensError, match="needs its denoising step"):
        AttentionPass(PassKind.SUFFIX, np.zeros((1, 1, 2, 2)), (0,), np.arange(2))
    with pytest.raises(FlowlensError, match="ascending and unique"):
        AttentionPass(PassKind.PREFIX, np.zeros((2, 1, 2, 2)), (1, 0), np.arange(2))
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1)
    with pytest.raises(FlowlensError, match=r"lists layer 5 but the model has 2 layers \(0–1\)"):
        Capture(layout=cap.layout, num_layers=2, num_heads=2,
                passes=(AttentionPass(PassKind.PREFIX, cap.prefix.probs, (0, 5), cap.prefix.query_rows),))
    def suffix(step):
        return AttentionPass(PassKind.SUFFIX, cap.steps[0].probs, (0, 1), cap.steps[0].query_rows, step=step)

    with pytest.raises(FlowlensError, match="unique step ids >= 0 in ascending order"):
        Capture(layout=cap.layout, num_layers=2, num_heads=2, passes=(cap.prefix, suffix(3), suffix(1)))


def test_a_subset_of_steps_is_looked_up_by_step_id():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1)
    sub = Capture(layout=cap.layout, num_layers=2, num_heads=2, passes=(
        cap.prefix,
        AttentionPass(PassKind.SUFFIX, cap.steps[0].probs, (0, 1), cap.steps[0].query_rows, step=0, time=1.0),
        AttentionPass(PassKind.SUFFIX, cap.steps[0].probs, (0, 1), cap.steps[0].query_rows, step=9, time=0.1)))
    assert sub.step_ids == (0, 9) and sub.step(9).time == 0.1 and sub.step(-1).step == 9
    with pytest.raises(FlowlensError, match=r"step 4 was not recorded; this capture holds denoising steps \[0, 9\]"):
        sub.step(4)


def test_fused_head_capture_is_smaller():
    full = synthetic_capture("toy", num_layers=2, num_heads=4, num_steps=2)
    fused = synthetic_capture("toy", num_layers=2, num_heads=4, num_steps=2, head_reduction="mean")
    assert fused.nbytes * 4 == full.nbytes
    np.testing.assert_allclose(fused.prefix.probs[:, 0], full.prefix.probs.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_arrays_read_once_keep_the_numpy_checks_verdicts(dtype):
    from flowlens.core.capture import ONE_READ_MIN_SIZE, check_probabilities

    keys = 512  # [layer 2, head 2, 64, 512] = 131,072 entries: the one-read kernel
    assert 2 * 2 * 64 * keys >= ONE_READ_MIN_SIZE
    probs = np.full((2, 2, 64, keys), 1.0 / keys, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probabilities(probs, "p")  # valid: silent
        check_probabilities(probs[:, :, ::2], "p")  # a strided view is checked as well
    bad = probs.copy()
    bad[1, 0, 5, 7] = np.nan
    with pytest.raises(FlowlensError, match=r"p contains NaN or inf \(first at index \(1, 0, 5, 7\)\)"):
        check_probabilities(bad, "p")
    bad = probs.copy()
    bad[0, 1, 2, 3] = -np.inf
    with pytest.raises(FlowlensError, match=r"first at index \(0, 1, 2, 3\)"):
        check_probabilities(bad, "p")
    bad = probs.copy()
    bad[0, 0, 0, 0] = 1.5
    with pytest.raises(FlowlensError, match=r"values in \[0, 1.5\]"):
        check_probabilities(bad, "p")
    off = probs.copy()
    off[1, 1, 9] *= 0.5  # row (1, 1, 9) sums to 0.5
    with pytest.warns(UserWarning, match=r"worst row \(1, 1, 9\) sums to 0.500000"):
        check_probabilities(off, "p")
    valid = np.ones(64, dtype=bool)
    valid[9] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probabilities(off, "p", valid_rows=valid)  # an invalid row's sum is not checked
