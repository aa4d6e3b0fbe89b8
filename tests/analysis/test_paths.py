import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, TokenGraph, rollout
from flowlens.analysis.paths import path_breakdown, path_split
from flowlens.core.selection import resolve_tokens
from flowlens.testing import joint_attention, toy_layout

# A tiny layout: base_0_rgb patches 0, 1 (1×2 grid), a masked camera 2-3, prompt <bos> 4, cup 5,
# "\n" 6, state 7, action 8.
TINY = toy_layout("cup", grid=(1, 2), text_len=3, horizon=1)
P0, P1, BOS, CUP, NL, STATE, ACT = 0, 1, 4, 5, 6, 7, 8


def hand_graph(residual=None):
    """Two layers, one head, worked by hand (r = 0: T = A):
    layer 0: action reads patch 0 (0.5) and cup (0.5); cup reads patch 1; the rest read themselves.
    layer 1: action reads cup (0.75) and itself (0.25); the rest read themselves.
    J[action] = 0.75·T0[cup] + 0.25·T0[action] = 0.75·p1 + 0.125·p0 + 0.125·cup (all exact in float32)."""
    a = np.zeros((2, 1, TINY.n, TINY.n))
    for layer in range(2):
        for t in np.flatnonzero(TINY.valid):
            a[layer, 0, t, t] = 1.0
    a[0, 0, ACT] = 0.0
    a[0, 0, ACT, [P0, CUP]] = 0.5
    a[0, 0, CUP] = 0.0
    a[0, 0, CUP, P1] = 1.0
    a[1, 0, ACT] = 0.0
    a[1, 0, ACT, CUP], a[1, 0, ACT, ACT] = 0.75, 0.25
    return TokenGraph.from_attention(TINY, a, residual=residual)


def test_hand_worked_split():
    g = hand_graph()
    s = path_split(g, "actions", "cameras", "words")
    assert s.names == ("through", "avoid") and s.boundaries == (1,)
    assert s.total == pytest.approx(0.875, abs=1e-12)
    assert s.through == pytest.approx(0.75, abs=1e-12)  # p1 → cup → action
    assert s.avoid == pytest.approx(0.125, abs=1e-12)  # p0 → action → action
    one = path_split(g, "actions", "patches:base_0_rgb[0,0]", "words")
    assert (one.through, one.avoid) == pytest.approx((0.0, 0.125), abs=1e-12)


def test_hand_worked_split_with_residual():
    # r = 0.5: T_l = 0.5·A_l + 0.5·I (rows of A sum to 1).
    # T0[action] = 0.25 p0 + 0.25 cup + 0.5 action; T0[cup] = 0.5 p1 + 0.5 cup
    # T1[action] = 0.375 cup + 0.625 action
    # through (cup at boundary 1, source cameras) = 0.375·0.5 = 0.1875; avoid = 0.625·0.25 = 0.15625
    s = path_split(hand_graph(residual=0.5), "actions", "cameras", "words")
    assert (s.through, s.avoid, s.total) == pytest.approx((0.1875, 0.15625, 0.34375), abs=1e-12)


def oracle(graph, query, source, vias, boundaries):
    """Independent slow oracle: enumerate every token sequence i_1 … i_{L-1} of every path from
    each source node to each query node, multiply the transitions, and file each path under the
    via set its node at the listed boundaries enters first."""
    t = [graph.transition(i) for i in range(graph.num_layers)]
    q = graph.node_index(resolve_tokens(graph.layout, query))
    s = graph.node_index(resolve_tokens(graph.layout, source))
    v = [set(graph.node_index(resolve_tokens(graph.layout, x)).tolist()) for x in vias]
    parts = np.zeros((q.size, len(vias) + 1))
    for a, qn in enumerate(q):
        for sn in s:
            for mid in itertools.product(range(graph.num_nodes), repeat=graph.num_layers - 1):
                seq = (sn, *mid, qn)
                w = np.prod([t[i][seq[i + 1], seq[i]] for i in range(graph.num_layers)])
                part = next((j for b in boundaries for j, vs in enumerate(v) if seq[b] in vs), len(vias))
                parts[a, part] += w
    return parts.mean(axis=0)


@pytest.mark.parametrize("boundaries", [None, [2], [1]])
def test_agrees_with_path_enumeration(boundaries):
    lay = toy_layout("pick red", grid=(1, 2), text_len=4, horizon=2)
    g = TokenGraph.from_attention(lay, joint_attention(lay, seed=3, num_layers=3, num_heads=2))
    vias = ["words", "state"]
    b = path_breakdown(g, "actions", "cameras | bos", vias, layers=boundaries)
    want = oracle(g, "actions", "cameras | bos", vias, [1, 2] if boundaries is None else boundaries)
    np.testing.assert_allclose([b.shares[x] for x in b.names], want, atol=1e-12)
    split = path_split(g, "actions", "cameras | bos", "words | state", layers=boundaries)
    np.testing.assert_allclose([split.through, split.avoid], [want[0] + want[1], want[2]], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), layers=st.integers(2, 4), residual=st.sampled_from([0.0, 0.3, 0.5]))
def test_parts_sum_to_the_rollout(seed, layers, residual):
    lay = toy_layout()
    g = TokenGraph.from_attention(lay, joint_attention(lay, seed=seed, num_layers=layers, num_heads=2),
                                  residual=residual)
    b = path_breakdown(g, "actions | state", "cameras", {"w": "words", "s": "bos | newline"})
    whole = rollout(g, "actions | state", precision="float64", all_layers=False).final
    total = whole[:, g.node_index(resolve_tokens(lay, "cameras"))].sum(axis=-1)
    np.testing.assert_allclose(b.total_per_query, total, atol=1e-12)
    np.testing.assert_allclose(b.per_query.sum(axis=1), total, atol=1e-9)
    assert (b.per_query >= -1e-15).all()
    s = path_split(g, "actions | state", "cameras", "words")
    np.testing.assert_allclose(s.per_query.sum(axis=1), total, atol=1e-9)


def test_bad_inputs():
    g = hand_graph()
    with pytest.raises(FlowlensError, match="via sets must be disjoint; 'words:cup' overlaps"):
        path_breakdown(g, "actions", "cameras", ["words", "words:cup"])
    with pytest.raises(FlowlensError, match="layers: boundary 0 is not an intermediate boundary"):
        path_split(g, "actions", "cameras", "words", layers=[0])
    with pytest.raises(FlowlensError, match=r"via\['via'\]='wrds'.*Did you mean 'words'"):
        path_split(g, "actions", "cameras", "wrds")
    with pytest.raises(FlowlensError, match="source='left_wrist_0_rgb' selects no valid token"):
        path_split(g, "actions", "left_wrist_0_rgb", "words")
    with pytest.raises(FlowlensError, match="vias must be a non-empty list or dict"):
        path_breakdown(g, "actions", "cameras", "words")
    with pytest.raises(FlowlensError, match="graph must be"):
        path_split("graph", "actions", "cameras", "words")
    with pytest.raises(FlowlensError, match="needs fused heads"):
        path_split(TokenGraph.from_attention(TINY, np.ones((2, 2, TINY.n, TINY.n)) / TINY.n, heads="keep"),
                   "actions", "cameras", "words")
