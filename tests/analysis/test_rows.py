"""Query rows (flowlens.analysis.rows): hand-worked literal cases, and the former readers' outputs.

The four places that read query rows before ``read_rows`` existed (``head_rows.head_attention``,
``pipeline.analyze.raw_rows``, ``report.capture.raw_scores``, ``io.batch.action_group_mass``)
are kept below as oracles, copied from commit 71812f7, and compared with their replacements.
"""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.core import make_capture
from flowlens.analysis.rollout import rollout
from flowlens.analysis.rows import head_attention, read_rows
from flowlens.core.graph import TokenGraph, fuse_heads
from flowlens.analysis.rows import action_group_mass
from flowlens.io.store import apply_policy
from flowlens.pipeline import AnalysisSpec
from flowlens.pipeline.analyze import compute_scores
from flowlens.report import raw_scores as report_raw_scores
from flowlens.testing import masked_softmax, synthetic_capture, toy_layout

# toy layout (n = 20, prefix 16): base_0_rgb 0-3 (2×2), left_wrist 4-7 (masked), bos 8,
# words 9-12 ("pick the red bowl"), newline 13, padding 14-15, state 16, actions 17-19.
LAYOUT = toy_layout()
N, P = LAYOUT.n, LAYOUT.prefix_len
KEYS = [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19]  # the valid tokens
BOS, RED, A0 = 8, 11, 17


def row(*tokens):
    r = np.zeros(N, np.float32)
    r[list(tokens)] = 1.0 / len(tokens)
    return r


def hand_capture(steps_heads):
    """Suffix rows (state + 3 actions) of step s, head h all equal ``steps_heads[s][h]``; the prefix
    pass is the masked softmax of zeros (uniform over each prefix row's visible keys)."""
    step_probs = [np.stack([np.stack([r] * (N - P)) for r in heads])[None] for heads in steps_heads]
    heads = len(steps_heads[0])
    prefix = masked_softmax(np.zeros((1, heads, P, P), np.float32), LAYOUT.attention_mask()[:P, :P])
    return make_capture(LAYOUT, prefix_probs=prefix, step_probs=step_probs)


# step 0: heads on <bos>, on patch 2, half-half; step 1: every head on the word "red"
CAPTURE = hand_capture([[row(BOS), row(2), row(BOS, 2)], [row(RED)] * 3])


def test_keys_are_the_valid_tokens_masked_camera_and_padding_dropped():
    rows = read_rows(CAPTURE, [A0], step=0)
    assert rows.key_tokens.tolist() == KEYS
    assert rows.probs.shape == (1, 3, 1, 14)
    np.testing.assert_array_equal(rows.probs[0, :, 0, KEYS.index(BOS)], [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(rows.probs[0, :, 0, KEYS.index(2)], [0.0, 1.0, 0.5])


@pytest.mark.parametrize("token, segment", [(5, "left_wrist_0_rgb"), (14, "prompt")])
def test_masked_camera_and_text_padding_queries_are_refused(token, segment):
    with pytest.raises(FlowlensError, match=rf"query token {token} \({segment}\) is masked or padding"):
        read_rows(CAPTURE, [token])


def test_on_layout_marks_masked_camera_and_padding_nan():
    lay = read_rows(CAPTURE, [A0], step=0, heads=1).on_layout()  # [layer, 1, query, token]
    expected = np.zeros(N)
    expected[[4, 5, 6, 7, 14, 15]] = np.nan
    expected[2] = 1.0
    np.testing.assert_array_equal(lay[0, 0, 0], expected)


def test_suffix_rows_of_the_chosen_step():
    s1 = read_rows(CAPTURE, [16, A0], step=1)
    assert s1.step == 1 and s1.query_tokens.tolist() == [16, 17]
    np.testing.assert_array_equal(s1.probs[0, :, :, KEYS.index(RED)], np.ones((3, 2)))
    assert s1.probs.sum() == 6.0
    last = read_rows(CAPTURE, [A0], step=-1)  # negative counts from the last step
    assert last.step == 1
    with pytest.raises(FlowlensError, match="step 2"):
        read_rows(CAPTURE, [A0], step=2)


def test_prefix_query_reads_the_prefix_pass_and_is_nan_outside_it():
    both = read_rows(CAPTURE, [9, A0], step=0, heads="mean")
    lay = both.on_layout()[0, 0]  # [query, token]
    word = np.full(N, np.nan)
    word[[0, 1, 2, 3, 8, 9, 10, 11, 12, 13]] = 0.1  # uniform over the 10 valid prefix keys
    np.testing.assert_allclose(lay[0], word, rtol=1e-6)
    assert both.probs[0, 0, 0, KEYS.index(16) :].tolist() == [0.0] * 4  # 0 on suffix keys in probs
    np.testing.assert_allclose(lay[1, [BOS, 2]], [0.5, 0.5], rtol=1e-6)
    assert both.step == 0


def test_head_fusion_literal():
    def on(heads):
        return read_rows(CAPTURE, [A0], step=0, heads=heads).probs[0, :, 0][:, [KEYS.index(BOS), KEYS.index(2)]]

    np.testing.assert_allclose(on("mean"), [[0.5, 0.5]])
    np.testing.assert_allclose(on([0, 2]), [[0.75, 0.25]])
    np.testing.assert_array_equal(on(1), [[0.0, 1.0]])
    np.testing.assert_array_equal(on("max"), [[1.0, 1.0]])
    np.testing.assert_array_equal(on("keep"), [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


def test_head_reduced_capture():
    fused = apply_policy(CAPTURE, "fused")  # the mean over heads only
    np.testing.assert_allclose(read_rows(fused, [A0], heads="mean").probs[0, 0, 0, KEYS.index(BOS)], 0.5)
    assert read_rows(fused, [A0], heads="stored").num_heads == 1
    with pytest.raises(FlowlensError, match="needs every head"):
        read_rows(fused, [A0], heads="keep")
    with pytest.raises(FlowlensError, match="stored only the mean"):
        read_rows(fused, [A0], heads=1)


# ---- the former readers (oracles copied from 71812f7) -------------------------------------------
def old_pipeline_raw_rows(capture, step, tokens, heads):
    p = capture.step(step)
    pos = np.searchsorted(p.query_rows, tokens)
    probs = p.probs[:, :, pos, :]
    fused = probs[:, 0] if p.head_reduction is not None else fuse_heads(probs, heads, axis=1)
    out = fused.astype(np.float64)
    out[..., ~capture.layout.valid] = np.nan
    return out


def old_report_raw_scores(capture, tokens):
    layout = capture.layout
    passes = capture.steps if (tokens >= layout.prefix_len).all() else [capture.prefix or capture.full]
    out = []
    for p in passes:
        vals = p.probs[:, :, np.searchsorted(p.query_rows, tokens)].mean(axis=2, dtype=np.float64)
        full = np.full(vals.shape[:2] + (layout.n,), np.nan)
        full[..., : p.key_count] = vals
        out.append(full)
    arr = np.stack(out)
    arr[..., ~layout.valid] = np.nan
    return arr.astype(np.float32)


def old_action_group_mass(capture):
    layout = capture.layout
    act = layout.actions
    rows = []
    for p in capture.steps:
        sel = np.flatnonzero((p.query_rows >= act.start) & (p.query_rows < act.stop))
        for li, layer in enumerate(p.layers):
            mean = p.probs[li][:, sel].mean(axis=(0, 1), dtype=np.float64)
            rows += [
                {"step": p.step, "layer": layer, "group": g, "mass": float(mean[idx].sum())}
                for g, idx in layout.groups().items()
            ]
    return rows


@pytest.fixture(scope="module", params=["toy", "pi0"])
def synth(request):
    return synthetic_capture(request.param, seed=3, num_layers=3, num_heads=4, num_steps=3)


def test_pipeline_raw_rows_unchanged(synth):
    actions = synth.layout.select(kind="action")
    for heads in ("mean", 2, [0, 3]):
        spec = AnalysisSpec.create(method="raw", query="actions", heads=None if heads == "mean" else heads, step=1)
        new = compute_scores(synth, spec)
        old = old_pipeline_raw_rows(synth, 1, actions, spec.heads_argument).mean(axis=1)
        np.testing.assert_allclose(new.scores[0], old, rtol=1e-12, atol=0, equal_nan=True)
        np.testing.assert_allclose(
            new.action_attention, old_pipeline_raw_rows(synth, 1, actions, spec.heads_argument), rtol=1e-12,
            equal_nan=True,
        )
    per_head = old_pipeline_raw_rows(synth, 1, actions[:1], "keep").mean(axis=2)
    np.testing.assert_allclose(compute_scores(synth, AnalysisSpec(step=1)).head_scores, per_head, equal_nan=True)


def test_report_raw_scores_unchanged(synth):
    lay = synth.layout
    for tokens in (lay.select(kind="action"), lay.select(group="words"), lay.select(kind="action")[:1]):
        np.testing.assert_allclose(
            report_raw_scores(synth, tokens), old_report_raw_scores(synth, tokens), rtol=1e-6, equal_nan=True
        )
    reduced = apply_policy(synth, "fused")
    tokens = lay.select(kind="action")
    np.testing.assert_allclose(
        report_raw_scores(reduced, tokens), old_report_raw_scores(reduced, tokens), rtol=1e-6, equal_nan=True
    )


def test_batch_action_group_mass_unchanged(synth):
    new, old = action_group_mass(synth), old_action_group_mass(synth)
    assert [(r["step"], r["layer"], r["group"]) for r in new] == [(r["step"], r["layer"], r["group"]) for r in old]
    np.testing.assert_allclose([r["mass"] for r in new], [r["mass"] for r in old], rtol=1e-12, atol=1e-15)


def test_head_attention_unchanged(synth):
    p = synth.step(2)
    tokens = synth.layout.select(kind="action")
    keys = np.flatnonzero(synth.layout.valid)
    old = p.probs[:, :, np.searchsorted(p.query_rows, tokens)][..., keys]
    ha = head_attention(synth, step=2)
    np.testing.assert_array_equal(ha.probs, old)
    assert ha.key_tokens.tolist() == keys.tolist() and ha.step == 2


def test_pipeline_rollout_equals_per_step_graph_rollout(synth):
    """compute_scores now takes every step from rollout_all_steps (prefix shared); the former path
    built one TokenGraph per step and rolled it out."""
    for heads in (None, (1,), (0, 2)):
        spec = AnalysisSpec.create(method="rollout", query="actions", heads=heads, step="all", residual=0.4)
        new = compute_scores(synth, spec, every_step=True)
        tokens = spec.query_tokens(synth.layout)
        source = apply_policy(synth, "fused") if heads is None else synth
        for s in range(synth.num_steps):
            graph = TokenGraph.from_capture(source, s, heads=spec.heads_argument, residual=0.4)
            old = graph.to_tokens(rollout(graph, tokens).values.mean(axis=1))  # [layer, token]
            np.testing.assert_allclose(new.step_scores[s], old, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_report_frame_rollout_takes_the_residual(synth):
    """flowlens.report.report_frame is the one report frame builder; the pipeline passes its spec's residual."""
    from flowlens.analysis.step_rollout import rollout_all_steps
    from flowlens.report import report_frame

    frame = report_frame(synth, methods=("rollout",), residual=0.3)
    expected = rollout_all_steps(synth, residual=0.3).values.mean(axis=2)  # [step, layer, token]
    expected[..., ~synth.layout.valid] = np.nan
    np.testing.assert_allclose(frame.scores["rollout"][:, :, 0], expected, rtol=1e-6, equal_nan=True)
    default = report_frame(synth, methods=("rollout",)).scores["rollout"]  # residual 0.5
    assert not np.allclose(np.nan_to_num(frame.scores["rollout"]), np.nan_to_num(default))
