"""The opt-in residual-stream record (``CaptureConfig(residual=True)``): exact, inert, saved."""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pi0_testkit as kit  # noqa: E402

from flowlens.core.capture import PassKind  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.io import load_capture, save_capture  # noqa: E402
from flowlens.model import CaptureConfig, gemma, sample_actions  # noqa: E402
from flowlens.model.pi0 import linear, make_attn_mask  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = ["test_tiny", "test_tiny_pi05"]
STEPS = 3


def _residual_run(name: str, batch_index: int = 0):
    return sample_actions(kit.model(name), kit.params(name), kit.observation(name), noise=kit.noise(name),
                          num_steps=STEPS, capture=CaptureConfig(residual=True, batch_index=batch_index))


@pytest.mark.parametrize("name", NAMES)
def test_recording_the_residual_changes_nothing_else(name):
    plain, _ = kit.plain_run(name, STEPS)
    actions, cap = _residual_run(name)
    _, full = kit.full_run(name, STEPS)
    np.testing.assert_array_equal(actions, plain)
    for with_res, without in zip(cap.passes, full.passes, strict=True):
        np.testing.assert_array_equal(with_res.probs, without.probs)
        assert without.residual is None
    cfg = kit.model(name).config
    layout = cap.layout
    assert cap.prefix.residual.shape == (cfg.num_layers + 1, layout.prefix_len, cfg.paligemma.width)
    for p in cap.steps:
        assert p.residual.shape == (cfg.num_layers + 1, layout.suffix_len, cfg.action_expert.width)
        assert p.residual.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch_index", [0, 1])
def test_prefix_residual_is_each_layers_input(name, batch_index):
    """Oracle: the embeddings, then each recorded layer input run through ``gemma.block`` by hand."""
    m, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    _, cap = _residual_run(name, batch_index)
    res = cap.prefix.residual
    pre, pre_mask, pre_ar, _ = m.embed_prefix(params, *m.obs_arrays(obs)[:2], *m.obs_arrays(obs)[3:])
    b = slice(batch_index, batch_index + 1)
    # eager vs compiled embedding: float32 rounding apart
    np.testing.assert_allclose(res[0], np.asarray(pre[batch_index], np.float32), rtol=1e-5, atol=1e-5)
    mask = make_attn_mask(pre_mask, pre_ar)[b, None]
    positions = (jnp.cumsum(pre_mask, axis=1) - 1)[b]
    layers = params["PaliGemma"]["llm"]["layers"]
    for layer in range(m.config.num_layers):
        lp = jax.tree.map(lambda a, i=layer: a[i], layers)
        (out, _), _, _ = gemma.block(lp, [jnp.asarray(res[layer])[None], None], positions, mask, [None, None],
                                     None, m.experts)
        np.testing.assert_allclose(res[layer + 1], np.asarray(out[0]), rtol=1e-5, atol=1e-5)


def test_step_residuals_reproduce_the_sampled_actions():
    """Oracle: each step's final pre-norm output → final norm → action head gives v_t; Euler sums them."""
    name = "test_tiny"  # Pi0: the final norm is a plain RMSNorm (Pi0.5's needs the time conditioning)
    m, params = kit.model(name), kit.params(name)
    actions, cap = _residual_run(name)
    llm = params["PaliGemma"]["llm"]
    x = kit.noise(name)[0].astype(np.float64)
    for p in cap.steps:
        final, _ = gemma.rms_norm(jnp.asarray(p.residual[-1]), llm["final_norm_1"], None)
        v = linear(params["action_out_proj"], final[-m.config.action_horizon:])
        x = x + (-1.0 / STEPS) * np.asarray(v, np.float64)
    np.testing.assert_allclose(actions[0], x, rtol=1e-4, atol=1e-4)


def test_residual_survives_save_and_load(tmp_path):
    _, cap = _residual_run("test_tiny")
    path = save_capture(cap, tmp_path / "r.flcap", precision="float16")
    back = load_capture(path)
    for a, b in zip(cap.passes, back.passes, strict=True):
        np.testing.assert_array_equal(a.residual, b.residual)  # float32 whatever the probs' precision
    assert back.prefix.kind == PassKind.PREFIX


def test_steps_without_the_prefix_pass_are_refused_with_the_fix():
    name = "test_tiny"
    with pytest.raises(FlowlensError, match="record the prefix too"):
        sample_actions(kit.model(name), kit.params(name), kit.observation(name), noise=kit.noise(name),
                       num_steps=STEPS, capture=CaptureConfig.actions_only(residual=True))
    with pytest.raises(FlowlensError, match="Use flowlens.model.sample_actions"):
        kit.model(name).forward(kit.params(name), kit.observation(name), kit.noise(name), 0.5,
                                capture=CaptureConfig(residual=True))


def test_a_residual_of_the_wrong_size_is_refused():
    _, cap = _residual_run("test_tiny")
    p = cap.prefix
    import dataclasses

    from flowlens.core.capture import Capture
    bad = dataclasses.replace(p, residual=p.residual[:, :-1])
    with pytest.raises(FlowlensError, match="residual of the prefix pass"):
        Capture(layout=cap.layout, num_layers=cap.num_layers, num_heads=cap.num_heads, passes=(bad,))
