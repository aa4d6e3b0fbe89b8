"""Per-head statistics, similarity, roles and ranking (flowlens.analysis.heads / head_roles)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens import FlowlensError, TokenGraph, word_scores
from flowlens.analysis.head_roles import LN2, head_roles, head_similarity, js_divergence, pairwise_js
from flowlens.analysis.rows import take_columns
from flowlens.analysis.heads import group_sums, head_attention, head_stats, rank_heads, target_tokens
from flowlens.core import make_capture
from flowlens.testing import masked_softmax, synthetic_capture, toy_layout

# toy layout (n = 20, prefix 16): base_0_rgb 0-3 (2×2), left_wrist 4-7 (masked), bos 8,
# words 9-12 ("pick the red bowl"), newline 13, padding 14-15, state 16, actions 17-19.
LAYOUT = toy_layout()
N, P = LAYOUT.n, LAYOUT.prefix_len
VALID_KEYS = int(LAYOUT.valid.sum())  # 14
BOS, NEWLINE, RED, STATE, A0 = 8, 13, 11, 16, 17


def row(*tokens):
    """A probability row over the layout, uniform over ``tokens``."""
    r = np.zeros(N, np.float32)
    r[list(tokens)] = 1.0 / len(tokens)
    return r


def uniform_row():
    return LAYOUT.valid.astype(np.float32) / VALID_KEYS


def hand_capture(head_rows, *, layers=1, steps=1, prefix=True):
    """A capture whose suffix rows (state + 3 actions) of head h are all ``head_rows[h]``."""
    heads = len(head_rows)
    suffix = np.stack([np.stack([r] * (N - P)) for r in head_rows])  # [head, suffix, key]
    step_probs = [np.broadcast_to(suffix, (layers,) + suffix.shape).copy() for _ in range(steps)]
    prefix_probs = None
    if prefix:
        mask = LAYOUT.attention_mask()[:P, :P]
        prefix_probs = masked_softmax(np.zeros((layers, heads, P, P), np.float32), mask)
    return make_capture(LAYOUT, prefix_probs=prefix_probs, step_probs=step_probs)


HEADS = [row(BOS), row(2), uniform_row(), row(RED)]  # sink, one patch, uniform, one word


@pytest.fixture(scope="module")
def stats():
    return head_stats(hand_capture(HEADS, layers=2))


def test_sink_head_literal(stats):
    g = dict(zip(stats.groups, stats.group_mass[0, 0], strict=True))
    assert g["bos"] == 1.0
    assert sum(v for k, v in g.items() if k != "bos") == 0.0
    assert stats.sink_mass[0, 0] == 1.0
    assert stats.entropy[0, 0] == 0.0


def test_patch_head_heatmap_is_one_hot(stats):
    heat = stats.heatmap("base_0_rgb", layer=0, head=1)
    np.testing.assert_array_equal(heat, [[0.0, 0.0], [1.0, 0.0]])
    assert stats.entropy[1, 1] == 0.0
    assert stats.group("base_0_rgb")[1, 1] == 1.0
    assert np.isnan(stats.heatmap("left_wrist_0_rgb", layer=0, head=1)).all()  # masked camera


def test_uniform_head_entropy_is_log_of_valid_keys(stats):
    np.testing.assert_allclose(stats.entropy[:, 2], np.log(VALID_KEYS), rtol=1e-6)
    np.testing.assert_allclose(stats.sink_mass[:, 2], 2 / VALID_KEYS, rtol=1e-6)


def test_word_head_word_scores(stats):
    ws = word_scores(stats.head_mass(layer=0, head=3), stats.layout)
    np.testing.assert_array_equal(ws.values, [0.0, 0.0, 1.0, 0.0])
    assert ws.specials["bos"] == 0.0
    assert stats.dominant_group()[0, 3] == "words"


def test_group_masses_sum_to_one_and_key_mass_is_a_distribution():
    s = head_stats(synthetic_capture("toy", num_layers=3, num_heads=4, num_steps=2, seed=3), step=1)
    np.testing.assert_allclose(s.group_mass.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(s.key_mass.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(s.sink_mass, s.group("bos") + s.group("newline"))
    assert s.group_mass.shape == (3, 4, len(s.groups)) and s.step == 1
    np.testing.assert_allclose(s.raw_mass, 1.0, atol=1e-5)


def test_capture_and_keep_graph_agree_and_suffix_only_capture_works():
    cap = synthetic_capture("toy", num_layers=2, num_heads=3, num_steps=2, seed=5)
    a = head_stats(cap, step=1)
    b = head_stats(TokenGraph.from_capture(cap, 1, heads="keep"))
    np.testing.assert_allclose(a.group_mass, b.group_mass, atol=1e-12)
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-12)
    suffix_only = make_capture(LAYOUT, step_probs=[p.probs for p in cap.steps])
    c = head_stats(suffix_only, step=1)
    np.testing.assert_allclose(a.key_mass, c.key_mass, atol=1e-12)


def test_prefix_queries_read_the_prefix_pass():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1, seed=1)
    ha = head_attention(cap, group="words")
    assert ha.probs.shape == (2, 2, 4, VALID_KEYS)
    suffix_keys = ha.key_tokens >= P
    assert (ha.probs[..., suffix_keys] == 0).all()
    s = head_stats(cap, group="words")
    assert s.group("actions").max() == 0.0


def test_layers_selection():
    s = head_stats(synthetic_capture("toy", num_layers=4, num_heads=2, num_steps=1), layers=[1, 3])
    assert s.layers == (1, 3) and s.group_mass.shape[0] == 2
    assert s.heatmap(layer=3, head=0).shape == (2, 2)


@settings(max_examples=20, deadline=None)
@given(st.permutations(range(4)), st.integers(0, 1000))
def test_permuting_heads_permutes_results(perm, seed):
    cap = synthetic_capture("toy", num_layers=2, num_heads=4, num_steps=1, seed=seed)
    perm = list(perm)
    permuted = make_capture(
        LAYOUT, prefix_probs=cap.prefix.probs[:, perm], step_probs=[cap.steps[0].probs[:, perm]]
    )
    a, b = head_stats(cap), head_stats(permuted)
    np.testing.assert_allclose(b.group_mass, a.group_mass[:, perm], atol=1e-12)
    np.testing.assert_allclose(b.entropy, a.entropy[:, perm], atol=1e-12)
    sa, sb = head_similarity(a), head_similarity(b)
    order = np.array([layer * 4 + h for layer in range(2) for h in perm])
    np.testing.assert_allclose(sb.matrix, sa.matrix[np.ix_(order, order)], atol=1e-6)


# ---- Jensen–Shannon ---------------------------------------------------------------------------
def test_js_literals():
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(LN2, abs=1e-12)
    assert js_divergence(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_pairwise_js_symmetric_zero_diagonal_bounded(items, seed):
    rng = np.random.default_rng(seed)
    d = rng.dirichlet(np.full(7, 0.3), size=items)
    d[-1] = d[0]  # an identical pair
    mat = pairwise_js(d)
    np.testing.assert_array_equal(mat, mat.T)
    assert (np.diag(mat) == 0).all() and mat[0, -1] == 0.0
    assert (mat >= 0).all() and (mat <= LN2).all()
    np.testing.assert_allclose(mat[0, 1], js_divergence(d[0], d[1]), atol=1e-12)


def test_head_similarity_literals_and_blocks():
    cap = hand_capture([row(BOS), row(BOS), row(2)], layers=2)
    sim = head_similarity(cap)
    assert sim.matrix.shape == (6, 6)
    assert sim.labels[:3] == ("L0H0", "L0H1", "L0H2")
    assert sim.matrix[0, 1] == 0.0 and sim.matrix[0, 4] == 0.0  # same map within / across layers
    assert sim.matrix[0, 2] == pytest.approx(LN2, abs=1e-6)  # disjoint supports
    np.testing.assert_array_equal(sim.block(0, 1), sim.matrix[:3, 3:])
    assert sim.within_layer().shape == (2, 3, 3)
    dist = head_similarity(cap, metric="distance")
    np.testing.assert_allclose(dist.matrix, np.sqrt(sim.matrix))
    per_q = head_similarity(cap, per_query=True)  # identical query rows: same as the query mean
    np.testing.assert_allclose(per_q.matrix, sim.matrix, atol=1e-6)


# ---- roles and ranking ------------------------------------------------------------------------
def test_roles_named_by_dominant_group():
    action_head = row(A0, A0 + 1, A0 + 2)
    cap = hand_capture([row(BOS), row(BOS, NEWLINE), row(1), row(RED), action_head], layers=1)
    roles = head_roles(cap, threshold=0.1)
    names = list(roles.names[0])
    assert names == ["sink", "sink", "image:base_0_rgb", "text", "action"]
    assert roles.members("sink") == [(0, 0), (0, 1)]
    np.testing.assert_allclose(roles.profiles.sum(-1), 1.0)
    four = head_roles(cap, k=4)
    assert four.cluster_names == ("sink", "image:base_0_rgb", "text", "action")
    np.testing.assert_array_equal(four.labels, [[0, 0, 1, 2, 3]])


def test_rank_heads_targets():
    cap = hand_capture(HEADS, layers=2)
    assert rank_heads(cap, words="red").top(1)[0][1] == 3
    assert rank_heads(cap, camera="base_0_rgb", patches=[[1, 0]]).top(2)[0][1] == 1
    mask = np.zeros((2, 2), bool)
    mask[1, 0] = True
    np.testing.assert_array_equal(target_tokens(LAYOUT, camera="base_0_rgb", patches=mask), [2])
    r = rank_heads(cap, group="bos")
    assert r.top(1)[0][1] == 0 and r.mass[0, 0] == 1.0 and r.mass.shape == (2, 4)
    np.testing.assert_allclose(rank_heads(cap, tokens=[BOS, NEWLINE]).mass, head_stats(cap).sink_mass)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"words": "bowel"}, "Did you mean 'bowl'"),
        ({"tokens": [14]}, "padding"),
        ({"camera": "left_wrist_0_rgb"}, "masked"),
        ({"patches": [0]}, "needs camera"),
        ({"camera": "base_0_rgb", "patches": [7]}, "0..3"),
        ({}, "exactly one target"),
    ],
    ids=["word-typo", "padding-token", "masked-camera", "patches-without-camera", "patch-range", "no-target"],
)
def test_rank_heads_errors(kwargs, message):
    with pytest.raises(FlowlensError, match=message):
        rank_heads(hand_capture(HEADS), **kwargs)


def test_errors_for_fused_sources_and_bad_queries():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1)
    with pytest.raises(FlowlensError, match="heads='keep'"):
        head_stats(TokenGraph.from_capture(cap, 0))
    fused = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1, head_reduction="mean")
    with pytest.raises(FlowlensError, match="every head"):
        head_stats(fused)
    with pytest.raises(FlowlensError, match="masked or padding"):
        head_stats(cap, query=[5])
    with pytest.raises(FlowlensError, match="no prefix pass"):
        head_stats(make_capture(LAYOUT, step_probs=[cap.steps[0].probs]), group="words")
    with pytest.raises(FlowlensError, match="step 3 out of range"):
        head_stats(cap, step=3)
    with pytest.raises(FlowlensError, match="Did you mean 'distance'"):
        head_similarity(cap, metric="distanse")
    with pytest.raises(FlowlensError, match="threshold"):
        head_roles(cap, threshold=2.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=30), st.integers(0, 1000))
def test_run_based_kernels_match_fancy_indexing(keep, seed):
    rng = np.random.default_rng(seed)
    arr = rng.random((2, 3, len(keep)), dtype=np.float32)
    cols = np.flatnonzero(keep)
    np.testing.assert_array_equal(take_columns(arr, cols), arr[..., cols])
    labels = rng.integers(-1, 4, size=len(keep))
    ind = np.zeros((len(keep), 4), np.float32)
    ind[np.flatnonzero(labels >= 0), labels[labels >= 0]] = 1.0
    flat = arr.reshape(-1, len(keep))
    np.testing.assert_allclose(group_sums(flat, ind), flat.astype(np.float64) @ ind, rtol=1e-6, atol=1e-6)


def test_query_names_select_like_token_indices():
    cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1)
    act = cap.layout.actions
    by_name, by_index = head_stats(cap, query="action:1"), head_stats(cap, query=[act.start + 1])
    assert by_name.query_tokens.tolist() == [act.start + 1]
    np.testing.assert_array_equal(by_name.group_mass, by_index.group_mass)
    assert head_stats(cap, query="actions").query_tokens.tolist() == list(range(act.start, act.stop))
    with pytest.raises(FlowlensError, match="Did you mean 'actions'"):
        head_stats(cap, query="actons")
