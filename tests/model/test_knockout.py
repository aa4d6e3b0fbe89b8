"""Attention knockouts: exactly the requested edges vanish, nothing else changes, empty rows are handled."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pi0_testkit as kit  # noqa: E402

from flowlens.core.openpi_layout import pi05_layout, pi0_layout  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.model import CaptureConfig, Knockout, sample_actions, sample_with_knockouts  # noqa: E402
from flowlens.model.knockout import resolve_knockouts  # noqa: E402

NAME = "test_tiny"


# ---- resolution (fast) ------------------------------------------------------------------------
def test_resolve_groups_layers_heads():
    lay = pi0_layout()
    plan = resolve_knockouts([Knockout("actions", "words", layers=range(9, 18)),
                              Knockout([816], np.arange(0, 10), heads=[3])], lay, num_layers=18, num_heads=8)
    assert plan.size == 2
    np.testing.assert_array_equal(np.flatnonzero(plan.queries[0]), lay.select(group="actions"))
    np.testing.assert_array_equal(np.flatnonzero(plan.keys[0]), lay.select(group="words"))
    assert plan.layer_heads[0, :9].sum() == 0 and plan.layer_heads[0, 9:].all()
    assert plan.layer_heads[1][:, 3].all() and plan.layer_heads[1].sum() == 18
    assert plan.emptied_rows == 0
    assert plan.description[0] == {"query": "actions", "key": "words", "layers": list(range(9, 18)),
                                   "heads": None}


def test_resolve_errors_name_the_problem():
    lay = pi05_layout()
    with pytest.raises(FlowlensError, match="Did you mean 'words'"):
        resolve_knockouts(Knockout("actions", "word"), lay, num_layers=18, num_heads=8)
    with pytest.raises(FlowlensError, match="'state' is not known"):  # Pi0.5 has no state token
        resolve_knockouts(Knockout("state", "words"), lay, num_layers=18, num_heads=8)
    with pytest.raises(FlowlensError, match="layer 18 out of range"):
        resolve_knockouts(Knockout("actions", "words", layers=[18]), lay, num_layers=18, num_heads=8)
    with pytest.raises(FlowlensError, match="token 5000"):
        resolve_knockouts(Knockout("actions", [5000]), lay, num_layers=18, num_heads=8)


def test_rows_losing_every_key_are_counted_or_refused():
    lay = pi0_layout()
    everything = list(lay.groups())
    ko = Knockout("state", everything, layers=[0, 1])
    plan = resolve_knockouts(ko, lay, num_layers=18, num_heads=8)
    assert plan.emptied_rows == 2 * 8
    with pytest.raises(FlowlensError, match="remove every key of 16"):
        resolve_knockouts(ko, lay, num_layers=18, num_heads=8, empty_rows="raise")


# ---- on the model (slow) ----------------------------------------------------------------------
@pytest.mark.slow
def test_knocking_out_nothing_changes_nothing():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    ref_actions, ref = kit.full_run(NAME)
    actions, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=3,
                                        capture=CaptureConfig(),
                                        knockouts=[])
    np.testing.assert_array_equal(actions, ref_actions)
    for a, b in zip(cap.passes, ref.passes, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)
    # An edit that selects no edge runs the edited code path; results are still bit-identical.
    actions, cap = sample_with_knockouts(model, params, obs, Knockout("actions", "words", layers=[]),
                                         noise=kit.noise(NAME), num_steps=3, capture=CaptureConfig())
    np.testing.assert_array_equal(actions, ref_actions)
    for a, b in zip(cap.passes, ref.passes, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)


@pytest.mark.slow
def test_knocked_edges_get_zero_and_rows_renormalise():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    ref_actions, ref = kit.full_run(NAME)
    kos = [Knockout("actions", "words", layers=range(9, 18)),
           Knockout("words", "base_0_rgb", layers=[4], heads=[2, 5])]
    actions, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=3,
                                        capture=CaptureConfig(),
                                        knockouts=kos)
    lay = cap.layout
    p = lay.prefix_len
    act, words, base = (lay.select(group=g) for g in ("actions", "words", "base_0_rgb"))
    assert not np.allclose(actions, ref_actions)
    assert cap.metadata["knockout_emptied_rows"] == 0 and len(cap.metadata["knockouts"]) == 2
    # Prefix pass: words -> base_0_rgb removed in layer 4, heads 2 and 5 only.
    pre, pre0 = cap.prefix.probs, ref.prefix.probs
    np.testing.assert_allclose(pre[:4], pre0[:4], atol=1e-6)  # earlier layers untouched
    sub = pre[4][:, words][:, :, base]
    assert (sub[[2, 5]] == 0).all() and (sub[[0, 1, 3, 4, 6, 7]] > 0).all()
    np.testing.assert_allclose(pre[4][[0, 1, 3, 4, 6, 7]], pre0[4][[0, 1, 3, 4, 6, 7]], atol=1e-6)
    keep = np.setdiff1d(np.arange(p), base)
    want = pre0[4][[2, 5]][:, words][:, :, keep]
    want = want / want.sum(-1, keepdims=True)  # renormalised over the remaining keys
    np.testing.assert_allclose(pre[4][[2, 5]][:, words][:, :, keep], want, atol=1e-5)
    # Suffix passes: actions -> words removed in layers 9..17 of every step, nothing else in layer 9.
    for s in range(3):
        st = cap.step(s).probs
        rows = act - p
        assert (st[9:][:, :, rows][..., words] == 0).all()
        assert (st[:9][:, :, rows][..., words] > 0).all()
        np.testing.assert_allclose(st[:, :, lay.select(group="state") - p].sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_suffix_knockout_alone_is_exact_at_its_first_layer():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    _, ref = kit.full_run(NAME)
    ko = Knockout("actions", ["words", "bos"], layers=[9, 10], heads=[0, 7])
    _, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=3, capture=CaptureConfig(),
                                  knockouts=ko)
    lay = cap.layout
    p = lay.prefix_len
    rows = lay.select(group="actions") - p
    keys = lay.select(group=["words", "bos"])
    np.testing.assert_array_equal(cap.prefix.probs, ref.prefix.probs)  # prefix pass untouched
    got, want = cap.step(0).probs, ref.step(0).probs
    np.testing.assert_allclose(got[:9], want[:9], atol=1e-6)
    assert (got[9][[0, 7]][:, rows][..., keys] == 0).all()
    np.testing.assert_allclose(got[9][1:7], want[9][1:7], atol=1e-6)
    w = want[9][[0, 7]][:, rows].copy()
    w[..., keys] = 0
    np.testing.assert_allclose(got[9][[0, 7]][:, rows], w / w.sum(-1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_row_without_keys_keeps_its_self_edge():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    lay = kit.full_run(NAME)[1].layout
    everything = list(lay.groups())
    _, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=3, knockouts=Knockout(
        "state", everything, layers=[3]), capture=CaptureConfig(layers=[3], prefix=False, query_rows="state"))
    state = int(lay.select(group="state")[0])
    for step in cap.steps:
        row = step.probs[0, :, 0]  # layer 3, every head, the state row
        np.testing.assert_array_equal(row[:, state], 1.0)
        assert row.sum() == 8.0
    assert cap.metadata["knockout_emptied_rows"] == 8
    with pytest.raises(FlowlensError, match="remove every key"):
        sample_actions(model, params, obs, noise=kit.noise(NAME), knockouts=Knockout("state", everything),
                             empty_rows="raise")


@pytest.mark.slow
def test_knockout_in_the_full_pass():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    ko = Knockout("actions", "base_0_rgb", layers=[0])
    v_ref, _ = model.forward(params, obs, kit.noise(NAME), 0.5)
    v, cap = model.forward(params, obs, kit.noise(NAME), 0.5, capture=CaptureConfig(layers=[0]), knockouts=ko)
    lay = cap.layout
    assert (cap.full.probs[0][:, lay.select(group="actions")][..., lay.select(group="base_0_rgb")] == 0).all()
    assert not np.allclose(v, v_ref)


def test_knockouts_take_selections():
    from flowlens.core.selection import Selection

    lay = pi0_layout()
    plan = resolve_knockouts([Knockout("actions[0:10]", "words:bowl | state"),
                              Knockout(Selection.group("cameras") - "patches:base_0_rgb[0:2,:]", "words")],
                             lay, num_layers=18, num_heads=8)
    assert np.flatnonzero(plan.queries[0]).tolist() == list(range(817, 827))
    assert np.flatnonzero(plan.keys[0]).tolist() == [773, 816]
    assert np.flatnonzero(plan.queries[1]).tolist() == list(range(32, 512))
    assert plan.description[0]["key"] == "words:bowl | state"
    assert plan.description[1]["query"] == "cameras - patches:base_0_rgb[0:2,:]"
    listed = resolve_knockouts(Knockout(["words:bowl", "state"], "bos"), lay, num_layers=18, num_heads=8)
    assert np.flatnonzero(listed.queries[0]).tolist() == [773, 816]
    with pytest.raises(FlowlensError, match=r"Knockout.key='words:bowel'.*Did you mean 'bowl'"):
        resolve_knockouts(Knockout("actions", "words:bowel"), lay, num_layers=18, num_heads=8)
