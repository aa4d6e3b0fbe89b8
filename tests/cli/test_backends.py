"""Backends behind ``--checkpoint``: the synthetic stand-in's structure, and clear errors for bad names."""

from __future__ import annotations

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.sources import Frame
from flowlens.pipeline.backends import CaptureNeeds, SyntheticBackend, load_backend, patch_saliency
from flowlens.pipeline.spec import AnalysisSpec


def _frame(index: int = 0) -> Frame:
    from flowlens.core.frame import FrameTransform

    img = np.full((64, 64, 3), 120, np.uint8)
    img[40:56, 8:24] = (220, 30, 30)  # one salient (red) object, bottom left
    return Frame(
        index=index,
        images={"base_0_rgb": img},
        prompt="pick up the red block",
        state=None,
        actions=None,
        transforms={"base_0_rgb": FrameTransform((64, 64), (224, 224))},
        missing_cameras=(),
    )


def test_saliency_finds_the_object():
    img = _frame().images["base_0_rgb"]
    from flowlens.core.frame import FrameTransform
    from flowlens.io.sources import to_model_input

    s = patch_saliency(to_model_input(img, FrameTransform((64, 64), (224, 224))), (16, 16)).reshape(16, 16)
    r, c = np.unravel_index(int(s.argmax()), s.shape)
    assert 10 <= r <= 13 and 2 <= c <= 5
    assert abs(float(s.mean())) < 1e-5


def test_synthetic_passes_do_not_depend_on_what_else_is_recorded():
    b = SyntheticBackend()
    f = _frame(3)
    raw = b.capture(f, CaptureNeeds(graph=False))
    full = b.capture(f, CaptureNeeds(steps=(0, 1, 2), all_heads=True))
    assert raw.prefix is None and full.prefix is not None and full.num_steps == 3
    np.testing.assert_allclose(full.step(0).probs.mean(axis=1, keepdims=True), raw.step(0).probs, atol=1e-6)
    # masked cameras and padding carry no rows; the third camera is absent from an MP4 rollout
    assert not np.isin(full.prefix.query_rows, np.flatnonzero(~full.layout.valid)).any()
    assert [c.valid for c in full.layout.cameras] == [True, False, False]


def test_synthetic_actions_look_at_the_salient_object():
    from flowlens.pipeline.analyze import analyze_capture
    from flowlens.projection import patch_grid

    cap = SyntheticBackend().capture(_frame(), CaptureNeeds(graph=False))
    result = analyze_capture(cap, AnalysisSpec(method="raw", query="actions"))
    grid = patch_grid(result.scores_at(17), result.layout, 0)
    r, c = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
    assert 9 <= r <= 14 and 1 <= c <= 6


@pytest.mark.parametrize(
    "name,message",
    [
        ("builtin:tabletopp", "tabletop"),
        ("synthetic:pi1", "synthetic variant"),
    ],
    ids=["unknown-builtin", "unknown-synthetic-variant"],
)
def test_bad_checkpoint_names(name, message):
    with pytest.raises(FlowlensError, match=message):
        load_backend(name)


def test_pi05_synthetic_has_no_state_token():
    b = load_backend("synthetic:pi05")
    cap = b.capture(_frame(), CaptureNeeds(graph=False))
    assert cap.layout.state is None and cap.layout.actions.size == 10
    with pytest.raises(FlowlensError, match="state"):
        AnalysisSpec(query="state").query_tokens(cap.layout)


def test_flow_method_scores_are_the_flow_of_the_query_through_each_layer():
    import dataclasses

    from flowlens import TokenGraph, flow
    from flowlens.pipeline.analyze import analyze_capture
    from flowlens.testing import synthetic_capture

    cap = synthetic_capture("toy", num_layers=3, num_heads=2, num_steps=1)
    result = analyze_capture(cap, AnalysisSpec(method="flow", query="action:0", layers=(0, 2)))
    g = TokenGraph.from_capture(cap, 0)
    first = dataclasses.replace(g, attention=g.attention[:1], layers=g.layers[:1])
    for layer, graph in ((0, first), (2, g)):
        expected = g.to_tokens(flow(graph, "action:0", normalize=True).values[0])
        np.testing.assert_array_equal(result.scores_at(layer), expected)
        assert np.nansum(result.scores_at(layer)) == pytest.approx(1.0)
        assert np.isnan(result.scores_at(layer)[~cap.layout.valid]).all()
