"""Action-to-action attention and its summaries (flowlens.analysis.actions)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, TokenGraph, rollout
from flowlens.analysis.actions import (
    ActionAttention,
    action_attention,
    action_rollout,
    summarize_actions,
)
from flowlens.core import make_capture
from flowlens.testing import masked_softmax, synthetic_capture, toy_layout

LAYOUT = toy_layout()  # state 16, actions 17-19, prefix 0-15 (valid: 0-3, 8-13)
N, P, STATE, A = 20, 16, 16, np.array([17, 18, 19])


def capture_from_blocks(suffix_rows, layers=1):
    """suffix_rows: [head, 4 (state + 3 actions), N] rows used in every layer."""
    suffix = np.broadcast_to(np.asarray(suffix_rows, np.float32), (layers,) + np.shape(suffix_rows)).copy()
    heads = suffix.shape[1]
    prefix = masked_softmax(np.zeros((layers, heads, P, P), np.float32), LAYOUT.attention_mask()[:P, :P])
    return make_capture(LAYOUT, prefix_probs=prefix, step_probs=[suffix])


def rows_for(action_rows):
    """State row on the state token; action rows given [3, N]."""
    state = np.zeros(N)
    state[STATE] = 1.0
    return np.vstack([state, action_rows])


def block(mat, *, state=None):
    """Action rows with ``mat`` [3, 3] on the actions and the rest of each row on ``state`` (or BOS)."""
    rows = np.zeros((3, N))
    rows[:, A] = mat
    rows[:, STATE if state is None else state] += 1.0 - np.asarray(mat).sum(axis=1)
    return rows


DIAGONAL = block(np.eye(3))
PREVIOUS = block([[0, 0, 0], [1, 0, 0], [0, 1, 0]])  # a_i attends a_{i-1}; a_0 attends the state
UNIFORM = block(np.full((3, 3), 1 / 3))


@pytest.fixture(scope="module")
def summary():
    cap = capture_from_blocks([rows_for(DIAGONAL), rows_for(PREVIOUS), rows_for(UNIFORM)])
    return summarize_actions(action_attention(cap))


def test_diagonal_block_literal(summary):
    assert summary.self_mass[0, 0] == 1.0
    assert summary.bandwidth[0, 0] == 0.0 and summary.width[0, 0] == 0.0
    assert summary.earlier_mass[0, 0] == 0.0 and summary.later_mass[0, 0] == 0.0
    assert summary.state_mass[0, 0] == 0.0 and summary.prefix_mass[0, 0] == 0.0
    np.testing.assert_array_equal(summary.in_degree[0, 0], [0, 0, 0])


def test_previous_action_block_literal(summary):
    assert summary.earlier_mass[0, 1] == pytest.approx(2 / 3)
    assert summary.later_mass[0, 1] == 0.0 and summary.self_mass[0, 1] == 0.0
    assert summary.state_mass[0, 1] == pytest.approx(1 / 3)
    assert summary.bandwidth[0, 1] == 1.0  # a_0 has no action mass: left out
    assert summary.width[0, 1] == 1.0
    np.testing.assert_array_equal(summary.in_degree[0, 1], [1, 1, 0])
    assert summary.hub[0, 1] == 0 and list(summary.hubs(2)[0, 1]) == [0, 1]


def test_uniform_block_literal(summary):
    assert summary.self_mass[0, 2] == pytest.approx(1 / 3)
    assert summary.earlier_mass[0, 2] == pytest.approx(1 / 3) == summary.later_mass[0, 2]
    assert summary.bandwidth[0, 2] == pytest.approx(8 / 9)  # rows: 1, 2/3, 1
    assert summary.width[0, 2] == pytest.approx(5 / 3)  # rows need d = 2, 1, 2
    np.testing.assert_allclose(summary.in_degree[0, 2], [2 / 3] * 3, rtol=1e-6)


def test_rows_account_for_all_mass_and_fusions():
    cap = synthetic_capture("toy", num_layers=3, num_heads=4, num_steps=2, seed=4)
    aa = action_attention(cap, step=1)
    assert aa.values.shape == (3, 4, 3, 3) and aa.heads[0] == "head 0" and aa.step == 1
    np.testing.assert_allclose(aa.values.sum(-1) + aa.state_mass + aa.prefix_mass, 1.0, atol=1e-5)
    mean = action_attention(cap, step=1, heads="mean")
    np.testing.assert_allclose(mean.values[:, 0], aa.values.mean(axis=1), atol=1e-7)
    assert mean.heads == ("mean",)
    one = action_attention(cap, step=1, heads=2)
    np.testing.assert_array_equal(one.values[:, 0], aa.values[:, 2])
    from_graph = action_attention(TokenGraph.from_capture(cap, 1))
    np.testing.assert_allclose(from_graph.values, mean.values, atol=1e-7)
    keep_graph = action_attention(TokenGraph.from_capture(cap, 1, heads="keep"))
    np.testing.assert_array_equal(keep_graph.values, aa.values)
    s = summarize_actions(aa)
    np.testing.assert_allclose(
        s.self_mass + s.earlier_mass + s.later_mass + s.state_mass + s.prefix_mass, 1.0, atol=1e-5
    )


@settings(max_examples=15, deadline=None)
@given(st.permutations(range(3)), st.integers(0, 1000))
def test_permuting_heads_permutes_summaries(perm, seed):
    cap = synthetic_capture("toy", num_layers=2, num_heads=3, num_steps=1, seed=seed)
    perm = list(perm)
    permuted = make_capture(
        LAYOUT, prefix_probs=cap.prefix.probs[:, perm], step_probs=[cap.steps[0].probs[:, perm]]
    )
    a, b = summarize_actions(action_attention(cap)), summarize_actions(action_attention(permuted))
    for field in ("self_mass", "bandwidth", "width", "state_mass"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field)[:, perm], atol=1e-12)


def test_action_rollout_restricts_rollout_rows():
    cap = synthetic_capture("toy", num_layers=3, num_heads=2, num_steps=1, seed=7)
    ar = action_rollout(cap)
    graph = TokenGraph.from_capture(cap, 0)
    ref = rollout(graph, kind="action").values
    nodes = graph.node_index(A)
    np.testing.assert_allclose(ar.values[:, 0], ref[:, :, nodes])
    np.testing.assert_allclose(ar.state_mass[:, 0], ref[:, :, graph.node_index(STATE)[0]])
    np.testing.assert_allclose(
        ar.values[:, 0].sum(-1) + ar.state_mass[:, 0] + ar.prefix_mass[:, 0], 1.0, atol=1e-5
    )
    assert ar.kind == "rollout" and ar.values.shape == (3, 1, 3, 3)
    ident = summarize_actions(action_rollout(cap, residual=1.0))  # r = 1: every token keeps itself
    np.testing.assert_allclose(ident.self_mass, 1.0)
    assert (ident.bandwidth == 0).all()
    last = action_rollout(graph, all_layers=False)
    np.testing.assert_allclose(last.values, ar.values[-1:])


def test_summary_on_hand_built_attention_object():
    z = np.zeros((1, 1, 3))
    s = summarize_actions(ActionAttention(LAYOUT, np.zeros((1, 1, 3, 3)), z, z, (0,), ("h",)))
    assert np.isnan(s.bandwidth[0, 0]) and np.isnan(s.width[0, 0])  # no action mass at all


def test_errors():
    cap = synthetic_capture("toy", num_layers=1, num_heads=2, num_steps=1)
    with pytest.raises(FlowlensError, match="coverage"):
        summarize_actions(action_attention(cap), coverage=0.0)
    with pytest.raises(FlowlensError, match="Did you mean 'mean'"):
        action_attention(cap, heads="meen")
    with pytest.raises(FlowlensError, match="fused"):
        action_attention(TokenGraph.from_capture(cap, 0), heads="max")
    with pytest.raises(FlowlensError, match="Capture or a TokenGraph"):
        action_rollout(np.zeros(3))
