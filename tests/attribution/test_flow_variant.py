"""Attention flow over ALTI capacities tells the action queries apart; classic flow does not (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from flowlens.attribution import METHODS, query_spread
from flowlens.errors import FlowlensError


def test_query_spread_literal_values():
    assert query_spread(np.array([[1.0, 1.0], [1.0, 1.0]])) == 0.0
    assert query_spread(np.array([[3.0, 1.0], [1.0, 3.0]])) == pytest.approx(0.5)
    # invalid tokens are left out before normalising
    assert query_spread(np.array([[1.0, 5.0], [1.0, 9.0]]), valid=np.array([True, False])) == 0.0
    with pytest.raises(FlowlensError, match="at least 2 queries"):
        query_spread(np.ones((1, 3)))


@pytest.mark.slow
def test_alti_flow_discriminates_queries_where_classic_flow_does_not():
    """Measured on the embedded model (2 held-out frames, action queries a0..a3, step 0, last layer):
    the spread of flow over ALTI is ≥ 5× that of classic flow (benchmarks/bench_attribution.py: 0.032 vs
    0.002 on the first frame)."""
    import jax

    from flowlens.analysis.flow import flow
    from flowlens.core.graph import TokenGraph
    from flowlens.model import CaptureConfig, sample_actions
    from flowlens.model.pi0 import Pi0Model
    from flowlens.tasks.tabletop.builtin import load_builtin, load_builtin_norm_stats
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    model = Pi0Model(config)
    classic, variant = [], []
    for case in held_out_cases(2, render_frames=True):
        views = case.episode.render_frame(case.t)
        obs = observe({c: views[c][0] for c in config.cameras}, case.scene.prompt, case.episode.states[case.t],
                      tok, config, stats)
        _, cap = sample_actions(model, params, obs, rng=jax.random.key(0), num_steps=1,
                                capture=CaptureConfig(residual=True, query_rows="valid"))
        queries = cap.layout.actions.start + np.arange(4)
        graph = TokenGraph.from_capture(cap, 0, residual=0.5)
        maps = []
        for q in queries:
            res = flow(graph, [q], normalize=True)
            values = np.zeros(graph.num_nodes)
            values[graph.node_index(res.sources)] = res.values[0]
            maps.append(graph.to_tokens(values))
        classic.append(query_spread(np.stack(maps), cap.layout.valid))
        alti = METHODS["alti_flow"]
        variant.append(query_spread(np.stack([alti(model, params, None, cap, query=[q]).values[0, -1]
                                              for q in queries]), cap.layout.valid))
    assert np.mean(variant) >= 5 * np.mean(classic), (variant, classic)
    assert np.mean(variant) > 0.01
