"""The decomposition on the real tiny models: it rebuilds each layer's output exactly (experts, gate)."""

from __future__ import annotations

import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "model"))
import pi0_testkit as kit  # noqa: E402

from flowlens.attribution import contribution_capture, decompose  # noqa: E402
from flowlens.attribution.passes import _adarms_cond, _layer  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.model import CaptureConfig, gemma, sample_actions  # noqa: E402

NAMES = ["test_tiny", "test_tiny_pi05"]
STEPS = 2


def _run(name, **kw):
    cfg = CaptureConfig(**{"residual": True, "query_rows": "all", **kw})
    return sample_actions(kit.model(name), kit.params(name), kit.observation(name), noise=kit.noise(name),
                          num_steps=STEPS, capture=cfg)[1]


def _block_out(lp, y, expert, cond):
    normed, gate = gemma.rms_norm(y[None], lp["pre_ffw_norm" + ("" if expert == 0 else "_1")],
                                  None if cond is None else cond[None])
    ff = gemma.feed_forward(normed, lp["mlp" + ("" if expert == 0 else "_1")])[0]
    return np.asarray(y + (ff if gate is None else ff * gate[0]))


@pytest.mark.parametrize("name", NAMES)
def test_decomposition_rebuilds_every_layer_output(name):
    """y_i = x_i + g ⊙ Σ_j T_ij, then the MLP: equals the recorded next-layer residual, prefix and steps."""
    m, params = kit.model(name), kit.params(name)
    cap = _run(name)
    pre = cap.prefix
    n_pre = pre.residual.shape[1]
    for p in cap.passes:
        suffix = p.step is not None
        cond = _adarms_cond(m, params, p.time) if suffix else None
        e = 1 if suffix else 0
        for li, layer in enumerate(p.layers):
            lp = _layer(params, layer)
            v = decompose.values(lp, jnp.asarray(pre.residual[layer]), 0, None)
            x = jnp.asarray(p.residual[layer])
            if suffix:
                v = jnp.concatenate([v, decompose.values(lp, x, 1, cond)])
            f = decompose.head_vectors(lp, v, e)
            rows = p.query_rows
            c = decompose.contributions(jnp.asarray(p.probs[li]), f, x[rows - (n_pre if suffix else 0)],
                                        jnp.asarray(rows), decompose.attention_gate(lp, x, e, cond), chunk=3)
            out = _block_out(lp, c["y"], e, cond)
            want = p.residual[layer + 1][rows - (n_pre if suffix else 0)]
            np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
            valid = cap.layout.valid[rows]
            np.testing.assert_allclose(np.asarray(c["alti"]).sum(-1)[valid], 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", ["norm", "norm_heads", "alti", "value_zeroing"])
def test_contribution_capture_is_row_stochastic_and_causal(kind):
    name = "test_tiny_pi05"
    cap = _run(name, query_rows="valid")
    out = contribution_capture(kit.model(name), kit.params(name), cap, kind)
    for p, orig in zip(out.passes, cap.passes, strict=True):
        heads = orig.probs.shape[1] if kind == "norm_heads" else 1
        assert p.probs.shape == (len(orig.layers), heads, orig.probs.shape[2], orig.key_count)
        assert p.head_reduction == (None if kind == "norm_heads" else "mean") and p.residual is None
        np.testing.assert_allclose(p.probs.sum(-1), 1.0, rtol=1e-5)
        # a key nobody attends to (masked) gets nothing
        np.testing.assert_array_equal(p.probs[:, 0][orig.probs.sum(1) == 0], 0.0)
        if kind == "norm_heads":  # per head: zero exactly where that head does not attend
            np.testing.assert_array_equal(p.probs[orig.probs == 0], 0.0)


def test_missing_residual_names_the_fix():
    name = "test_tiny"
    cap = _run(name, residual=False)
    with pytest.raises(FlowlensError, match=r"residual stream.*CaptureConfig\(residual=True"):
        contribution_capture(kit.model(name), kit.params(name), cap, "alti")
    fused = _run(name, heads="mean")
    with pytest.raises(FlowlensError, match="every attention head.*heads=None"):
        contribution_capture(kit.model(name), kit.params(name), fused, "norm")
    with pytest.raises(FlowlensError, match="kind"):
        contribution_capture(kit.model(name), kit.params(name), fused, "gradient")
