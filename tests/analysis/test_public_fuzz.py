"""Property tests of the public entry points (issue 14 item 9): fed fuzzed shapes, dtypes, values
and argument types, every call either returns finite, documented results or raises FlowlensError.

Each property draws every argument either from its valid values or from a pool of wrong ones
(floats and bools as indices, masks of the wrong length, strings, object / string / complex arrays,
empty axes, NaN, negatives, values > 1, wrong records), so both the accepting and the refusing
paths run. The literal tests below pin each case the fault probe reported.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlens
from flowlens import (
    FlowlensError,
    TokenGraph,
    attention_flow,
    attention_rollout,
    flow,
    frame_heatmap,
    patch_grid,
    rollout,
    word_scores,
)
from flowlens import analysis as an
from flowlens.core.checks import index_array
from flowlens.core.patches import camera_segment
from flowlens.testing import joint_attention, synthetic_capture, toy_layout

LAYOUT = toy_layout()  # n = 20: camera 0 [0:4], masked camera [4:8], prompt [8:16], state 16, actions [17:20]
N = LAYOUT.n
CAP = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=2)
GRAPH = TokenGraph.from_capture(CAP)
KEEP = TokenGraph.from_capture(CAP, heads="keep")
JOINT = joint_attention(LAYOUT, num_layers=2, num_heads=2)
SEGMENT = LAYOUT.cameras[0]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# Wrong values of every kind an argument can be handed.
BAD = [None, 1.7, 1.0, -1, 0, 3, N, 10**30, True, False, "x", "actions", "action:0", b"x", [], [1.7], [17.0],
       [True, False], [[1, 2]], [None], [17, "18"], np.nan, np.inf, -0.5, 1.5, {"a": 1}, object(),
       np.ones(N, bool), np.zeros(N, bool), np.ones(3, bool), np.array([17]), np.array([17.0]),
       np.array(["17"]), np.array([17], dtype=object), np.array([[17]]), (17, 18), [17, -1], np.float32(0.5),
       np.int64(17), np.uint64(2**63 + 1), np.array(0.5), 1 + 0j, CAP, GRAPH, KEEP, LAYOUT, SEGMENT, len, JOINT]


def bad():
    return st.sampled_from(BAD)


def arg(*valid):
    """An argument: one of its ``valid`` values, or any wrong one."""
    return st.one_of(st.sampled_from(valid), bad())


@st.composite
def arrays(draw, *, ndims=(0, 1, 2, 3, 4, 5), sizes=(0, 1, 2, 3, N)):
    """Arrays of any shape, dtype and values: probabilities, NaN, inf, negatives, > 1, huge."""
    shape = tuple(draw(st.sampled_from(sizes)) for _ in range(draw(st.sampled_from(ndims))))
    if draw(st.booleans()) and len(shape) >= 2:  # square last axes, the common attention shape
        shape = shape[:-1] + shape[-2:-1]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.random(shape)
    x = x / np.maximum(x.sum(axis=-1, keepdims=True), 1e-12) if x.ndim else x
    mode = draw(st.sampled_from(["prob", "nan", "inf", "negative", "big", "zero"]))
    if x.size and mode != "prob":
        flat = x.reshape(-1)
        flat[rng.integers(flat.size)] = {"nan": np.nan, "inf": np.inf, "negative": -0.25, "big": 3.0,
                                         "zero": 0.0}[mode]
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "complex128",
                                  "object", "str"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN / inf cast to ints
        return x.astype(dtype)


def attention_like():
    """Valid attention, or the valid one broken in one way, or any array."""
    broken = st.sampled_from([JOINT * 3, -JOINT, np.where(JOINT > 0.3, np.nan, JOINT), JOINT[:, :, :5],
                              JOINT[:0], JOINT[:, :0], JOINT.astype(object), JOINT.astype(str), JOINT[0],
                              JOINT.astype(np.float16), JOINT.tolist()])
    return st.one_of(st.just(JOINT), broken, arrays(), bad())


def finite(obj, path="result"):
    """Assert every float in ``obj`` (arrays, dataclass fields, dicts, sequences) is finite."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc":
            assert np.isfinite(obj).all(), f"{path} holds non-finite values"
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name not in ("layout", "graph"):
                finite(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            finite(v, f"{path}[{k!r}]")
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            finite(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert np.isfinite(obj), f"{path} is {obj}"


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None when it raised FlowlensError; any other exception fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # row-sum warnings are documented behaviour
        try:
            return fn(*args, **kwargs)
        except FlowlensError as err:
            assert str(err), "a FlowlensError must say what went wrong"
            return None


# ---- properties -----------------------------------------------------------------------------


@FUZZ
@given(attention=attention_like(), heads=arg("mean", "max", "min", 1, [0, 1]), residual=arg(0.5, None, 0.0, 1),
       query=arg(None, [17], 17, [-1, 3], np.ones(N, bool)), all_layers=arg(True, False),
       valid=arg(None, LAYOUT.valid), precision=arg("float32", "float64"))
def test_attention_rollout_fuzz(attention, heads, residual, query, all_layers, valid, precision):
    out = call(attention_rollout, attention, heads=heads, residual=residual, query=query,
               all_layers=all_layers, valid=valid, precision=precision)
    if out is not None:
        finite(out)
        assert out.ndim == 3 and out.shape[-1] == np.shape(attention)[-1]
        assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6


@FUZZ
@given(attention=attention_like(), query=arg([17], 17, [0, 19], np.ones(N, bool)), heads=arg("mean", "max", 1),
       residual=arg(0.5, None), sources=arg(None, [0, 1, 17]), normalize=arg(False, True),
       valid=arg(None, LAYOUT.valid), layers_out=arg(None, "all", 0))
def test_attention_flow_fuzz(attention, query, heads, residual, sources, normalize, valid, layers_out):
    res = call(attention_flow, attention, query=query, heads=heads, residual=residual, sources=sources,
               normalize=normalize, valid=valid, layers_out=layers_out)
    if res is not None:
        finite(res)
        assert (res.lower <= res.upper + 1e-9).all() and res.values.min() >= 0.0


@FUZZ
@given(graph=arg(GRAPH, KEEP), query=arg(None, "actions", "action:0", [17], np.array([16, 17]), LAYOUT.valid),
       all_layers=arg(True, False), precision=arg("float32", "float64"), normalize=arg(False, True))
def test_graph_rollout_and_flow_fuzz(graph, query, all_layers, precision, normalize):
    roll = call(rollout, graph, query, all_layers=all_layers, precision=precision)
    if roll is not None:
        finite(roll.values)
        assert roll.values.min() >= 0.0
    res = call(flow, graph, query, normalize=normalize)
    if res is not None:
        finite(res)


@FUZZ
@given(attention=st.one_of(st.sampled_from([GRAPH.attention, KEEP.attention]), attention_like()),
       nodes=arg(GRAPH.nodes), layers=arg((0, 1)), residual=arg(0.5, 0.0), layout=arg(LAYOUT))
def test_token_graph_constructor_fuzz(attention, nodes, layers, residual, layout):
    g = call(TokenGraph, layout=layout, nodes=nodes, attention=attention, layers=layers, num_model_layers=2,
             residual=residual)
    if g is not None:
        finite(np.asarray(g.attention, dtype=np.float64))
        roll = call(rollout, g.fused() if g.keeps_heads else g, [17])
        if roll is not None:
            finite(roll.values)


@FUZZ
@given(capture=arg(CAP), step=arg(0, 1, -1), heads=arg("mean", "max", "keep", 0, [0, 1]),
       residual=arg(0.5, None, 1), layers=arg(None, [0], [0, 1], 1))
def test_from_capture_fuzz(capture, step, heads, residual, layers):
    g = call(TokenGraph.from_capture, capture, step, heads=heads, residual=residual, layers=layers)
    if g is not None:
        finite(g.attention)


@FUZZ
@given(scores=st.one_of(st.just(GRAPH.to_tokens(np.ones(GRAPH.num_nodes))), arrays(sizes=(0, 1, 3, N))),
       layout=arg(LAYOUT), camera=arg(0, "base_0_rgb", 1), smooth=arg(True, False))
def test_projection_fuzz(scores, layout, camera, smooth):
    grid = call(patch_grid, scores, layout, camera)
    if grid is not None:  # NaN passes through where the scores hold NaN (removed tokens), nothing else
        seg = camera_segment(LAYOUT, camera)
        want = np.asarray(scores, dtype=np.float64)[..., seg.start:seg.stop]
        np.testing.assert_array_equal(grid.reshape(want.shape), want)
        if grid.ndim == 2 and np.isfinite(grid).all():
            heat = call(frame_heatmap, grid, seg, smooth=smooth)
            assert (heat is None) == (not isinstance(smooth, bool))
            assert heat is None or np.isfinite(heat).all()
    words = call(word_scores, scores, layout)
    if words is not None and np.isfinite(np.asarray(scores, dtype=np.float64)).all():
        finite(words.values)


@FUZZ
@given(grid=st.one_of(st.just(np.ones((2, 2))), arrays(ndims=(0, 1, 2, 3), sizes=(0, 1, 2))),
       segment=arg(SEGMENT), smooth=arg(True, False))
def test_frame_heatmap_fuzz(grid, segment, smooth):
    heat = call(frame_heatmap, grid, segment, smooth=smooth)
    if heat is not None and np.isfinite(np.asarray(grid, dtype=np.float64)).all():
        finite(heat)


HEAD_SOURCES = (CAP, KEEP)
ANALYSES = {
    "head_stats": (an.head_stats, dict(source=HEAD_SOURCES, step=(0, 1), query=(None, [17], "actions"))),
    "rank_heads": (an.rank_heads, dict(source=HEAD_SOURCES, camera=(0, None), group=(None, "actions"),
                                       query=(None, [17]))),
    "head_similarity": (an.head_similarity, dict(source=HEAD_SOURCES, query=(None, [17, 18]),
                                                 per_query=(False, True), layers=(None, [1]))),
    "head_roles": (an.head_roles, dict(source=HEAD_SOURCES, threshold=(0.25, None), k=(None, 2),
                                       query=(None, [17]))),
    "head_grids": (an.head_grids, dict(source=HEAD_SOURCES, normalize=(False, True), query=(None, [17]))),
    "action_attention": (an.action_attention, dict(source=(CAP, GRAPH, KEEP), step=(0,), heads=("keep", "mean"),
                                                   layers=(None, [0]))),
    "action_rollout": (an.action_rollout, dict(source=(CAP, GRAPH), heads=("mean", 0), residual=(0.5, 0.0),
                                               all_layers=(True, False))),
    "rollout_all_steps": (an.rollout_all_steps, dict(capture=(CAP,), heads=("mean", 1), residual=(0.5, None),
                                                     query=(None, [17]), steps=("all", 1, [0, 1]),
                                                     layers=(None, [0, 1]), all_layers=(True, False))),
    "step_report": (an.step_report, dict(capture=(CAP,), query=(None, [17, 18]), steps=("all", [1]),
                                         residual=(0.5,), layers=(None, [1]))),
    "by_step": (an.by_step, dict(analysis=(an.head_stats, an.action_attention), capture=(CAP,),
                                 steps=("all", 0, [1]))),
}


@FUZZ
@given(name=st.sampled_from(sorted(ANALYSES)), data=st.data())
def test_analyses_fuzz(name, data):
    fn, params = ANALYSES[name]
    kwargs = {key: data.draw(arg(*valid), label=key) for key, valid in params.items()}
    first = next(iter(params))
    res = call(fn, kwargs.pop(first), **kwargs)
    if res is not None:
        finite(res)


@FUZZ
@given(maps=st.one_of(st.just(np.full((3, 2, 4), 0.25)), arrays(ndims=(0, 1, 2, 3))),
       steps=arg(None, [0, 1, 2]), coverage=arg(0.9, 1.0))
def test_step_evolution_and_summaries_fuzz(maps, steps, coverage):
    ev = call(an.step_evolution, maps, steps)
    if ev is not None:
        finite(ev)
    summary = call(an.summarize_actions, an.action_attention(CAP), coverage=coverage)
    if summary is not None:
        finite(summary)


@pytest.mark.slow
@SLOW
@given(attention=attention_like(), query=arg([17], None, np.ones(N, bool)), residual=arg(0.5, None),
       heads=arg("mean", 0))
def test_array_entry_points_fuzz_long(attention, query, residual, heads):
    out = call(attention_rollout, attention, heads=heads, residual=residual, query=query)
    if out is not None:
        finite(out)
    res = call(attention_flow, attention, query=[17] if query is None else query, heads=heads, residual=residual)
    if res is not None:
        finite(res)


# ---- the cases the fault probe reported (each raised no FlowlensError before) ----------------


def test_float_query_is_refused_not_truncated():
    with pytest.raises(FlowlensError, match=r"query must be .* got \[1.7\] .*floats such as 1.7 or 1.0 are not"):
        attention_rollout(JOINT, query=[1.7])
    with pytest.raises(FlowlensError, match=r"query must be a query name .* got \[17.0\]"):
        rollout(GRAPH, [17.0])
    with pytest.raises(FlowlensError, match=r"query must be .* got \[17.5\]"):
        an.head_stats(CAP, query=[17.5])
    with pytest.raises(FlowlensError, match=r"query must be .* got \[1.7\]"):
        attention_flow(JOINT, query=[1.7])


def test_bool_mask_query_selects_the_marked_tokens():
    mask = np.zeros(N, bool)
    mask[[17, 19]] = True
    np.testing.assert_array_equal(attention_rollout(JOINT, query=mask), attention_rollout(JOINT, query=[17, 19]))
    assert rollout(GRAPH, mask).query_tokens.tolist() == [17, 19]
    assert attention_flow(JOINT, query=mask).query_tokens.tolist() == [17, 19]
    assert index_array("query", np.array([True, False, True]), size=3).tolist() == [0, 2]
    with pytest.raises(FlowlensError, match=r"bool mask needs one flag per token, 20"):
        attention_rollout(JOINT, query=[True, False])  # read as rows 1, 0 before
    with pytest.raises(FlowlensError, match=r"bool mask that marks no token"):
        rollout(GRAPH, np.zeros(N, bool))
    with pytest.raises(FlowlensError, match=r"got True \(bool\)"):
        attention_rollout(JOINT, query=True)


def test_attention_flow_refuses_values_above_one():
    with pytest.raises(FlowlensError, match=r"attention must hold probabilities in \[0, 1\], got 3\.0 at index"):
        attention_flow(np.full((1, 1, 2, 2), 3.0), query=[0])


@pytest.mark.parametrize(("fill", "match"), [
    (np.nan, r"attention contains NaN or inf \(first at index \(0, 0, 0\)\)"),
    (-0.5, r"attention must hold probabilities in \[0, 1\], got values in \[-0\.5, 0\]"),
])
def test_token_graph_refuses_nan_or_negative_attention(fill, match):
    with pytest.raises(FlowlensError, match=match):
        TokenGraph(LAYOUT, GRAPH.nodes, np.full_like(GRAPH.attention, fill), GRAPH.layers, 2)


@pytest.mark.parametrize("shape", [(0, 1, 3, 3), (1, 0, 3, 3), (1, 1, 0, 0)])
def test_empty_axes_are_refused(shape):
    with pytest.raises(FlowlensError, match=rf"attention has an empty axis \(shape \({shape[0]}, "):
        attention_rollout(np.zeros(shape))
    with pytest.raises(FlowlensError, match=r"no empty axis|empty axis"):
        attention_flow(np.zeros(shape), query=[0])


def test_heads_and_residual_of_the_wrong_type():
    with pytest.raises(FlowlensError, match=r"heads=1\.5 not understood: expected 'mean', 'max', 'min', 'keep'"):
        TokenGraph.from_capture(CAP, heads=1.5)
    with pytest.raises(FlowlensError, match=r"heads=1\.5 not understood"):
        an.action_rollout(CAP, heads=1.5)
    with pytest.raises(FlowlensError, match=r"residual must be a number, got 'x' \(str\)"):
        attention_rollout(JOINT, residual="x")
    with pytest.raises(FlowlensError, match=r"residual must be a number, got 'x' \(str\)"):
        TokenGraph.from_capture(CAP, residual="x")
    with pytest.raises(FlowlensError, match=r"residual must be a number, got 'x' \(str\)"):
        an.rollout_all_steps(CAP, residual="x")
    with pytest.raises(FlowlensError, match=r"residual must be a number, got True \(bool\)"):
        attention_flow(JOINT, query=[17], residual=True)


@pytest.mark.parametrize("dtype", [object, str, complex])
def test_object_string_and_complex_arrays_are_refused(dtype):
    with pytest.raises(FlowlensError, match=rf"attention must be a numeric .* got dtype {np.dtype(dtype).kind}|"
                                            rf"attention must be a numeric .* got dtype"):
        attention_rollout(JOINT.astype(dtype))
    with pytest.raises(FlowlensError, match=r"attention must be a numeric"):
        attention_flow(JOINT.astype(dtype), query=[17])
    with pytest.raises(FlowlensError, match=r"scores must be a numeric"):
        patch_grid(np.zeros(N).astype(dtype), LAYOUT)
    with pytest.raises(FlowlensError, match=r"scores must be a numeric"):
        word_scores(np.zeros(N).astype(dtype), LAYOUT)


def test_records_of_the_wrong_type():
    with pytest.raises(FlowlensError, match=r"capture must be a Capture, got 'x' \(str\)\. Load one with"):
        TokenGraph.from_capture("x")
    with pytest.raises(FlowlensError, match=r"graph must be a TokenGraph, got 'x' \(str\)"):
        rollout("x")
    with pytest.raises(FlowlensError, match=r"capture must be a Capture, got 'x' \(str\)"):
        an.by_step(an.head_stats, "x")
    with pytest.raises(FlowlensError, match=r"attn must be an ActionAttention, got 'x' \(str\)"):
        an.summarize_actions("x")
    with pytest.raises(FlowlensError, match=r"layers must be a non-empty int or list of ints \(model layer ids\), "
                                            r"got 1\.5 \(float\)"):
        TokenGraph.from_capture(CAP, layers=1.5)


def test_head_roles_and_head_grids_stay_functions_after_their_modules_load():
    code = ("import flowlens.analysis as an, flowlens.analysis.head_roles, flowlens.analysis.head_grids; "
            "print(callable(an.head_roles), callable(an.head_grids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
