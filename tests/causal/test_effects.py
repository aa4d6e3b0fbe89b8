"""Per-frame effects of an intervention: literal values."""

import numpy as np
import pytest

from flowlens.causal import action_effects, gap_closed
from flowlens.errors import FlowlensError


def test_l2_and_cosine_literal():
    ref = np.array([[[3.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    edited = np.array([[[0.0, 4.0], [0.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    eff = action_effects(ref, edited)
    np.testing.assert_allclose(eff["l2"], [5.0, 4.0])
    np.testing.assert_allclose(eff["cosine"], [0.0, -1.0])
    same = action_effects(ref, ref)
    assert (same["l2"] == 0).all() and np.allclose(same["cosine"], 1.0)


def test_gap_closed_literal():
    ref = np.zeros((3, 1, 2))
    src = np.array([[[4.0, 0.0]], [[4.0, 0.0]], [[0.0, 0.0]]])
    edited = np.array([[[1.0, 0.0]], [[4.0, 0.0]], [[1.0, 0.0]]])
    got = gap_closed(ref, edited, src)
    np.testing.assert_allclose(got[:2], [0.25, 1.0])
    assert np.isnan(got[2])  # the runs already agree: no gap to close


def test_shapes_are_checked():
    with pytest.raises(FlowlensError, match=r"chunks \[frames, horizon, action_dim\]"):
        action_effects(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(FlowlensError, match="same frames"):
        action_effects(np.zeros((2, 3, 1)), np.zeros((1, 3, 1)))
