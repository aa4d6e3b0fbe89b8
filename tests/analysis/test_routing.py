import numpy as np
import pandas as pd
import pytest

from flowlens import FlowlensError
from flowlens.analysis.routing import ROUTING_COLUMNS, routing_table
from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.testing import capture_from_joint, structured_capture, toy_layout

# base_0_rgb patches 0, 1; masked camera 2-3; <bos> 4, cup 5, "\n" 6; state 7; action 8.
TINY = toy_layout("cup", grid=(1, 2), text_len=3, horizon=1)
P0, P1, CUP, ACT = 0, 1, 5, 8


def hand_capture():
    """Two layers, two heads, r = 0.5, worked by hand.
    layer 0: head 0: action → patch 0; head 1: action → cup; cup → patch 1 (both heads).
    layer 1: action → cup (both heads). Every other valid token reads itself.
    Head-mean A0[action] = 0.5 p0 + 0.5 cup, A1[action] = cup.
    Rollout (T = 0.5·A + 0.5·I): J0[action] = 0.25 p0 + 0.25 cup + 0.5 action;
    J1[action] = 0.5·J0[cup] + 0.5·J0[action], J0[cup] = 0.5 p1 + 0.5 cup
              = 0.25 p1 + 0.125 p0 + 0.375 cup + 0.25 action."""
    a = np.zeros((2, 2, TINY.n, TINY.n), np.float32)
    for t in np.flatnonzero(TINY.valid):
        a[:, :, t, t] = 1.0
    a[:, :, ACT] = a[:, :, CUP] = 0.0
    a[0, 0, ACT, P0] = a[0, 1, ACT, CUP] = 1.0
    a[:, :, CUP, P1] = 1.0
    a[1, :, ACT, CUP] = 1.0
    return capture_from_joint(TINY, a)


def values(table, **where):
    sel = np.ones(len(table), dtype=bool)
    for col, want in where.items():
        sel &= (table[col].isna() if want is None else table[col] == want).to_numpy(dtype=bool, na_value=False)
    return table[sel].value.tolist()


def test_hand_worked_table():
    t = routing_table(hand_capture(), [("actions", "cameras"), ("actions", "words"), ("words", "cameras")],
                      heads="keep")
    assert tuple(t.columns) == ROUTING_COLUMNS
    assert len(t) == 2 * 3 * (1 + 2 + 1)  # layers × pairs × (fused + 2 heads + rollout)
    assert values(t, measure="attention", key="cameras", query="actions", head=None) == [0.5, 0.0]
    assert values(t, measure="attention", key="cameras", query="actions", head=0) == [1.0, 0.0]
    assert values(t, measure="attention", key="cameras", query="actions", head=1) == [0.0, 0.0]
    assert values(t, measure="attention", key="words", query="actions", head=None) == [0.5, 1.0]
    assert values(t, measure="rollout", key="cameras", query="actions") == pytest.approx([0.25, 0.375], abs=1e-12)
    assert values(t, measure="rollout", key="words", query="actions") == pytest.approx([0.25, 0.375], abs=1e-12)
    assert values(t, measure="rollout", key="cameras", query="words") == pytest.approx([0.5, 0.75], abs=1e-12)
    assert t.step.tolist() == [0] * len(t) and t.time.tolist() == [1.0] * len(t)
    assert t.layer.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]


def direct_table(cap, pairs, layers):
    """Direct numpy: the head-mean mass from the stitched [layer, n, n] attention of step 0."""
    lay = cap.layout
    n, p_len = lay.n, lay.prefix_len
    full = np.zeros((cap.num_layers, cap.num_heads, n, n))
    pre, suf = cap.prefix, cap.step(0)
    full[:, :, pre.query_rows, :p_len] = pre.probs
    full[:, :, suf.query_rows, :] = suf.probs
    out = []
    for q, k in pairs:
        qi, ki = lay.select(group=q), lay.select(group=k)
        per_head = full[:, :, qi][..., ki].sum(-1).mean(-1)  # [layer, head]
        out.append(per_head[layers])
    return out


def test_structured_capture_equals_direct_numpy():
    lay = toy_layout()
    cap = structured_capture(lay, num_layers=3, num_heads=2, num_steps=1)
    pairs = [("actions", "words"), ("state", "base_0_rgb"), ("words", "bos")]
    t = routing_table(cap, pairs, heads="all", layers="1-2", rollout=False)
    direct = direct_table(cap, pairs, [1, 2])
    for (q, k), want in zip(pairs, direct, strict=True):
        for h in range(2):
            np.testing.assert_allclose(values(t, query=q, key=k, head=h), want[:, h], rtol=1e-6)
        np.testing.assert_allclose(values(t, query=q, key=k, head=None), want.mean(axis=1), rtol=1e-6)
    assert set(t.measure) == {"attention"} and sorted(set(t.layer)) == [1, 2]


def test_rollout_rows_equal_the_rollout_module():
    from flowlens import TokenGraph, rollout

    lay = toy_layout()
    cap = structured_capture(lay, num_layers=3, num_heads=2, num_steps=3)
    t = routing_table(cap, [("actions", "words | state")], steps="0,2")
    for step in (0, 2):
        g = TokenGraph.from_capture(cap, step)
        r = rollout(g, "actions", precision="float64").values  # [layer, query, node]
        want = r[:, :, g.node_index(lay.select(group=["words", "state"]))].sum(-1).mean(-1)
        np.testing.assert_allclose(values(t, measure="rollout", step=step), want, atol=1e-12)
    assert sorted(set(t.step)) == [0, 2]


def test_many_frames_are_labelled():
    lay = toy_layout()
    caps = {f"ep{i}": structured_capture(lay, num_layers=2, num_heads=2, num_steps=1, stream=(i,)) for i in range(2)}
    t = routing_table(caps, ("actions", "words"))
    assert t.frame.tolist() == ["ep0"] * 4 + ["ep1"] * 4
    assert values(t, frame="ep0") != values(t, frame="ep1")
    listed = routing_table(list(caps.values()), ("actions", "words"))
    assert listed.frame.tolist() == [0] * 4 + [1] * 4
    assert isinstance(listed, pd.DataFrame)


def test_full_pass_capture_has_no_step():
    lay = toy_layout()
    a = np.full((1, 1, lay.n, lay.n), 1.0 / lay.n, np.float32) * lay.attention_mask()
    a /= np.maximum(a.sum(-1, keepdims=True), 1e-9)
    cap = Capture(layout=lay, num_layers=1, num_heads=1,
                  passes=(AttentionPass(PassKind.FULL, a, (0,), np.arange(lay.n)),))
    t = routing_table(cap, [("actions", "state")])
    assert t.step.isna().all() and t.time.isna().all()
    assert values(t, measure="attention") == pytest.approx([1 / 14])  # 14 valid keys, uniform


def test_bad_inputs():
    cap = hand_capture()
    with pytest.raises(FlowlensError, match="pairs must be a list of \\(query, key\\) selections"):
        routing_table(cap, ["actions"])
    with pytest.raises(FlowlensError, match="key='wrds'.*Did you mean 'words'"):
        routing_table(cap, [("actions", "wrds")])
    with pytest.raises(FlowlensError, match="captures must be a Capture"):
        routing_table("cap", [("actions", "words")])
    with pytest.raises(FlowlensError, match=r"steps=3: this capture recorded denoising steps \[0\]"):
        routing_table(cap, [("actions", "words")], steps=3)
    with pytest.raises(FlowlensError, match="layers: layers 5 out of range"):
        routing_table(cap, [("actions", "words")], layers=5)
    with pytest.raises(FlowlensError, match="heads: heads 4 out of range"):
        routing_table(cap, [("actions", "words")], heads=[4])
    mean_only = structured_capture(toy_layout(), num_layers=1, num_heads=2, num_steps=1, head_reduction="mean")
    assert len(routing_table(mean_only, [("actions", "words")])) == 2
    with pytest.raises(FlowlensError, match="per-head analysis needs every head"):
        routing_table(mean_only, [("actions", "words")], heads="keep")
