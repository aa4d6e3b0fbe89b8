"""Norm-based, ALTI and value zeroing on hand-built weights, against the papers' formulas in numpy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from flowlens.attribution import decompose

EPS = 1e-6  # RMSNorm epsilon of the model


def _weights(rng, d=6, n=2, k=1, h=3, f=5):
    return {
        "attn": {"kv_einsum": {"w": rng.normal(size=(2, k, d, h)).astype(np.float32)},
                 "attn_vec_einsum": {"w": rng.normal(size=(n, h, d)).astype(np.float32)}},
        "pre_attention_norm": {"scale": rng.normal(size=d).astype(np.float32) * 0.3},
        "pre_ffw_norm": {"scale": rng.normal(size=d).astype(np.float32) * 0.3},
        "mlp": {"gating_einsum": rng.normal(size=(2, d, f)).astype(np.float32) * 0.5,
                "linear": rng.normal(size=(f, d)).astype(np.float32) * 0.5},
    }


def _rms(x, scale):
    return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + EPS) * (1 + scale)


def _probs(rng, n, r, s):
    logits = rng.normal(size=(n, r, s))
    logits[:, :, -1] = -np.inf  # one key nobody reads
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _numpy_reference(lp, x, probs, rows, gate):
    """Kobayashi 2020 (‖Σ_h α^h_ij v_j W_O^h‖, per head α^h_ij ‖v_j W_O^h‖) and Ferrando 2022 (ALTI:
    c_ij = max(0, −‖y_i − T_i(x_j)‖₁ + ‖y_i‖₁), normalised), written from the formulas in float64."""
    w_v = lp["attn"]["kv_einsum"]["w"][1, 0].astype(np.float64)  # [D, H]
    w_o = lp["attn"]["attn_vec_einsum"]["w"].astype(np.float64)  # [N, H, D]
    v = _rms(x.astype(np.float64), lp["pre_attention_norm"]["scale"]) @ w_v  # [S, H]
    n, r, s = probs.shape
    norm = np.zeros((r, s))
    per_head = np.zeros((n, r, s))
    alti = np.zeros((r, s))
    for a, i in enumerate(rows):
        t = np.zeros((s, x.shape[1]))
        for j in range(s):
            for h in range(n):
                vec = probs[h, a, j] * (v[j] @ w_o[h])
                per_head[h, a, j] = np.linalg.norm(vec)
                t[j] += vec
            t[j] *= gate
            norm[a, j] = np.linalg.norm(t[j])
        y = x[i] + t.sum(0)
        c = np.zeros(s)
        for j in range(s):
            tj = t[j] + (x[i] if j == i else 0.0)
            c[j] = max(0.0, -np.abs(y - tj).sum() + np.abs(y).sum())
        alti[a] = c / c.sum()
    return norm, per_head, alti


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 16])
def test_norm_and_alti_match_the_papers_formulas(gated, chunk):
    rng = np.random.default_rng(3)
    lp = _weights(rng)
    s, rows = 5, np.array([0, 2, 3])
    x = rng.normal(size=(s, 6)).astype(np.float32)
    probs = _probs(rng, 2, len(rows), s)
    gate = rng.uniform(0.2, 1.5, size=6).astype(np.float32) if gated else np.ones(6, np.float32)
    norm, per_head, alti = _numpy_reference(lp, x, probs, rows, gate)
    f = decompose.head_vectors(lp, decompose.values(lp, jnp.asarray(x), 0, None), 0)
    out = decompose.contributions(jnp.asarray(probs), f, jnp.asarray(x[rows]), jnp.asarray(rows),
                                  jnp.asarray(gate) if gated else None, chunk=chunk)
    np.testing.assert_allclose(out["norm"], norm, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["alti"], alti, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(decompose.per_head_norms(jnp.asarray(probs), f), per_head, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(out["alti"])[:, -1] == 0)


def _identity_layer():
    eye = np.eye(2, dtype=np.float32)
    return {"attn": {"kv_einsum": {"w": np.stack([eye, eye])[:, None]},
                     "attn_vec_einsum": {"w": eye[None]}},
            "pre_attention_norm": {"scale": np.zeros(2, np.float32)}}


def test_literal_two_token_case():
    """W_V = W_O = I, x_0 = x_1 = [1, 1] (RMS 1, so v = x), α_0 = [0.25, 0.75]:
    T_00 = [.25, .25], T_01 = [.75, .75], y_0 = [2, 2];
    norm = [√2/4, 3√2/4]; ALTI: ‖y‖₁ = 4, ‖y − T_00 − x_0‖₁ = 1.5, ‖y − T_01‖₁ = 2.5 → [2.5, 1.5] / 4."""
    lp = _identity_layer()
    x = jnp.asarray([[1.0, 1.0], [1.0, 1.0]])
    f = decompose.head_vectors(lp, decompose.values(lp, x, 0, None), 0)
    out = decompose.contributions(jnp.asarray([[[0.25, 0.75]]]), f, x[:1], jnp.asarray([0]), None)
    np.testing.assert_allclose(out["y"], [[2.0, 2.0]], rtol=1e-5)
    np.testing.assert_allclose(out["norm"], [[0.3535534, 1.0606602]], rtol=1e-5)
    np.testing.assert_allclose(out["alti"], [[0.625, 0.375]], rtol=1e-5)


def test_literal_alti_clamps_an_opposing_token():
    """x_1 = [1, −1] points away from y_0 = [2, 1] (α = [.5, .5]): ALTI gives it 0, the query all."""
    lp = _identity_layer()
    x = jnp.asarray([[1.0, 1.0], [1.0, -1.0]])
    f = decompose.head_vectors(lp, decompose.values(lp, x, 0, None), 0)
    out = decompose.contributions(jnp.asarray([[[0.5, 0.5]]]), f, x[:1], jnp.asarray([0]), None)
    np.testing.assert_allclose(out["y"], [[2.0, 1.0]], rtol=1e-5)
    np.testing.assert_allclose(out["alti"], [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(out["norm"], [[0.7071068, 0.7071068]], rtol=1e-5)


def _gelu(z):
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))


@pytest.mark.parametrize("gated", [False, True])
def test_value_zeroing_matches_an_explicit_per_token_loop(gated):
    """Mohebbi 2023: for each key j, zero v_j, rerun attention (same α), residual, norm and MLP."""
    rng = np.random.default_rng(7)
    lp = _weights(rng)
    s, rows = 5, np.array([1, 2, 4])
    x = rng.normal(size=(s, 6)).astype(np.float64)
    probs = _probs(rng, 2, len(rows), s)
    gate = rng.uniform(0.2, 1.5, size=6) if gated else np.ones(6)
    w_v = lp["attn"]["kv_einsum"]["w"][1, 0].astype(np.float64)
    w_o = lp["attn"]["attn_vec_einsum"]["w"].astype(np.float64)
    wg, wl = (lp["mlp"][k].astype(np.float64) for k in ("gating_einsum", "linear"))

    def layer_out(v):
        attn = np.einsum("nrs,sh,nhd->rd", probs.astype(np.float64), v, w_o)
        y = x[rows] + gate * attn
        z = _rms(y, lp["pre_ffw_norm"]["scale"])
        return y + (_gelu(z @ wg[0]) * (z @ wg[1])) @ wl

    v = _rms(x, lp["pre_attention_norm"]["scale"]) @ w_v
    out = layer_out(v)
    want = np.zeros((len(rows), s))
    for j in range(s):
        v0 = v.copy()
        v0[j] = 0.0
        zeroed = layer_out(v0)
        cos = (zeroed * out).sum(-1) / (np.linalg.norm(zeroed, axis=-1) * np.linalg.norm(out, axis=-1))
        want[:, j] = 1 - cos
    want[:, -1] = 0.0  # the unread key
    want /= want.sum(-1, keepdims=True)
    f = decompose.head_vectors(lp, decompose.values(lp, jnp.asarray(x, jnp.float32), 0, None), 0)
    got = decompose.value_zeroing(lp, jnp.asarray(probs), f, jnp.asarray(x[rows], jnp.float32),
                                  jnp.asarray(gate, jnp.float32) if gated else None, None, expert=0, chunk=2)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)
