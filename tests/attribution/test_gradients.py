"""Gradients of an action target with respect to the attention maps, against float64 finite differences.

The oracle is an independent numpy re-implementation of one joint pass in float64 (the helpers
of ``tests/model/pi0_testkit.py``), with an offset added to every layer's probabilities. With one
Euler step the sampler's actions are ``noise − v(noise, t=1)`` and its prefix pass + step-0
suffix pass are exactly the joint pass's prefix rows and suffix rows, so ∂y/∂A of the sampler
is the oracle's derivative at those entries.

Numerics: the float64 central difference with step h = 1e-6 has truncation error ≈ h²·|F'''|
≈ 1e-12 and round-off ≈ 1e-16·|F| / h ≈ 1e-10, far below what is checked. The JAX gradient is
float32 through 18 layers (measured: the 20 largest entries agree with the float64 differences
to 3e-6 relative); it is held to 1e-4 of the largest gradient entry plus 1e-4 relative, a 30×
margin — a wrong entry (a missing path, a transposed key axis, a gradient from the wrong step)
is off by O(1) of the entry.
"""

import sys
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "model"))
import pi0_testkit as kit  # noqa: E402

from flowlens import FlowlensError  # noqa: E402
from flowlens.attribution import chefer_relevancy, integrated_gradients  # noqa: E402
from flowlens.model import sample_actions  # noqa: E402
from flowlens.model.gradients import ActionTarget, attention_gradients, path_gradients, refined_alphas  # noqa: E402
from flowlens.model.pi0 import make_attn_mask  # noqa: E402

TARGET = ActionTarget(horizon=(1, 2), dims=(0, 3), coefficients=(0.6, -0.8))


def oracle_velocity(params, x0, x1, mask, positions, offsets):
    """v [B, H_a, action_dim] of the joint pass in float64; ``offsets`` [L, B, N, n, n] added after softmax."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    llm = params["PaliGemma"]["llm"]
    lp = jax.tree.map(f, llm["layers"])
    x0, x1 = f(x0), f(x1)
    p_len = x0.shape[1]
    for layer in range(offsets.shape[0]):
        at = jax.tree.map(lambda a, layer=layer: a[layer], lp)
        h0, _ = kit._rms(x0, at["pre_attention_norm"], None)
        h1, _ = kit._rms(x1, at["pre_attention_norm_1"], None)
        a = at["attn"]
        q = np.concatenate([np.einsum("btd,ndh->btnh", h0, a["q_einsum"]["w"]),
                            np.einsum("btd,ndh->btnh", h1, a["q_einsum_1"]["w"])], 1)
        k = np.concatenate([h0 @ a["kv_einsum"]["w"][0, 0], h1 @ a["kv_einsum_1"]["w"][0, 0]], 1)
        v = np.concatenate([h0 @ a["kv_einsum"]["w"][1, 0], h1 @ a["kv_einsum_1"]["w"][1, 0]], 1)
        q = kit._rope(q, positions) * q.shape[-1] ** -0.5
        k = kit._rope(k[:, :, None, :], positions)[:, :, 0]
        logits = np.where(mask[:, None], np.einsum("btnh,bsh->bnts", q, k), -2.3819763e38)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True) + offsets[layer]
        enc = np.einsum("bnts,bsh->btnh", probs, v)
        x0 = x0 + np.einsum("btnh,nhd->btd", enc[:, :p_len], a["attn_vec_einsum"]["w"])
        x1 = x1 + np.einsum("btnh,nhd->btd", enc[:, p_len:], a["attn_vec_einsum_1"]["w"])
        for i in (0, 1):
            sfx = "" if i == 0 else "_1"
            x = x0 if i == 0 else x1
            h, _ = kit._rms(x, at["pre_ffw_norm" + sfx], None)
            m = at["mlp" + sfx]
            y = (kit._gelu(h @ m["gating_einsum"][0]) * (h @ m["gating_einsum"][1])) @ m["linear"]
            if i == 0:
                x0 = x0 + y
            else:
                x1 = x1 + y
    out, _ = kit._rms(x1, jax.tree.map(f, llm["final_norm_1"]), None)
    proj = jax.tree.map(f, params["action_out_proj"])
    return out[:, -v_horizon(params):] @ proj["kernel"] + proj["bias"]


def v_horizon(params):
    return kit.model().config.action_horizon


@pytest.fixture(scope="module")
def one_step():
    """Element 0 of the tiny model's observation, one Euler step: gradients and the oracle's inputs."""
    model, params = kit.model(), kit.params()
    obs, noise = kit.observation(batch=1), kit.noise(batch=1)
    grads = attention_gradients(model, params, obs, TARGET, noise=noise, num_steps=1)
    images, image_masks, state, tokens, token_mask = model.obs_arrays(obs)
    x0, pre_mask, pre_ar, _ = model.embed_prefix(params, images, image_masks, tokens, token_mask)
    x1, suf_mask, suf_ar, _ = model.embed_suffix(params, state, jnp.asarray(noise), jnp.ones(1))
    input_mask = jnp.concatenate([pre_mask, suf_mask], 1)
    mask = np.asarray(make_attn_mask(input_mask, jnp.concatenate([pre_ar, suf_ar])))
    positions = np.asarray(jnp.cumsum(input_mask, 1) - 1, np.float64)
    w = TARGET.weights(model.config.action_horizon, model.config.action_dim, 1).astype(np.float64)

    def target(offsets):  # y = Σ w ⊙ (noise − v): one Euler step from t = 1 with dt = −1
        v = oracle_velocity(params, x0, x1, mask, positions, offsets)
        return float(np.sum(w * (noise[0].astype(np.float64) - v[0])))

    cfg = model.config
    n = mask.shape[-1]
    zero = np.zeros((cfg.num_layers, 1, cfg.num_heads, n, n))
    return grads, target, zero


def joint_gradient(grads, n):
    """The sampler's gradients placed on the joint pass's [L, N, n, n] grid (prefix rows, suffix rows)."""
    pre, step = grads.gradients
    p = pre.shape[-1]
    out = np.zeros(pre.shape[:2] + (n, n))
    out[:, :, :p, :p] = pre
    out[:, :, p:, :] = step
    return out


def test_target_value_is_the_sampled_chunk(one_step):
    grads, target, zero = one_step
    actions, _ = sample_actions(kit.model(), kit.params(), kit.observation(batch=1), noise=kit.noise(batch=1),
                                num_steps=1)
    w = TARGET.weights(8, kit.model().config.action_dim, 1)
    assert grads.target == pytest.approx(float(np.sum(w * actions[0])), abs=1e-6)
    assert grads.target == pytest.approx(target(zero), abs=1e-4)  # float32 model vs float64 oracle


def test_attention_gradients_match_float64_finite_differences(one_step):
    grads, target, zero = one_step
    n = zero.shape[-1]
    g = joint_gradient(grads, n)
    scale = np.abs(g).max()
    assert scale > 1e-3  # the target depends on the attention at all
    rng = np.random.default_rng(0)
    p = grads.capture.prefix.probs.shape[-1]
    # Entries between valid tokens only: a padding / masked-camera query row is uniform over the keys
    # of its call (P keys in the sampler's prefix pass, n in the joint pass), so the garbage those
    # tokens carry differs between the two by design (TokenGraph drops those rows and columns).
    nodes = np.flatnonzero(grads.capture.layout.valid)
    pre_nodes, suf_nodes = nodes[nodes < p], nodes[nodes >= p]
    flat = np.argsort(-np.abs(g).reshape(-1))[:6].tolist()  # the largest entries ...
    pre_idx = [(int(rng.integers(18)), int(rng.integers(8)), int(rng.choice(pre_nodes)), int(rng.choice(pre_nodes)))
               for _ in range(4)]  # ... random prefix entries ...
    suf_idx = [(int(rng.integers(18)), int(rng.integers(8)), int(rng.choice(suf_nodes)), int(rng.choice(nodes)))
               for _ in range(4)]  # ... and random suffix entries
    entries = [np.unravel_index(i, g.shape) for i in flat] + pre_idx + suf_idx
    h = 1e-6
    for layer, head, q, k in entries:
        plus, minus = zero.copy(), zero.copy()
        plus[layer, 0, head, q, k] += h
        minus[layer, 0, head, q, k] -= h
        fd = (target(plus) - target(minus)) / (2 * h)
        assert abs(g[layer, head, q, k] - fd) <= 1e-4 * scale + 1e-4 * abs(fd), (layer, head, q, k, fd)
    # a random direction over every entry at once (a gradient from the wrong step or axis shows here)
    valid = grads.capture.layout.valid
    d = rng.standard_normal(zero.shape) * (valid[:, None] & valid[None, :])
    d[:, :, :, :p, p:] = 0.0  # prefix rows never see suffix keys in the sampler
    d /= np.linalg.norm(d)
    fd = (target(zero + h * d) - target(zero - h * d)) / (2 * h)
    assert np.sum(g * d[:, 0]) == pytest.approx(fd, rel=1e-4, abs=1e-4 * scale)


def test_velocity_target_reads_the_step():
    model, params = kit.model(), kit.params()
    obs, noise = kit.observation(batch=1), kit.noise(batch=1)
    # the velocity of the only step is (noise − actions) / 1: its gradient is minus the chunk's
    chunk = attention_gradients(model, params, obs, TARGET, noise=noise, num_steps=1)
    vel = attention_gradients(model, params, obs, ActionTarget(TARGET.horizon, TARGET.dims, TARGET.coefficients,
                                                               step=0), noise=noise, num_steps=1)
    w = TARGET.weights(8, model.config.action_dim, 1)
    assert vel.target == pytest.approx(float(np.sum(w * noise[0])) - chunk.target, abs=1e-5)
    for gc, gv in zip(chunk.gradients, vel.gradients, strict=True):
        np.testing.assert_allclose(gv, -gc, atol=1e-6 * np.abs(gc).max())


def test_two_steps_put_gradients_on_both_steps_and_the_prefix():
    grads = attention_gradients(kit.model(), kit.params(), kit.observation(batch=2), TARGET,
                                noise=kit.noise(batch=2), num_steps=2, batch_index=1)
    assert [p.kind.value for p in grads.capture.passes] == ["prefix", "suffix", "suffix"]
    assert all(np.abs(g).max() > 0 for g in grads.gradients)
    assert grads.capture.metadata["batch_index"] == 1


def test_target_errors_name_the_fix():
    with pytest.raises(FlowlensError, match="pick actions 0–7"):
        attention_gradients(kit.model(), kit.params(), kit.observation(batch=1), ActionTarget(horizon=(9,)),
                            noise=kit.noise(batch=1), num_steps=1)
    with pytest.raises(FlowlensError, match="direction must be 2"):
        ActionTarget.heading([1.0, 2.0, 3.0])
    with pytest.raises(FlowlensError, match="step 3 out of range"):
        ActionTarget(step=3).weights(8, 32, 2)


def test_methods_without_gradients_say_what_to_compute():
    capture = kit.full_run()[1]
    with pytest.raises(FlowlensError, match="chefer_relevancy needs the gradients .*attention_gradients"):
        chefer_relevancy(capture)
    with pytest.raises(FlowlensError, match="integrated_gradients needs .*path_gradients"):
        integrated_gradients(capture)


@pytest.mark.slow
def test_integrated_gradients_completeness_within_one_percent():
    model, params = kit.model(), kit.params()
    obs, noise = kit.observation(batch=1), kit.noise(batch=1)
    path = path_gradients(model, params, obs, TARGET, noise=noise, num_steps=3, steps=48, batch=49)
    ig = integrated_gradients(path)
    actions, _ = sample_actions(model, params, obs, noise=noise, num_steps=3)
    w = TARGET.weights(8, model.config.action_dim, 3)
    assert path.values[-1] == pytest.approx(float(np.sum(w * actions[0])), abs=1e-5)  # F(x): the real chunk
    assert abs(ig.expected) > 0.05
    assert ig.completeness_error < 0.01
    valid = ig.layout.valid[: ig.layout.prefix_len]
    assert np.isfinite(ig.token_scores[: ig.layout.prefix_len][valid]).all()
    assert np.isnan(ig.token_scores[: ig.layout.prefix_len][~valid]).all()  # masked camera, padding


def test_refined_alphas_follow_the_jumps():
    np.testing.assert_allclose(refined_alphas(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.0, 1.0]), 3),
                               [0.625, 0.75, 0.875])
    # jumps 1 : 3 → 4 points split 1 : 3; a flat F spreads them evenly
    np.testing.assert_allclose(refined_alphas(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 4.0]), 4),
                               [0.25, 0.625, 0.75, 0.875])
    np.testing.assert_allclose(refined_alphas(np.array([0.0, 0.5, 1.0]), np.array([2.0, 2.0, 2.0]), 2), [0.25, 0.75])
