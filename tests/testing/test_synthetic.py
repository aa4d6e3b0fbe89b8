"""flowlens.testing's one synthetic-attention generator: openpi's masks, pass independence, the backend adapter."""

from __future__ import annotations

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.testing import MASK_VALUE, structured_capture, synthetic_capture, toy_layout


def test_mask_value_is_openpis():
    from flowlens.model.gemma import BIG_NEG

    assert MASK_VALUE == BIG_NEG == np.float32(-2.3819763e38)


def test_masked_rows_are_uniform_and_masked_keys_get_exactly_zero():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=2)
    lay = cap.layout
    p_len, valid = lay.prefix_len, lay.valid
    pre = cap.prefix.probs  # all 16 prefix rows
    assert pre.shape == (2, 2, 16, 16) and pre.dtype == np.float32
    np.testing.assert_array_equal(pre[:, :, ~valid[:p_len]], np.float32(1 / 16))  # openpi: uniform
    live = pre[:, :, valid[:p_len]]
    assert (live[..., ~valid[:p_len]] == 0.0).all()  # masked camera and padding keys
    np.testing.assert_allclose(live.sum(-1), 1.0, atol=1e-6)
    suf = cap.step(1).probs  # suffix rows: state + 3 actions over all 20 keys
    assert suf.shape == (2, 2, 4, 20)
    mask = lay.attention_mask()[p_len:]
    assert (suf[..., ~mask] == 0.0).all()  # block-causal: the state token never reads the actions
    assert suf[:, :, 0, p_len + 1 :].max() == 0.0


def test_a_pass_does_not_depend_on_what_else_is_recorded():
    lay = toy_layout()
    kw = dict(num_layers=3, num_heads=2, num_steps=4, stream=(7, 2))
    every = structured_capture(lay, **kw)
    one = structured_capture(lay, steps=[2], prefix=False, **kw)
    assert one.prefix is None and [p.step for p in one.passes] == [2]
    np.testing.assert_array_equal(one.step(2).probs, every.step(2).probs)
    assert every.step(2).time == pytest.approx(0.5)
    valid_rows = structured_capture(lay, rows="valid", **kw)
    rows = valid_rows.prefix.query_rows
    np.testing.assert_array_equal(rows, np.flatnonzero(lay.valid[: lay.prefix_len]))
    np.testing.assert_array_equal(valid_rows.prefix.probs, every.prefix.probs[:, :, rows])
    fused = structured_capture(lay, head_reduction="mean", **kw)
    np.testing.assert_allclose(fused.step(0).probs[:, 0], every.step(0).probs.mean(axis=1), rtol=1e-6)


def test_preferred_keys_draw_the_visual_heads_of_the_actions():
    lay = toy_layout()
    pref = np.zeros(lay.n, np.float32)
    pref[2] = 6.0  # patch 2 of the first camera
    cap = structured_capture(lay, num_layers=4, num_heads=4, num_steps=2, key_preference=pref, sharpness=0.1)
    act = cap.step(1).probs[-1, :, -3:, :4]  # last layer, action rows, first camera's patches
    assert (act[:2].argmax(-1) == 2).all()  # visual heads (first half)
    assert act[:2, :, 2].min() > act[2:, :, 2].max()  # text heads do not follow it


def test_bad_arguments_name_the_argument():
    with pytest.raises(FlowlensError, match=r"rows"):
        structured_capture(toy_layout(), num_layers=1, num_heads=1, num_steps=1, rows="some")
    with pytest.raises(FlowlensError, match=r"head_reduction must be None or 'mean'"):
        structured_capture(toy_layout(), num_layers=1, num_heads=1, num_steps=1, head_reduction="max")


def test_the_synthetic_backend_is_structured_capture_of_the_frame():
    from flowlens.core.frame import FrameTransform
    from flowlens.io.sources import Frame
    from flowlens.pipeline.backends import CaptureNeeds, SyntheticBackend

    img = np.full((64, 64, 3), 120, np.uint8)
    frame = Frame(index=2, images={"base_0_rgb": img}, prompt="pick up the bowl", state=None, actions=None,
                  transforms={"base_0_rgb": FrameTransform((64, 64), (224, 224))}, missing_cameras=())
    b = SyntheticBackend(num_layers=2, num_heads=2, num_steps=3)
    cap = b.capture(frame, CaptureNeeds(steps=(1,), all_heads=True), seed=5)
    ref = structured_capture(b.layout(frame), num_layers=2, num_heads=2, num_steps=3, steps=range(2), rows="valid",
                             sharpness=b.noise, stream=(5, 2))  # a flat image: no salient patch
    for got, want in zip(cap.passes, ref.passes, strict=True):
        np.testing.assert_array_equal(got.probs, want.probs)
        np.testing.assert_array_equal(got.query_rows, want.query_rows)
    assert cap.model == "synthetic" and cap.actions.shape == (50, 7)
