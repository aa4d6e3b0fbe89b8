"""Hypotheses over frames: the forms, sweeps, the table, and clear errors for bad hypotheses."""

from types import SimpleNamespace

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.hypotheses import Evidence, Hypothesis, evaluate, frame_values, mass, summarize
from flowlens.pipeline.backends import SyntheticBackend


def fake(i, **labels):
    """A stand-in evidence: statistics below read labels only."""
    return SimpleNamespace(key=f"ep/{i}", labels=labels)


FRAMES = [fake(i, x=x, y=y, ok=ok) for i, (x, y, ok) in enumerate(
    [(1.0, 0.0, True), (2.0, 0.5, True), (3.0, 1.0, False), (4.0, 0.0, False), (5.0, 1.5, True)])]


def test_three_forms_give_literal_tables():
    hs = [
        Hypothesis("x above 1", lambda ev: ev.labels["x"], null=1.0),
        Hypothesis("x vs y", lambda ev: {"x": ev.labels["x"], "y": ev.labels["y"]}, compare=("x", "y")),
        Hypothesis("ok vs not", lambda ev: ev.labels["x"], by="ok"),
    ]
    t = evaluate(hs, FRAMES, n_resamples=999).table
    assert list(t.hypothesis) == ["x above 1", "x vs y", "ok vs not"]
    assert list(t.test) == ["one_sample", "paired", "two_sample"]
    assert t.effect.tolist() == pytest.approx([2.0, 3.0 - 0.6, 8 / 3 - 3.5])
    assert list(t.a) == ["value", "x", "ok=True"] and list(t.b) == ["null=1", "y", "ok=False"]
    assert t.n.tolist() == [5, 5, 5] and t.n_a.tolist()[2] == 3
    # x − 1 = 0, 1, 2, 3, 4: 2⁵ sign patterns exactly; |mean| ≥ 2 only for the 2 with all of 1..4 one sign.
    assert t.p_value[0] == pytest.approx(4 / 32)
    assert (t.ci_low <= t.effect).all() and (t.effect <= t.ci_high).all()


def test_per_frame_null_and_sweep_with_holm():
    h = Hypothesis("x beats y", lambda ev, k: k * ev.labels["x"], null=lambda ev, k: ev.labels["y"],
                   sweep=[0, 1, 2], alternative="greater")
    res = evaluate([h], FRAMES, n_resamples=999)
    t = res.table
    assert t.sweep.tolist() == ["0", "1", "2"]
    assert t.effect.tolist() == pytest.approx([-0.6, 3.0 - 0.6, 6.0 - 0.6])
    ordered = np.sort(t.p_value.to_numpy())
    assert np.sort(t.p_adjusted.to_numpy())[0] == pytest.approx(min(1.0, 3 * ordered[0]))
    assert set(res.values.condition) == {"value", "null"} and len(res.values) == 5 * 3 * 2


def test_none_skips_a_frame_and_values_resume_into_the_same_table():
    h = Hypothesis("odd only", lambda ev: ev.labels["x"] if ev.labels["x"] % 2 else None, null=0.0)
    rows = [r for ev in FRAMES for r in frame_values([h], ev)]
    assert [r["value"] for r in rows] == [1.0, 3.0, 5.0]
    assert summarize(rows, [h], n_resamples=999).n.tolist() == [3]


@pytest.mark.parametrize("stat, match", [
    (lambda ev: float("nan"), "returned nan"),
    (lambda ev: "high", "must return a number, got str"),
    (lambda ev: np.array([1.0, 2.0]), "must return a number"),
    (lambda ev: True, "must return a number, got bool"),
])
def test_bad_statistic_values_name_the_hypothesis_frame_and_fix(stat, match):
    with pytest.raises(FlowlensError, match=match) as e:
        evaluate([Hypothesis("bad", stat)], FRAMES)
    assert "'bad'" in str(e.value) and "ep/0" in str(e.value)


def test_paired_statistic_must_return_the_compared_keys():
    h = Hypothesis("pairs", lambda ev: {"x": 1.0}, compare=("x", "y"))
    with pytest.raises(FlowlensError, match=r"exactly the keys \['x', 'y'\]"):
        evaluate([h], FRAMES)


def test_empty_group_and_missing_label_are_named():
    h = Hypothesis("by ok", lambda ev: ev.labels["x"], by="ok", groups=(True, "maybe"))
    with pytest.raises(FlowlensError, match=r"group ok=maybe has no frames"):
        evaluate([h], FRAMES, n_resamples=999)
    one = [fake(i, x=float(i), ok=True) for i in range(4)]
    with pytest.raises(FlowlensError, match=r"takes 1 values \['True'\].*groups=\(a, b\)"):
        evaluate([Hypothesis("by ok", lambda ev: ev.labels["x"], by="ok")], one, n_resamples=999)
    with pytest.raises(FlowlensError, match="has no label 'outcome'.*labels are"):
        evaluate([Hypothesis("by outcome", lambda ev: 1.0, by="outcome")], FRAMES)


def test_all_none_and_bad_definitions_are_refused():
    with pytest.raises(FlowlensError, match="returned None for every frame"):
        evaluate([Hypothesis("never", lambda ev: None)], FRAMES)
    with pytest.raises(FlowlensError, match="give one of null="):
        Hypothesis("both", lambda ev: 1.0, null=0.0, by="ok")
    with pytest.raises(FlowlensError, match="statistic must be a function"):
        Hypothesis("no fn", 3.0)
    with pytest.raises(FlowlensError, match="sweep is empty"):
        Hypothesis("empty sweep", lambda ev, v: 1.0, sweep=[])
    with pytest.raises(FlowlensError, match="unique"):
        evaluate([Hypothesis("a", lambda ev: 1.0), Hypothesis("a", lambda ev: 2.0)], FRAMES)
    with pytest.raises(FlowlensError, match="must be a flowlens.hypotheses.Hypothesis"):
        evaluate(["a"], FRAMES)


def synthetic_evidence(i=0):
    from flowlens.io.sources.base import Frame

    img = np.random.default_rng(i).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    from flowlens.core.frame import FrameTransform

    frame = Frame(i, {"base_0_rgb": img}, "pick up the red cube", None, None,
                  {"base_0_rgb": FrameTransform((56, 56), (56, 56))}, ())
    return Evidence(f"syn/{i}", SyntheticBackend(num_layers=3, num_heads=2, num_steps=2), frame=frame,
                    labels={"i": i})


def test_unknown_selection_is_named_with_a_suggestion():
    h = Hypothesis("wrist", lambda ev: mass(ev.graph(), "actions", "base_0_rg"))
    with pytest.raises(FlowlensError, match=r"hypothesis 'wrist' on frame 'syn/0'.*base_0_rg.*Did you mean 'base_0_rgb'"):
        evaluate([h], [synthetic_evidence(0), synthetic_evidence(1)])


def test_synthetic_evidence_caches_its_capture_and_refuses_interventions():
    ev = synthetic_evidence(3)
    assert ev.capture() is ev.capture()
    assert ev.layout.n == ev.capture().layout.n
    words = mass(ev.graph(), "actions", "words")
    assert 0 < words < 1
    with pytest.raises(FlowlensError, match="needs a model.*builtin:tabletop"):
        ev.actions()
    with pytest.raises(FlowlensError, match="CaptureConfig"):
        ev.capture(config="all")
