"""Evidence on the embedded model: interventions share the clean run's noise; batching changes nothing."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.hypotheses import Evidence, Hypothesis, evaluate, mass, prefetch_actions
from flowlens.model.knockout import Knockout


@pytest.fixture(scope="module")
def tabletop():
    from flowlens.pipeline.backends import load_backend
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    backend = load_backend("builtin:tabletop")
    cfg = backend.config
    evs = []
    for i, case in enumerate(held_out_cases(3)):
        views = case.episode.render_frame(case.t)
        obs = observe({c: views[c][0] for c in cfg.cameras}, case.scene.prompt, case.episode.states[case.t],
                      backend.tokenizer, cfg, backend.norm_stats)
        evs.append((f"s{i}", obs, {"scene": case.scene.seed}))
    return backend, evs


def fresh(tabletop):
    backend, items = tabletop
    return [Evidence(k, backend, observation=o, labels=dict(lab), stream=i) for i, (k, o, lab) in enumerate(items)]


def test_knocking_out_an_edge_without_mass_changes_nothing(tabletop):
    ev = fresh(tabletop)[0]
    clean = ev.actions()
    assert clean.shape == (tabletop[0].config.action_horizon, tabletop[0].config.action_dim)
    # The prefix never attends to the suffix (block-causal mask): cutting words → actions is a no-op.
    np.testing.assert_array_equal(ev.actions([Knockout("words", "actions")]), clean)
    assert not np.array_equal(ev.actions([Knockout(["base_0_rgb", "left_wrist_0_rgb"], "words")]), clean)
    assert ev.actions() is clean  # cached


def test_batched_prefetch_matches_frame_by_frame(tabletop):
    one, many = fresh(tabletop), fresh(tabletop)
    ko = [Knockout("actions", "words", layers=range(9, 18))]
    calls = prefetch_actions(many, ko, batch_size=2)
    assert calls >= 2
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(b.actions(ko), a.actions(ko), atol=2e-4)


@pytest.mark.slow
def test_capture_runs_on_the_same_noise_and_feeds_statistics(tabletop):
    evs = fresh(tabletop)
    ev = evs[0]
    cap = ev.capture()
    assert cap is ev.capture() and cap.layout.n == ev.layout.n
    ref = fresh(tabletop)[0].actions()
    np.testing.assert_allclose(ev.actions(), ref, atol=1e-5)
    h = Hypothesis("actions read words above a tenth", lambda e: mass(e.graph(), "actions", "words"), null=0.1,
                   prefetch=lambda v: [[Knockout("actions", "words")]])
    t = evaluate([h], evs, n_resamples=999).table
    assert t.n.tolist() == [3] and 0 < t.mean_a[0] < 1


def test_evidence_needs_a_frame_or_an_observation(tabletop):
    with pytest.raises(FlowlensError, match="needs a frame"):
        Evidence("nothing", tabletop[0])
    with pytest.raises(FlowlensError, match="must be a flowlens.model.knockout.Knockout"):
        fresh(tabletop)[0].actions(["actions"])
