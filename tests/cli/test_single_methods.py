"""``flowlens single --method alti|norm|...`` end to end, and the errors of a run that cannot serve them."""

from __future__ import annotations

import numpy as np
import pytest

from flowlens.attribution import METHODS, attribute
from flowlens.errors import FlowlensError
from flowlens.pipeline.spec import METHODS as SPEC_METHODS
from flowlens.pipeline.spec import AnalysisSpec


def test_registry_methods_are_cli_methods_with_their_needs():
    assert {"norm", "alti", "value_zeroing", "alti_flow"} <= set(METHODS)
    assert set(METHODS) <= set(SPEC_METHODS)
    assert all("residual" in METHODS[m].needs for m in ("norm", "alti", "value_zeroing", "alti_flow"))
    spec = AnalysisSpec(method="alti")
    assert spec.needs_residual and spec.method_label == "ALTI" and not AnalysisSpec().needs_residual
    with pytest.raises(FlowlensError, match="did you mean|alti"):
        AnalysisSpec(method="altii")


def test_synthetic_backend_says_alti_needs_a_model(libero_tree, cli):
    code, _, err = cli("single", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--checkpoint",
                       "synthetic", "--method", "alti", "--viz-type", "image", "--output", "x.png")
    assert code != 0
    assert "--method alti reads the model's weights" in err and "builtin:tabletop" in err


def test_attribute_without_a_capture_is_an_error():
    with pytest.raises(FlowlensError, match="needs a Capture"):
        attribute("alti", None, None, None, None)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["alti", "norm", "relevancy", "ig"])  # ig: 8 path intervals
def test_single_method_on_builtin_tabletop(libero_tree, cli, png_ok, method):
    code, out, err = cli("single", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--frame-idx", "2",
                         "--checkpoint", "builtin:tabletop", "--method", method, "--viz-type", "image",
                         "--output", f"{method}.png")
    assert code == 0, err
    png_ok(libero_tree / f"{method}.png")
    assert METHODS[method].label in out


@pytest.fixture
def tabletop_frame(libero_tree):
    """(builtin:tabletop backend, frame 0 of the LIBERO test episode)."""
    from flowlens.pipeline.backends import load_backend
    from flowlens.pipeline.sources import open_source

    return load_backend("builtin:tabletop"), open_source(video="data/libero/90/videos/rollout_task0_ep0.mp4").frame(0)


@pytest.mark.slow
def test_pipeline_alti_scores_on_tabletop(tabletop_frame):
    from flowlens.pipeline.analyze import compute_scores
    from flowlens.pipeline.frames import capture_needs

    backend, frame = tabletop_frame
    spec = AnalysisSpec(method="alti")
    capture = backend.capture(frame, capture_needs(spec, ("image",), backend.num_steps))
    res = compute_scores(capture, spec, backend=backend)
    last = res.scores[0, -1]
    valid = capture.layout.valid
    # ALTI rollout of one query: a distribution over the input tokens
    np.testing.assert_allclose(np.nansum(last), 1.0, rtol=1e-4)
    assert np.isnan(last[~valid]).all() and (last[valid] >= 0).all()
    with pytest.raises(FlowlensError, match="no model and parameters"):
        compute_scores(capture, spec)
    plain = backend.capture(frame, capture_needs(AnalysisSpec(heads=[0]), ("image",), backend.num_steps))
    with pytest.raises(FlowlensError, match=r"needs the residual stream.*CaptureConfig\(residual=True"):
        compute_scores(plain, spec, backend=backend)



@pytest.mark.slow
def test_report_method_switch_holds_alti_and_its_flow(libero_tree, cli):
    code, out, err = cli("report", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--frames", "0",
                         "--checkpoint", "builtin:tabletop", "--output", "rep.html", "--no-progress",
                         "--methods", "raw", "alti", "alti_flow")
    assert code == 0, err
    html = (libero_tree / "rep.html").read_text(encoding="utf-8")
    for label in ("ALTI", "ALTI flow", "raw attention"):
        assert f'"label": "{label}"' in html or f'"label":"{label}"' in html, label


def test_registry_is_read_only_and_holds_the_gradient_methods():
    import flowlens.attribution as attribution

    with pytest.raises(TypeError):
        METHODS["mine"] = METHODS["alti"]
    assert not hasattr(attribution, "register")
    assert METHODS["relevancy"].needs == ("gradient", "obs") and METHODS["ig"].needs == ("gradient", "obs")
    assert AnalysisSpec(method="ig").method_label == "Integrated Gradients"


def test_default_target_is_the_first_action_along_itself():
    from types import SimpleNamespace

    from flowlens.attribution.gradient_methods import default_target

    t = default_target(SimpleNamespace(actions=np.array([[3.0, -4.0], [1.0, 1.0]])))
    assert t.horizon == (0,) and t.dims == (0, 1) and t.step is None
    np.testing.assert_allclose(t.coefficients, (0.6, -0.8))
    np.testing.assert_allclose(t.weights(2, 2, 1), [[0.6, -0.8], [0.0, 0.0]])
    with pytest.raises(FlowlensError, match="no direction"):
        default_target(SimpleNamespace(actions=np.zeros((2, 2))))
    with pytest.raises(FlowlensError, match="capture.actions is None"):
        default_target(SimpleNamespace(actions=None))


@pytest.mark.slow
def test_pipeline_relevancy_explains_the_captured_run(tabletop_frame):
    from flowlens.attribution import chefer_relevancy
    from flowlens.attribution.gradient_methods import default_target
    from flowlens.model.gradients import attention_gradients
    from flowlens.model.sampler import sample_actions
    from flowlens.pipeline.analyze import compute_scores
    from flowlens.pipeline.frames import capture_needs, gradient_inputs

    backend, frame = tabletop_frame
    spec = AnalysisSpec(method="relevancy", query="actions")
    capture = backend.capture(frame, capture_needs(spec, ("image",), backend.num_steps), seed=3)
    inputs = gradient_inputs(backend, frame, "relevancy", seed=3)
    # the noise handed to the gradient methods is the noise the capture was sampled from
    actions, _ = sample_actions(backend.model, backend.params, inputs["obs"], noise=inputs["noise"])
    np.testing.assert_allclose(np.asarray(actions)[0], capture.actions, rtol=1e-5, atol=1e-6)
    res = compute_scores(capture, spec, backend=backend, gradient_inputs=inputs)
    grads = attention_gradients(backend.model, backend.params, inputs["obs"], default_target(capture),
                                noise=inputs["noise"])
    want = chefer_relevancy(grads, "actions", steps=[0]).token_scores()
    np.testing.assert_allclose(res.scores[0, -1], want, rtol=1e-6, equal_nan=True)
    assert np.allclose(res.scores[0, 0], res.scores[0, -1], equal_nan=True)  # one whole-model map per layer
    assert gradient_inputs(backend, frame, "alti") is None
    with pytest.raises(FlowlensError, match="needs the observation"):
        compute_scores(capture, spec, backend=backend)
    with pytest.raises(FlowlensError, match="needs a gradient through the sampler.*noise"):
        compute_scores(capture, spec, backend=backend, gradient_inputs={"obs": inputs["obs"]})


def test_parse_target_reads_the_cli_forms():
    from flowlens.attribution.gradient_methods import parse_target

    assert parse_target("first-action") is None
    t = parse_target("dim:3")
    assert t.horizon == (0,) and t.dims == (3,) and t.coefficients is None
    h = parse_target("heading:0.6,-0.8")
    assert h.horizon == (0, 1, 2, 3, 4) and h.dims == (0, 1) and h.coefficients == (0.6, -0.8)
    for bad in ("dim:x", "heading:1", "chunk"):
        with pytest.raises(FlowlensError, match="--target .* is not known"):
            parse_target(bad)


@pytest.mark.slow
def test_single_relevancy_with_a_target_on_builtin_tabletop(libero_tree, cli, png_ok):
    code, out, err = cli("single", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--checkpoint",
                         "builtin:tabletop", "--method", "relevancy", "--target", "dim:1", "--viz-type", "image",
                         "--output", "rel.png")
    assert code == 0, err
    png_ok(libero_tree / "rel.png")
    code, _, err = cli("single", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--checkpoint",
                       "builtin:tabletop", "--method", "relevancy", "--target", "dim:99", "--viz-type", "image",
                       "--output", "bad.png")
    assert code != 0 and "dims" in err
