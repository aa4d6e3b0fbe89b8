import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, TokenGraph, attention_rollout, rollout
from flowlens.testing import joint_attention, synthetic_capture, toy_layout

# Two layers over three tokens, worked by hand with r = 0.5:
#   T0 = 0.5·A0 + 0.5·I = [[1, 0, 0], [.25, .75, 0], [0, .25, .75]]
#   T1 = 0.5·A1 + 0.5·I = [[1, 0, 0], [.5, .5, 0], [.25, 0, .75]]
#   J1 = T1·T0         = [[1, 0, 0], [.625, .375, 0], [.25, .1875, .5625]]
A_HAND = np.array([
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]],
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]],
])[:, None]  # [layer, head=1, query, key]


def test_hand_worked_two_layer_rollout():
    out = attention_rollout(A_HAND)
    np.testing.assert_allclose(out[0], [[1, 0, 0], [0.25, 0.75, 0], [0, 0.25, 0.75]])
    np.testing.assert_allclose(out[1], [[1, 0, 0], [0.625, 0.375, 0], [0.25, 0.1875, 0.5625]])
    np.testing.assert_allclose(attention_rollout(A_HAND, query=[2])[:, 0], out[:, 2])
    last = attention_rollout(A_HAND, query=[2, 1], all_layers=False)
    np.testing.assert_allclose(last[0], [[0.25, 0.1875, 0.5625], [0.625, 0.375, 0]])


def test_no_residual_is_plain_product():
    out = attention_rollout(A_HAND, residual=None)
    np.testing.assert_allclose(out[1], A_HAND[1, 0] @ A_HAND[0, 0])


def naive_rollout(attention, residual=0.5):
    """Independent oracle: full n×n products in float64, straight from the paper's recursion."""
    fused = attention.astype(np.float64).mean(axis=1)
    joint = np.eye(fused.shape[-1])
    out = []
    for a in fused:
        aug = (1 - residual) * a + residual * np.eye(a.shape[0])
        aug /= aug.sum(axis=-1, keepdims=True)
        joint = aug @ joint
        out.append(joint)
    return np.stack(out)


@pytest.mark.parametrize("rows", [[0], [3, 7, 19], None], ids=["one", "three", "all"])
@pytest.mark.parametrize("residual", [0.5, 0.2, 0.0])
def test_rows_match_full_product_oracle(rows, residual, rng):
    a = rng.random((6, 3, 20, 20))
    a /= a.sum(-1, keepdims=True)
    expected = naive_rollout(a, residual)
    got = attention_rollout(a, query=rows, residual=residual)
    sel = slice(None) if rows is None else rows
    # attention is held in float32 (as captured); the chain itself runs in float64
    np.testing.assert_allclose(got, expected[:, sel], atol=1e-7)
    last = attention_rollout(a, query=rows, residual=residual, all_layers=False)
    np.testing.assert_allclose(last[0], expected[-1, sel], atol=1e-7)


def test_graph_rollout_on_synthetic_capture_matches_oracle():
    cap = synthetic_capture("toy", num_layers=4, num_heads=2, num_steps=2)
    g = TokenGraph.from_capture(cap, step=1)
    r = rollout(g, precision="float64")  # default query: all action tokens
    expected = naive_rollout(g.attention[:, None])
    np.testing.assert_allclose(r.values, expected[:, r.query_nodes], atol=1e-12)
    np.testing.assert_allclose(rollout(g).values, r.values, atol=1e-7)  # float32 products
    scores = r.token_scores()
    assert np.isnan(scores[~cap.layout.valid]).all()
    assert np.nansum(scores) == pytest.approx(1.0)
    assert r.layers == (0, 1, 2, 3)


def test_rollout_selection_keywords():
    g = TokenGraph.from_capture(synthetic_capture("toy", num_layers=2, num_heads=1, num_steps=1))
    r = rollout(g, horizon=0)
    assert g.nodes[r.query_nodes].tolist() == [g.layout.actions.start]
    with pytest.raises(FlowlensError, match="not both"):
        rollout(g, [0], horizon=0)
    with pytest.raises(FlowlensError, match="layer 9 is not in this rollout"):
        r.token_scores(9)


def test_rollout_query_names_resolve_on_the_layout():
    g = TokenGraph.from_capture(synthetic_capture("toy", num_layers=2, num_heads=1, num_steps=1))
    act = g.layout.actions
    assert g.nodes[rollout(g, "action:0").query_nodes].tolist() == [act.start]
    assert g.nodes[rollout(g, "a-1").query_nodes].tolist() == [act.stop - 1]
    assert g.nodes[rollout(g, "actions").query_nodes].tolist() == list(range(act.start, act.stop))
    np.testing.assert_array_equal(rollout(g, "last").values, rollout(g, [act.stop - 1]).values)
    assert rollout(g, "last").query_tokens.tolist() == [act.stop - 1]
    with pytest.raises(FlowlensError, match=r"query 'action:99' out of range: the action chunk has"):
        rollout(g, "action:99")
    with pytest.raises(FlowlensError, match=r"query must be a query name .* or a non-empty list of token"):
        rollout(g, [])


def test_valid_mask_removes_garbage_rows_and_columns():
    lay = toy_layout()
    joint = joint_attention(lay, num_layers=3, num_heads=2)
    q = lay.actions.indices
    arr = attention_rollout(joint, query=q, valid=lay.valid)
    g = TokenGraph.from_attention(lay, joint)
    np.testing.assert_allclose(arr[..., lay.valid], rollout(g).values, atol=1e-9)
    assert (arr[..., ~lay.valid] == 0).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_rows_stay_stochastic_and_permutation_equivariant(seed, residual):
    rng = np.random.default_rng(seed)
    n = 9
    a = rng.random((3, 2, n, n)) ** 3
    a /= a.sum(-1, keepdims=True)
    out = attention_rollout(a, residual=residual, precision="float64")
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-10)
    perm = rng.permutation(n)
    permuted = attention_rollout(a[:, :, perm][:, :, :, perm], residual=residual, precision="float64")
    np.testing.assert_allclose(permuted, out[:, perm][:, :, perm], atol=1e-10)
    rows = rng.choice(n, size=3, replace=False)
    np.testing.assert_allclose(attention_rollout(a, residual=residual, query=rows), out[:, rows], atol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"attention": np.ones((2, 3, 3))}, r"\[layer, head, query, key\] with query == key, got shape \(2, 3, 3\)"),
    ({"attention": np.ones((1, 1, 3, 4)) / 4}, "query == key"),
    ({"heads": "mena"}, r"heads='mena' not understood.* Did you mean 'mean'\?"),
    ({"heads": "avg"}, r"heads='avg' not understood: expected 'mean', 'max', 'min', a head index or a list of heads"),
    ({"heads": [0, "x"]}, r"heads=\[0, 'x'\] not understood"),
    ({"query": "actions"}, r"query='actions' is a query name, but attention_rollout has no token layout"),
    ({"residual": 1.5}, r"residual must be in \[0, 1\]"),
    ({"query": [3]}, r"query row 3 out of range: attention has 3 tokens \(0–2\)"),
    ({"heads": 4}, r"head 4 out of range: this capture has 1 heads \(0–0\)"),
])
def test_bad_input_errors(kwargs, message):
    kwargs = {"attention": A_HAND, **kwargs}
    with pytest.raises(FlowlensError, match=message):
        attention_rollout(**kwargs)


def test_nan_attention_is_rejected():
    bad = A_HAND.copy()
    bad[1, 0, 2, 2] = np.inf
    with pytest.raises(FlowlensError, match="NaN or inf"):
        attention_rollout(bad)


def test_rows_off_by_tolerance_warn():
    off = A_HAND.copy()
    off[0, 0, 1] *= 0.5
    with pytest.warns(UserWarning, match=r"worst row \(0, 0, 1\)"):
        attention_rollout(off)


def test_pi0_scale_capture_smoke():
    cap = synthetic_capture("pi0", num_layers=2, num_heads=2, num_steps=1)
    r = rollout(TokenGraph.from_capture(cap), all_layers=False)
    assert r.values.shape == (1, 50, 576)  # default query: the 50 action tokens
    np.testing.assert_allclose(r.final.sum(-1), 1.0, atol=1e-6)  # float32 products
