"""Tests for flowlens.analysis.flow: literal min-cuts, invariants, and a networkx oracle."""

from __future__ import annotations

import pathlib
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from flow_oracle import oracle_flow, oracle_matrix, oracle_set_flow  # noqa: E402

from flowlens.analysis.flow import (  # noqa: E402
    FlowResult,
    attention_flow,
    flow,
    flow_capacities,
    max_flows,
)
from flowlens.analysis.flow.solver import arc_lists  # noqa: E402
from flowlens.core.graph import TokenGraph  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.testing.synthetic import joint_attention, toy_layout  # noqa: E402

ATOL = 1e-6


def _random_attention(rng, layers, heads, n, *, kind="uniform", density=1.0, block=None):
    """Row-stochastic [layer, head, n, n]; 'peaked' = softmax of scaled logits plus sink tokens."""
    if kind == "uniform":
        a = rng.random((layers, heads, n, n))
    else:
        z = rng.standard_normal((layers, heads, n, n)) * 2.5
        z[..., 0] += 8.0  # a sink token
        a = np.exp(z - z.max(-1, keepdims=True))
    if density < 1.0:
        a *= rng.random(a.shape) < density
    if block is not None:
        a *= block
    a[..., np.arange(n), np.arange(n)] += 1e-3  # keep every row non-empty
    return a / a.sum(-1, keepdims=True)


def _block_causal(n_prefix, n_state, n_act):
    n = n_prefix + n_state + n_act
    m = np.zeros((n, n))
    m[:n_prefix, :n_prefix] = 1
    m[n_prefix:n_prefix + n_state, :n_prefix + n_state] = 1
    m[n_prefix + n_state:] = 1
    return m


# ---- literal cases ------------------------------------------------------------------------------

def test_uniform_three_tokens_literal():
    # Â = 2/3 on the diagonal, 1/6 off it; to a different source each middle token passes 1/6.
    res = attention_flow(np.full((2, 1, 3, 3), 1 / 3), query=[0])
    np.testing.assert_allclose(res.values, [[1.0, 0.5, 0.5]], atol=1e-12)
    assert isinstance(res, FlowResult)
    assert res.values.dtype == np.float64


def test_hand_built_min_cut():
    # No residual, capacities used as given. Query 0 at layer 2, source 0 at layer 0.
    # Layer 1 -> 0 (into source 0): token 0: 0.2, token 1: 0.9.   Layer 2 -> 1 from query 0:
    # to token 0: 0.7, to token 1: 0.3.  Paths: 0->0->0 carries min(0.7, 0.2) = 0.2,
    # 0->1->0 carries min(0.3, 0.9) = 0.3: max-flow 0.5 (cut {(1,0)->(0,0), (2,0)->(1,1)}).
    att = np.zeros((2, 2, 2))
    att[0] = [[0.2, 0.8], [0.9, 0.1]]
    att[1] = [[0.7, 0.3], [0.5, 0.5]]
    res = attention_flow(att, query=0, residual=None, sources=[0, 1])
    # source 1: 0->0->1 min(0.7, 0.8) = 0.7, 0->1->1 min(0.3, 0.1) = 0.1 → 0.8
    np.testing.assert_allclose(res.values, [[0.5, 0.8]], atol=1e-12)
    assert oracle_flow(att, 0, 0) == pytest.approx(0.5)


def test_source_without_path_is_zero():
    # tokens {0, 1} never attend to {2, 3}: no path from query 0 to source 2.
    block = np.kron(np.eye(2), np.ones((2, 2)))
    att = np.broadcast_to(block / 2, (3, 4, 4)).copy()
    res = attention_flow(att, query=[0, 3], residual=0.5)
    np.testing.assert_allclose(res.values[0, 2:], 0.0, atol=0)
    np.testing.assert_allclose(res.values[1, :2], 0.0, atol=0)
    np.testing.assert_array_equal(res.upper[0, 2:], 0.0)


def test_flow_bounded_by_query_and_source_column(rng):
    a = _random_attention(rng, 4, 2, 9, kind="peaked")
    res = attention_flow(a, query=[0, 4, 8])
    C = flow_capacities(a)
    bound = np.minimum(1.0, C[0].sum(axis=0))
    assert (res.values <= bound[None, :] + 1e-12).all()
    assert (res.values >= 0).all()


# ---- oracle agreement ---------------------------------------------------------------------------

ORACLE_CASES = [
    # (layers, heads, n, kind, density, residual)
    (3, 2, 5, "uniform", 1.0, 0.5),
    (4, 2, 8, "peaked", 1.0, 0.5),
    (5, 1, 10, "peaked", 0.5, 0.3),
    (6, 3, 12, "uniform", 0.3, 0.5),
    (3, 1, 12, "peaked", 0.2, None),
    (6, 2, 7, "peaked", 0.4, 0.8),
]


@pytest.mark.parametrize(
    ("layers", "heads", "n", "kind", "density", "residual"), ORACLE_CASES,
    ids=[f"L{c[0]}-n{c[2]}-{c[3]}-d{c[4]}-r{c[5]}" for c in ORACLE_CASES],
)
def test_matches_networkx(rng, layers, heads, n, kind, density, residual):
    a = _random_attention(rng, layers, heads, n, kind=kind, density=density)
    queries = [0, n - 1]
    res = attention_flow(a, query=queries, residual=residual)
    C = flow_capacities(a, residual=residual)
    ref = oracle_matrix(C, queries)
    np.testing.assert_allclose(res.values, ref, atol=ATOL, rtol=0)
    assert (res.lower <= res.upper + 1e-15).all()
    assert res.max_gap < 1e-9


@pytest.mark.parametrize("heads", ["mean", "max", "min", 1])
def test_headss_match_networkx(rng, heads):
    a = _random_attention(rng, 3, 3, 6, kind="peaked")
    res = attention_flow(a, query=[2], heads=heads)
    C = flow_capacities(a, heads=heads)
    np.testing.assert_allclose(res.values, oracle_matrix(C, [2]), atol=ATOL)


def test_block_causal_layout_matches_networkx(rng):
    block = _block_causal(8, 1, 3)
    a = _random_attention(rng, 5, 2, 12, kind="peaked", block=block)
    res = attention_flow(a, query=[9, 11, 3])
    C = flow_capacities(a)
    np.testing.assert_allclose(res.values, oracle_matrix(C, [9, 11, 3]), atol=ATOL)
    # a prefix query never reaches the state/action tokens
    np.testing.assert_array_equal(res.values[2, 8:], 0.0)


def test_source_sets_match_networkx(rng):
    a = _random_attention(rng, 4, 2, 10, kind="peaked", density=0.6)
    sets = {"first": [0, 1, 2], "odd": np.arange(1, 10, 2), "one": [7]}
    res = attention_flow(a, query=[9, 4], source_sets=sets)
    C = flow_capacities(a)
    for name, idx in sets.items():
        ref = [oracle_set_flow(C, q, idx) for q in (9, 4)]
        np.testing.assert_allclose(res.set_values[name], ref, atol=ATOL, err_msg=name)
        assert (res.set_values[name] <= res.set_upper[name] + 1e-15).all()
    # a one-token set equals that token's value; a set is at most the sum of its members
    np.testing.assert_allclose(res.set_values["one"], res.values[:, 7], atol=1e-12)
    assert (res.set_values["first"] <= res.values[:, :3].sum(1) + 1e-12).all()


def test_layer_maps_match_networkx(rng):
    a = _random_attention(rng, 5, 1, 7, kind="peaked", density=0.7)
    res = attention_flow(a, query=[6], layers_out="all")
    C = flow_capacities(a)
    assert res.layers_out == (0, 1, 2, 3, 4)
    assert res.layer_maps.shape == (5, 1, 7)
    for i, k in enumerate(res.layers_out):
        ref = oracle_matrix(C, [6], layer=k)
        np.testing.assert_allclose(res.layer_maps[i], ref, atol=ATOL, err_msg=f"layer {k}")
    # the layer just below the query is the query's own attention row
    np.testing.assert_allclose(res.layer_maps[-1, 0], C[4, 6], atol=1e-12)
    np.testing.assert_allclose(res.layer_maps[0], res.values, atol=0)


def test_multi_phase_solves_match_networkx():
    """Sparse peaked graphs where the first (forward-only) blocking flow is not maximal."""
    rng = np.random.default_rng(7)
    phases_seen = 0
    for _ in range(30):
        L, n = int(rng.integers(3, 6)), int(rng.integers(5, 10))
        a = _random_attention(rng, L, 1, n, kind="peaked", density=0.35)
        C = flow_capacities(a)
        q = int(rng.integers(n))
        lo, up, ph = max_flows(C[1:], C[0].T.copy(), np.full(n, q), workers=1)
        ref = oracle_matrix(C, [q])[0]
        np.testing.assert_allclose(lo, ref, atol=ATOL)
        np.testing.assert_allclose(up, ref, atol=ATOL)
        phases_seen = max(phases_seen, int(ph.max()))
    assert phases_seen >= 2  # reverse-arc phases were exercised


def test_arc_lists_keep_only_capacities_above_tol():
    C = np.array([[[0.5, 1e-13, 0.2], [0.0, 0.0, 0.0], [3e-12, 0.4, 1e-12]]])
    ptr, col = arc_lists(C, 1e-12)
    np.testing.assert_array_equal(ptr, [[0, 2, 2, 4]])
    np.testing.assert_array_equal(col, [0, 2, 0, 1])


def test_very_peaked_attention_with_two_sinks_matches_networkx():
    """Softmax scale 10 with two sink tokens (as in bench_flow.py): most capacities fall below tol,
    so the solver scans short arc lists; values and certified bounds still equal the oracle."""
    rng = np.random.default_rng(3)
    L, n, sinks = 5, 24, [0, 12]
    z = 10.0 * rng.standard_normal((L, 1, n, n))
    z[..., sinks] += 25.0
    a = np.exp(z - z.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    C = flow_capacities(a)
    assert (C[1:] <= 1e-12).mean() > 0.3  # the short-list path is exercised
    for q in (n - 1, 5):
        lo, up, ph = max_flows(C[1:], C[0].T.copy(), np.full(n, q), workers=1)
        ref = oracle_matrix(C, [q])[0]
        np.testing.assert_allclose(lo, ref, atol=ATOL)
        assert (lo <= ref + 1e-9).all() and (up >= ref - 1e-9).all()
        assert (up - lo).max() <= 1e-9


def test_flow_filling_the_listed_arcs_stops_with_the_trivial_bound():
    """q's arc of capacity 1e-13 is below tol, so no flow may use it: once q's other arcs are full
    the flow is maximal, and min(out-capacity, in-capacity) over *all* arcs brackets it (no BFS)."""
    C = np.array([[[0.6, 0.4 - 1e-13, 1e-13], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    sinks = np.ones((1, 3))
    lo, up, ph = max_flows(C, sinks, np.array([0]), workers=1)
    np.testing.assert_allclose(lo, [1.0 - 1e-13], rtol=0, atol=1e-15)
    assert lo[0] < 1.0
    np.testing.assert_array_equal(up, [1.0])
    np.testing.assert_array_equal(ph, [1])


def test_widest_arcs_first_on_flat_attention_changes_no_value(rng):
    """Flat rows (n = 300 > FAT_MIN_ARCS arcs per row) switch the forward rounds to widest-arcs-first;
    the values equal those of plain index order (oracle-tested above) and stay certified."""
    a = _random_attention(rng, 3, 2, 300)
    C = flow_capacities(a)
    src = np.array([0, 7, 150, 299])
    sinks = C[0][:, src].T.copy()
    queries = np.full(len(src), 123)
    lo_fat, up_fat, _ = max_flows(C[1:], sinks, queries, workers=1)
    lo, up, _ = max_flows(C[1:], sinks, queries, workers=1, fat_arcs=0)
    np.testing.assert_allclose(lo_fat, lo, atol=1e-12)
    assert (up_fat - lo_fat).max() <= 1e-9 and (up - lo).max() <= 1e-9


def test_capacity_scaling_rounds_keep_values_exact():
    """The rounds of capacity scaling only reorder the search: one round (``scaling=()``), the
    default and many coarse rounds all give the oracle's value, with certified brackets."""
    rng = np.random.default_rng(11)
    multi_phase_coarse = 0
    for _ in range(25):
        L, n = int(rng.integers(3, 6)), int(rng.integers(6, 14))
        a = _random_attention(rng, L, 1, n, kind="peaked", density=float(rng.choice([0.35, 1.0])))
        C = flow_capacities(a)
        q = int(rng.integers(n))
        ref = oracle_matrix(C, [q])[0]
        runs = {}
        for scaling in ((), (1e-6,), (0.3, 0.1, 1e-2, 1e-4)):
            lo, up, ph = max_flows(C[1:], C[0].T.copy(), np.full(n, q), workers=1, scaling=scaling)
            np.testing.assert_allclose(lo, ref, atol=ATOL)
            assert (lo <= ref + 1e-9).all() and (up >= ref - 1e-9).all() and (up - lo).max() <= 1e-9
            runs[scaling] = lo
            if scaling and scaling[0] == 0.3:
                multi_phase_coarse += int((ph >= 3).sum())
        np.testing.assert_allclose(runs[()], runs[(1e-6,)], atol=1e-10)
        np.testing.assert_allclose(runs[()], runs[(0.3, 0.1, 1e-2, 1e-4)], atol=1e-10)
    assert multi_phase_coarse > 0  # BFS phases ran inside the scaling rounds


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    thresholds=st.lists(st.sampled_from([0.5, 0.2, 0.05, 1e-2, 1e-3, 1e-6, 1e-13]), max_size=4),
)
def test_property_any_scaling_rounds_match_networkx(seed, thresholds):
    rng = np.random.default_rng(seed)
    a = _random_attention(rng, 4, 1, 8, kind="peaked", density=0.5)
    C = flow_capacities(a)
    q = int(rng.integers(8))
    lo, up, _ = max_flows(C[1:], C[0].T.copy(), np.full(8, q), workers=1, scaling=tuple(thresholds))
    ref = oracle_matrix(C, [q])[0]
    np.testing.assert_allclose(lo, ref, atol=ATOL)
    assert (lo <= ref + 1e-9).all() and (up >= ref - 1e-9).all()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.integers(1, 5),
    n=st.integers(2, 8),
    seed=st.integers(0, 2**31 - 1),
    density=st.sampled_from([0.2, 0.5, 1.0]),
    residual=st.sampled_from([None, 0.0, 0.25, 0.5, 1.0]),
)
def test_property_matches_networkx(layers, n, seed, density, residual):
    rng = np.random.default_rng(seed)
    a = _random_attention(rng, layers, 1, n, kind="peaked", density=density)
    q = int(rng.integers(n))
    res = attention_flow(a, query=[q], residual=residual, workers=1)
    C = flow_capacities(a, residual=residual)
    np.testing.assert_allclose(res.values, oracle_matrix(C, [q]), atol=ATOL)
    assert (res.values <= np.minimum(C[-1][q].sum(), C[0].sum(0)) + 1e-12).all()


# ---- options and invariants ---------------------------------------------------------------------

def test_normalize_rows_sum_to_one(rng):
    a = _random_attention(rng, 3, 2, 6)
    res = attention_flow(a, query=[0, 5], normalize=True, layers_out=[1])
    np.testing.assert_allclose(res.values.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.layer_maps.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.values, res.lower / res.lower.sum(1, keepdims=True), atol=1e-15)


def test_permuting_tokens_permutes_values(rng):
    a = _random_attention(rng, 3, 2, 7, kind="peaked")
    perm = rng.permutation(7)
    res = attention_flow(a, query=[2])
    res_p = attention_flow(a[:, :, perm][:, :, :, perm], query=[int(np.argmax(perm == 2))])
    np.testing.assert_allclose(res_p.values[0], res.values[0, perm], atol=1e-9)


def test_valid_mask_removes_tokens(rng):
    a = _random_attention(rng, 3, 2, 8)
    valid = np.ones(8, bool)
    valid[[1, 5]] = False
    res = attention_flow(a, query=[7], valid=valid)
    keep = np.flatnonzero(valid)
    ref = attention_flow(a[:, :, keep][:, :, :, keep], query=[5])
    np.testing.assert_array_equal(res.sources, keep)
    np.testing.assert_allclose(res.values, ref.values, atol=1e-12)
    with pytest.raises(FlowlensError, match="valid= marks invalid"):
        attention_flow(a, query=[1], valid=valid)


def test_sources_subset_and_order(rng):
    a = _random_attention(rng, 3, 1, 6)
    full = attention_flow(a, query=[0])
    sub = attention_flow(a, query=[0], sources=[4, -1, 0])
    np.testing.assert_array_equal(sub.sources, [4, 5, 0])
    np.testing.assert_allclose(sub.values[0], full.values[0, [4, 5, 0]], atol=1e-12)


def test_workers_do_not_change_values(rng):
    a = _random_attention(rng, 4, 1, 12, kind="peaked")
    one = attention_flow(a, query=[3, 11], workers=1)
    two = attention_flow(a, query=[3, 11], workers=2)
    np.testing.assert_array_equal(one.values, two.values)


def test_touched_list_overflow_falls_back_to_full_reset(rng):
    a = _random_attention(rng, 4, 1, 10, kind="peaked")
    C = flow_capacities(a)
    sinks = C[0].T.copy()
    queries = np.full(10, 9)
    lo, up, _ = max_flows(C[1:], sinks, queries, workers=1)
    lo_s, up_s, _ = max_flows(C[1:], sinks, queries, workers=1, touch_capacity=3)
    np.testing.assert_array_equal(lo, lo_s)
    np.testing.assert_array_equal(up, up_s)


def test_single_layer_is_the_attention_row(rng):
    a = _random_attention(rng, 1, 2, 5)
    res = attention_flow(a, query=[3])
    np.testing.assert_allclose(res.values[0], flow_capacities(a)[0, 3], atol=1e-15)


def test_prune_brackets_the_exact_value(rng):
    a = _random_attention(rng, 4, 1, 12, kind="peaked")
    exact = attention_flow(a, query=[11])
    pruned = attention_flow(a, query=[11], prune=0.5)
    assert pruned.prune == 0.5
    assert (pruned.lower <= exact.values + 1e-12).all()
    assert (pruned.upper >= exact.values - 1e-12).all()
    assert exact.max_gap < 1e-10 < pruned.max_gap


def test_graph_entry_point_reads_attention_and_residual():
    layout = toy_layout()
    joint = joint_attention(layout, num_layers=3, num_heads=2)
    g = TokenGraph.from_attention(layout, joint, residual=0.5)
    toks = g.nodes
    res = flow(g, toks[5], sources=toks[:3], source_sets={"all": toks})
    ref = attention_flow(g.attention, query=[5], sources=[0, 1, 2], source_sets={"all": range(g.num_nodes)})
    np.testing.assert_allclose(res.values, ref.values, atol=1e-12)
    np.testing.assert_allclose(res.set_values["all"], 1.0, atol=1e-9)  # the query's unit, all sinks
    assert res.query_tokens.tolist() == [int(toks[5])] and res.sources.tolist() == toks[:3].tolist()
    kept = TokenGraph.from_attention(layout, joint, heads="keep", residual=0.0)
    res_k = flow(kept, toks[5])
    ref_k = attention_flow(kept.attention.astype(np.float64).mean(1), query=5, residual=None,
                           renormalize=True)
    np.testing.assert_allclose(res_k.values, ref_k.values, atol=1e-6)


def test_token_graph_matches_token_level_call():
    layout = toy_layout()
    joint = joint_attention(layout, num_layers=4, num_heads=2)
    g = TokenGraph.from_attention(layout, joint, residual=0.5)
    acts, base = layout.select(kind="action"), layout.select(camera="base_0_rgb")
    res = flow(g, acts, source_sets={"base": base})
    ref = attention_flow(joint, query=acts, valid=layout.valid, source_sets={"base": base})
    np.testing.assert_allclose(res.values, ref.values, atol=1e-6)  # graph stores float32 attention
    np.testing.assert_allclose(res.set_values["base"], ref.set_values["base"], atol=1e-6)
    np.testing.assert_array_equal(res.sources, np.flatnonzero(layout.valid))


def test_flow_mirrors_rollout_query_forms():
    layout = toy_layout()
    g = TokenGraph.from_attention(layout, joint_attention(layout, num_layers=2, num_heads=2))
    first = layout.actions.start
    by_index = flow(g, [first])
    for other in (flow(g, "action:0"), flow(g, "a0"), flow(g, horizon=0)):
        np.testing.assert_array_equal(other.values, by_index.values)
        assert other.query_tokens.tolist() == [first]
    assert flow(g).query_tokens.tolist() == list(range(layout.actions.start, layout.actions.stop))
    assert flow(g, "last").query_tokens.tolist() == [layout.actions.stop - 1]
    with pytest.raises(FlowlensError, match="not both"):
        flow(g, [first], horizon=0)
    with pytest.raises(FlowlensError, match="Did you mean 'actions'"):
        flow(g, "actons")
    masked = int(np.flatnonzero(~layout.valid)[0])
    with pytest.raises(FlowlensError, match=f"token {masked} .* is not a node of this graph: it is masked"):
        flow(g, [masked])
    with pytest.raises(FlowlensError, match="graph must be a TokenGraph, got SimpleNamespace"):
        flow(types.SimpleNamespace(attention=g.attention, residual=0.5), [0])


def test_fused_and_single_head_attention_agree(rng):
    a = _random_attention(rng, 3, 1, 5, kind="peaked")
    fused = attention_flow(a[:, 0], query=[4, 1])
    per_head = attention_flow(a, query=[4, 1])
    np.testing.assert_array_equal(fused.values, per_head.values)
    np.testing.assert_array_equal(fused.upper, per_head.upper)


def test_accepts_jax_arrays(rng):
    jnp = pytest.importorskip("jax.numpy")
    a = _random_attention(rng, 2, 1, 4).astype(np.float32)
    res = attention_flow(jnp.asarray(a), query=0)
    np.testing.assert_allclose(res.values, attention_flow(a, query=0).values, atol=1e-12)


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attention": np.ones((3, 3))}, r"attention must be \[layer, head, query, key\] or, heads already "
                                          r"fused, \[layer, query, key\]; got shape \(3, 3\)"),
        ({"attention": np.ones((2, 1, 3, 4))}, r"query == key"),
        ({"attention": np.full((2, 1, 3, 3), np.nan)}, r"finite"),
        ({"attention": -np.ones((2, 1, 3, 3))}, r"non-negative"),
        ({"query": [3]}, r"query 3 out of range.*3 tokens"),
        ({"query": None}, r"query is required"),
        ({"query": "actions"}, r"query='actions' is a query name, but attention_flow has no token layout"),
        ({"sources": [0, 9]}, r"sources 9 out of range"),
        ({"residual": 1.5}, r"residual must be in \[0, 1\]"),
        ({"heads": "mena"}, r"Did you mean 'mean'"),
        ({"heads": 4}, r"heads=4 is out of range"),
        ({"heads": "avg"}, r"heads='avg' not understood: expected 'mean', 'max', 'min', a head index or a "
                           r"list of heads\."),
        ({"heads": [0, 1]}, r"heads=\[0, 1\]: attention flow fuses heads by 'mean', 'max', 'min' or one"),
        ({"attention": np.full((2, 3, 3), 1 / 3), "heads": "max"},
         r"heads='max' was given, but attention is \[layer, query, key\] \(heads already fused\)"),
        ({"valid": np.ones(4, bool)}, r"valid must be a bool array of shape \(3,\)"),
        ({"layers_out": [2]}, r"layers_out 2 out of range"),
        ({"layers_out": "every"}, r"layers_out must be 'all'"),
        ({"source_sets": {"x": []}}, r"source_sets\['x'\] must be a non-empty"),
        ({"tol": 0.1}, r"tol must be in"),
        ({"prune": 2.0}, r"prune must be None or in \(0, 1\)"),
        ({"workers": 0}, r"workers must be a positive int"),
    ],
    ids=["rank", "not-square", "nan", "negative", "row-range", "no-rows", "query-name", "source-range",
         "residual", "fusion-name", "fusion-index", "fusion-unknown", "fusion-list", "fused-heads",
         "valid-shape", "layers-range", "layers-name", "empty-set", "tol", "prune", "workers"],
)
def test_errors_name_the_argument(kwargs, match):
    args = {"attention": np.full((2, 1, 3, 3), 1 / 3), "query": [0]}
    args.update(kwargs)
    attention = args.pop("attention")
    with pytest.raises(FlowlensError, match=match):
        attention_flow(attention, **args)


# ---- Pi0 scale ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_pi0_scale_few_sources_certified():
    rng = np.random.default_rng(0)
    n_prefix, n = 816, 867
    mask = _block_causal(n_prefix, 1, 50).astype(bool)
    att = np.empty((18, n, n))
    for layer in range(18):
        z = rng.standard_normal((n, n)) * 2.5
        z[:, [0, 256]] += 8.0
        z = np.where(mask, z, -np.inf)
        e = np.exp(z - z.max(1, keepdims=True))
        att[layer] = e / e.sum(1, keepdims=True)
    sources = [0, 1, 300, 815]
    res = attention_flow(att, query=[840], sources=sources,
                               source_sets={"prefix": np.arange(n_prefix)})
    C = flow_capacities(att, fused=True)
    bound = np.minimum(1.0, C[0][:, sources].sum(0))
    assert res.max_gap < 1e-9
    assert (res.values[0] <= bound + 1e-12).all()
    assert res.values[0, 0] == pytest.approx(1.0)  # the sink token takes the whole unit
    np.testing.assert_allclose(res.set_values["prefix"], 1.0, atol=1e-9)
