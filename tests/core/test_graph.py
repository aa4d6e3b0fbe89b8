import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, TokenGraph
from flowlens.testing import capture_from_joint, joint_attention, synthetic_capture, toy_layout


def test_stitched_matrix_equals_joint_pass():
    lay = toy_layout()
    joint = joint_attention(lay, num_layers=3, num_heads=2, seed=1)
    stitched = TokenGraph.from_capture(capture_from_joint(lay, joint), step=0, heads="keep")
    direct = TokenGraph.from_attention(lay, joint, heads="keep")
    np.testing.assert_allclose(stitched.attention, direct.attention, atol=1e-7)
    np.testing.assert_array_equal(stitched.nodes, np.flatnonzero(lay.valid))


def test_invalid_rows_and_columns_are_removed():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=2)
    g = TokenGraph.from_capture(cap, step=1)
    lay = cap.layout
    assert g.num_nodes == lay.valid.sum() == 14
    assert not np.isin(np.arange(4, 8), g.nodes).any()           # masked camera
    assert not np.isin(np.flatnonzero(~lay.valid), g.nodes).any()  # padding
    np.testing.assert_allclose(g.attention.sum(-1), 1.0, atol=1e-5)
    # prefix rows have zero mass on suffix nodes; the step's rows are used for the suffix
    p = np.searchsorted(g.nodes, lay.prefix_len)
    assert g.attention[:, :p, p:].max() == 0.0
    assert g.step == 1 and g.time == pytest.approx(0.5)


@pytest.mark.parametrize(("heads", "expected"), [
    ("mean", lambda a: a.mean(0)), ("max", lambda a: a.max(0)), ("min", lambda a: a.min(0)),
    (1, lambda a: a[1]), ([0, 2], lambda a: a[[0, 2]].mean(0))])
def test_head_fusion(heads, expected):
    lay = toy_layout()
    joint = joint_attention(lay, num_layers=1, num_heads=3, seed=2)
    g = TokenGraph.from_attention(lay, joint, heads=heads)
    keep = np.flatnonzero(lay.valid)
    np.testing.assert_allclose(g.attention[0], expected(joint[0])[np.ix_(keep, keep)], rtol=1e-6)


def test_transition_residual_policy():
    lay = toy_layout()
    g = TokenGraph.from_attention(lay, joint_attention(lay, num_layers=1, num_heads=1), residual=0.5)
    t = g.transition(0)
    a = g.attention[0].astype(np.float64)
    expected = 0.5 * a + 0.5 * np.eye(g.num_nodes)
    np.testing.assert_allclose(t, expected / expected.sum(1, keepdims=True))
    np.testing.assert_allclose(t.sum(1), 1.0)
    g0 = TokenGraph.from_attention(lay, joint_attention(lay, num_layers=1, num_heads=2), heads="max",
                                   residual=None)
    np.testing.assert_allclose(g0.transition(0).sum(1), 1.0)  # max-fused rows renormalised


def test_select_maps_to_nodes_and_rejects_masked_tokens():
    g = TokenGraph.from_capture(synthetic_capture("toy", num_layers=1, num_heads=1, num_steps=1))
    assert g.nodes[g.select(kind="action")].tolist() == g.layout.actions.indices.tolist()
    with pytest.raises(FlowlensError, match=r"token 5 \(left_wrist_0_rgb\) is not a node"):
        g.node_index([5])


def test_partial_capture_cannot_be_stitched():
    cap = synthetic_capture("toy", num_layers=1, num_heads=1, num_steps=1)
    from flowlens import Capture
    no_prefix = Capture(layout=cap.layout, num_layers=1, num_heads=1, passes=cap.steps)
    with pytest.raises(FlowlensError, match="no prefix pass"):
        TokenGraph.from_capture(no_prefix)
    with pytest.raises(FlowlensError, match="stored only the 'mean'"):
        TokenGraph.from_capture(synthetic_capture("toy", num_layers=1, num_heads=2, num_steps=1,
                                                  head_reduction="mean"), heads="max")


def test_segment_matrix_and_networkx_export():
    g = TokenGraph.from_capture(synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1))
    names, mat = g.segment_matrix(0)
    assert names == ["base_0_rgb", "bos", "words", "newline", "state", "actions"]
    np.testing.assert_allclose(mat.sum(1), 1.0, atol=1e-5)
    assert mat[names.index("bos"), names.index("actions")] == 0.0
    nxg = g.to_networkx()
    assert isinstance(nxg, nx.DiGraph)
    assert nxg.number_of_nodes() == 3 * len(names)
    w = nxg.edges[(1, "actions"), (0, "words")]["weight"]
    assert w == pytest.approx(mat[names.index("actions"), names.index("words")])
    assert not nxg.has_edge((1, "bos"), (0, "actions"))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_permuting_heads_does_not_change_mean_fusion(seed):
    lay = toy_layout()
    joint = joint_attention(lay, num_layers=2, num_heads=3, seed=seed)
    perm = np.random.default_rng(seed).permutation(3)
    a = TokenGraph.from_attention(lay, joint).attention
    b = TokenGraph.from_attention(lay, joint[:, perm]).attention
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("heads", ["mean", "max", "min", 1])
def test_graph_and_flow_fuse_heads_identically(heads):
    # issue 13: one fusion for TokenGraph and attention flow, so the two routes give the same numbers.
    from flowlens.analysis.flow import flow_capacities
    from flowlens.core.graph import fuse_heads

    lay = toy_layout()
    joint = joint_attention(lay, num_layers=3, num_heads=3, seed=4)  # float32, as captures are
    graph = TokenGraph.from_attention(lay, joint, heads=heads)
    flow = flow_capacities(joint, heads=heads, residual=None, renormalize=False, valid=lay.valid)
    assert flow.dtype == np.float64
    np.testing.assert_array_equal(flow, graph.attention.astype(np.float64))
    kept = TokenGraph.from_attention(lay, joint, heads="keep")
    np.testing.assert_array_equal(kept.fused(heads).attention, graph.attention)
    # a float64 input is fused in float64 (no rounding to float32 on the flow route)
    wide = joint.astype(np.float64) / 3.0
    np.testing.assert_array_equal(flow_capacities(wide, heads="mean", residual=None, renormalize=False),
                                  np.mean(wide, axis=1))
    assert fuse_heads(joint, "mean").dtype == np.float32
