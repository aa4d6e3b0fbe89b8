"""The denoising-step dimension (flowlens.analysis.steps, flowlens.analysis.step_rollout)."""

import dataclasses

import numpy as np
import pytest

from flowlens import FlowlensError, TokenGraph, rollout
from flowlens.analysis.actions import action_attention, action_rollout
from flowlens.analysis.head_grids import head_grids, head_image_grid
from flowlens.analysis.head_roles import LN2, head_roles, head_similarity
from flowlens.analysis.heads import head_stats
from flowlens.analysis.step_rollout import resolve_steps, rollout_all_steps, rollout_costs
from flowlens.analysis.steps import (
    action_rollout_by_step,
    by_step,
    mean_over_steps,
    step_evolution,
    step_report,
)
from flowlens.core import make_capture
from flowlens.testing import synthetic_capture, toy_layout

CAP = synthetic_capture("toy", num_layers=4, num_heads=3, num_steps=4, seed=11)


def per_step_reference(cap, steps, query=None, **kw):
    out = []
    for s in steps:
        graph = TokenGraph.from_capture(
            cap, s, heads=kw.get("heads", "mean"), residual=kw.get("residual", 0.5)
        )
        roll = rollout(graph, query, all_layers=kw.get("all_layers", True), precision="float64")
        out.append(graph.to_tokens(roll.values, fill=0.0))
    return np.stack(out)


@pytest.mark.parametrize("method", ["forward", "stacked", "per_step", "auto"])
@pytest.mark.parametrize("all_layers", [True, False], ids=["all-layers", "last-layer"])
@pytest.mark.parametrize("residual", [0.5, 0.0, 0.9], ids=["r0.5", "r0", "r0.9"])
def test_rollout_all_steps_equals_per_step_rollout(method, all_layers, residual):
    if method == "stacked" and all_layers:
        with pytest.raises(FlowlensError, match="gives the last layer only"):
            rollout_all_steps(CAP, residual=residual, all_layers=True, method=method)
        return
    got = rollout_all_steps(CAP, residual=residual, all_layers=all_layers, method=method, precision="float64")
    ref = per_step_reference(CAP, range(4), residual=residual, all_layers=all_layers)
    assert got.values.shape == ref.shape == (4, 4 if all_layers else 1, 3, 20)
    np.testing.assert_allclose(got.values, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["forward", "stacked", "per_step"])
def test_mixed_queries_step_subset_and_head_choice(method):
    query = [0, 9, 16, 18]  # a patch, a word, the state, an action
    kw = {"heads": 1, "all_layers": method != "stacked"}
    got = rollout_all_steps(CAP, query=query, steps=[3, 1], method=method, precision="float64", **kw)
    np.testing.assert_allclose(got.values, per_step_reference(CAP, [3, 1], query, **kw), atol=1e-10)
    assert got.steps == (3, 1) and got.heads == "head 1"


def test_float32_default_is_close_and_helpers():
    got = rollout_all_steps(CAP)
    ref = per_step_reference(CAP, range(4))
    np.testing.assert_allclose(got.values, ref, atol=1e-5)
    np.testing.assert_allclose(got.final, ref[:, -1], atol=1e-5)
    np.testing.assert_allclose(got.mean(), ref.mean(axis=0), atol=1e-5)
    names, shares = got.group_shares()
    assert shares.shape == (4, len(names)) and names == tuple(CAP.layout.groups())
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-5)


def test_auto_picks_the_cheaper_method_at_pi0_scale():
    dims = {"num_layers": 18, "num_steps": 10, "prefix": 527, "suffix": 51, "queries": 50}
    all_costs = rollout_costs(**dims, all_layers=True)
    assert min(all_costs, key=all_costs.get) == "forward"
    last = rollout_costs(**dims, all_layers=False)
    assert min(last, key=last.get) == "stacked"


def test_by_step_and_mean_over_steps():
    series = by_step(head_stats, CAP)
    assert series.steps == (0, 1, 2, 3) and len(series.times) == 4
    mean = series.mean()
    np.testing.assert_allclose(mean.group_mass, series.stack("group_mass").mean(axis=0))
    assert mean.step is None and mean.time is None
    assert series.at(2).step == 2
    # linear statistics of the mean = statistics of the step-averaged attention
    avg = make_capture(
        CAP.layout, prefix_probs=CAP.prefix.probs, step_probs=[np.mean([p.probs for p in CAP.steps], axis=0)]
    )
    np.testing.assert_allclose(mean.key_mass, head_stats(avg).key_mass, atol=1e-6)
    np.testing.assert_allclose(
        by_step(action_attention, CAP).mean().values, action_attention(avg).values, atol=1e-6
    )
    sim = by_step(head_similarity, CAP, steps=[0, 1]).mean()
    assert sim.matrix.shape == (12, 12) and (sim.matrix <= LN2).all()
    grid = by_step(head_image_grid, CAP).mean()
    assert grid.vmax == grid.values.max()
    grids = by_step(head_grids, CAP, steps=[0, 2]).mean()
    np.testing.assert_allclose(
        grids["base_0_rgb"].values, by_step(head_image_grid, CAP, steps=[0, 2]).mean().values
    )


def test_mean_over_steps_refuses_fields_that_cannot_be_averaged():
    @dataclasses.dataclass(frozen=True)
    class Labelled:
        labels: np.ndarray
        step: int

    with pytest.raises(FlowlensError, match="cannot average Labelled.labels"):
        mean_over_steps([Labelled(np.array([0, 1]), 0), Labelled(np.array([1, 0]), 1)])
    roles = by_step(head_roles, CAP, k=2)
    assert len(roles.results) == 4  # per step is fine; averaging needs identical labels
    with pytest.raises(FlowlensError, match="one type"):
        mean_over_steps([1.0, 2.0])


def test_action_rollout_by_step_matches_single_step():
    series = action_rollout_by_step(CAP)
    for s in (0, 3):
        np.testing.assert_allclose(series.at(s).values, action_rollout(CAP, step=s).values, atol=1e-5)
    assert series.mean().values.shape == (4, 1, 3, 3)


def test_step_evolution_literals():
    maps = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ev = step_evolution(maps, steps=[0, 1, 2])
    np.testing.assert_allclose(ev.tv, [1.0, 0.0])
    np.testing.assert_allclose(ev.js, [np.sqrt(LN2), 0.0])
    np.testing.assert_allclose(ev.tv_to_mean, [2 / 3, 1 / 3, 1 / 3])
    assert ev.most_different_step == 0 and ev.largest_change == 1
    assert ev.total_tv == pytest.approx(0.5)
    same = step_evolution(np.ones((3, 2, 5)))
    assert same.total_tv == 0.0 and same.tv.shape == (2, 2)


def test_step_report_on_constant_and_drifting_steps():
    rep = step_report(CAP)
    assert rep.attention_shares.shape == (4, 4, len(rep.groups))
    np.testing.assert_allclose(rep.attention_shares.sum(-1), 1.0)
    np.testing.assert_allclose(rep.rollout_shares.sum(-1), 1.0, atol=1e-5)
    assert set(rep.summary()) == {"attention", "rollout", "actions"}
    assert rep.attention.total_tv > 0 and len(rep.most_changing_heads(3)) == 3
    frozen = make_capture(CAP.layout, prefix_probs=CAP.prefix.probs, step_probs=[CAP.steps[0].probs] * 3)
    flat = step_report(frozen)
    assert flat.attention.total_tv == 0.0 and flat.actions.total_tv == 0.0
    assert flat.rollout.total_tv < 1e-6


def test_step_errors():
    with pytest.raises(FlowlensError, match="Did you mean 'all'"):
        resolve_steps(CAP, "al")
    with pytest.raises(FlowlensError, match="step 9 out of range"):
        rollout_all_steps(CAP, steps=[9])
    with pytest.raises(FlowlensError, match="last layer only"):
        rollout_all_steps(CAP, method="stacked")
    with pytest.raises(FlowlensError, match="Did you mean 'forward'"):
        rollout_all_steps(CAP, method="froward")
    with pytest.raises(FlowlensError, match="fused heads"):
        rollout_all_steps(CAP, heads="keep")
    no_prefix = make_capture(toy_layout(), step_probs=[CAP.steps[0].probs])
    with pytest.raises(FlowlensError, match="prefix pass"):
        rollout_all_steps(no_prefix)
    with pytest.raises(FlowlensError, match="not in this series"):
        by_step(head_stats, CAP, steps=[0]).at(1)
