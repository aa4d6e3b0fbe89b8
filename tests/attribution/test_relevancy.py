"""Chefer relevancy: the rule on a hand-worked example, the stitching of the sampler's passes."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "model"))
import pi0_testkit as kit  # noqa: E402

from flowlens import FlowlensError  # noqa: E402
from flowlens.attribution import chefer_relevancy, relevancy_rows  # noqa: E402
from flowlens.attribution.relevancy import weighted_attention  # noqa: E402
from flowlens.model.gradients import ActionTarget, attention_gradients  # noqa: E402

# Two layers, one head, three tokens, by hand:
#   G0 ⊙ A0 = [[0, 0, 0], [1, -1, 0], [0, .5, .5]]  → Ā0 = [[0, 0, 0], [1, 0, 0], [0, .5, .5]]
#   G1 ⊙ A1 = [[0, 0, 0], [0, 0, 0], [1, 0, -2]]    → Ā1 = [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
#   R0 = I + Ā0 = [[1, 0, 0], [1, 1, 0], [0, .5, 1.5]]
#   R1 = R0 + Ā1 R0 = [[1, 0, 0], [1, 1, 0], [1, .5, 1.5]]
A = np.array([[[1.0, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]],
              [[1.0, 0, 0], [1.0, 0, 0], [0.5, 0, 0.5]]])[:, None]
G = np.array([[[0.0, 0, 0], [2, -2, 0], [0, 1, 1]],
              [[0.0, 0, 0], [0, 0, 0], [2, 0, -4]]])[:, None]


def test_hand_worked_two_layers():
    np.testing.assert_allclose(relevancy_rows(A, G, [0, 1, 2]), [[1, 0, 0], [1, 1, 0], [1, 0.5, 1.5]])
    np.testing.assert_allclose(relevancy_rows(A, G, [2]), [[1, 0.5, 1.5]])


def test_heads_are_averaged_after_clipping():
    # a second head whose products are the negatives: clipped to 0 per head, so Ā halves (it does
    # not cancel, as averaging before clipping would)
    a2 = np.concatenate([A, A], axis=1)
    g2 = np.concatenate([G, -G], axis=1)
    abar = weighted_attention(a2, g2)
    np.testing.assert_allclose(abar[0], [[0, 0, 0], [0.5, 0.5, 0], [0, 0.25, 0.25]])
    np.testing.assert_allclose(abar[1], [[0, 0, 0], [0, 0, 0], [0.5, 0, 1.0]])


def test_shape_errors():
    with pytest.raises(FlowlensError, match="must both be"):
        relevancy_rows(A, G[:, :, :2], [0])


def test_sampler_relevancy_is_the_rule_on_the_stitched_joint_pass():
    model, params = kit.model(), kit.params()
    target = ActionTarget.heading([0.6, 0.8], k=3)
    grads = attention_gradients(model, params, kit.observation(batch=1), target, noise=kit.noise(batch=1),
                                num_steps=2)
    rel = chefer_relevancy(grads)
    layout = grads.capture.layout
    nodes = np.flatnonzero(layout.valid)
    actions = layout.select(kind="action")
    p, n = layout.prefix_len, layout.n
    expected = []
    for s in (0, 1):  # independent stitching: the joint [L, N, n, n] grid, then the valid nodes
        a = np.zeros((18, 8, n, n))
        g = np.zeros((18, 8, n, n))
        a[:, :, :p, :p], g[:, :, :p, :p] = grads.capture.prefix.probs, grads.gradients[0]
        a[:, :, p:], g[:, :, p:] = grads.capture.step(s).probs, grads.gradients[1 + s]
        sub = np.ix_(range(18), range(8), nodes, nodes)
        expected.append(relevancy_rows(a[sub], g[sub], np.searchsorted(nodes, actions)))
    np.testing.assert_allclose(rel.values, np.stack(expected), rtol=1e-12, atol=1e-12)
    scores = rel.token_scores()
    np.testing.assert_allclose(scores[nodes], np.stack(expected).sum(0).sum(0))
    assert np.isnan(scores[~layout.valid]).all()
    assert rel.steps == (0, 1)
    one = chefer_relevancy(grads, steps=[1])
    np.testing.assert_allclose(one.values[0], expected[1])
