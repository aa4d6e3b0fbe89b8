"""The training-style pass: ``forward_outputs`` (actions' velocity + the prefix's outputs for
training heads) agrees with ``forward_arrays`` / ``forward``, and ``compute_loss`` with
``return_prefix`` is the same loss and exposes the same prefix."""

import jax
import numpy as np

from tests.model import pi0_testkit as kit


def test_forward_outputs_matches_forward_and_exposes_the_prefix():
    m, p, obs = kit.model(), kit.params(), kit.observation()
    cfg = m.config
    x_t = kit.noise()
    t = np.array([0.7, 0.2], np.float32)
    v_ref, _ = m.forward_arrays(p, m.obs_arrays(obs), x_t, t)
    v, prefix_out, prefix_mask, cap = m.forward_outputs(p, m.obs_arrays(obs), x_t, t)
    assert cap is None
    np.testing.assert_array_equal(np.asarray(v), np.asarray(v_ref))
    n_img = len(cfg.cameras) * (cfg.siglip.image_size // cfg.siglip.patch_size) ** 2
    assert prefix_out.shape == (2, n_img + cfg.max_token_len, cfg.paligemma.width)
    mask = np.asarray(prefix_mask)
    # element 0: right wrist masked, 7 prompt tokens; element 1: all cameras, 4 prompt tokens
    per_cam = n_img // len(cfg.cameras)
    assert mask[0].sum() == n_img - per_cam + 7 and mask[1].sum() == n_img + 4
    assert np.all(np.isfinite(np.asarray(prefix_out)))
    # the suffix never changes a valid prefix token (block-causal): another x_t leaves them alone.
    # Padding rows see no valid key and attend uniformly to everything, suffix included, as in openpi.
    _, prefix_out2, _, _ = m.forward_outputs(p, m.obs_arrays(obs), x_t + 1.0, t)
    np.testing.assert_allclose(np.asarray(prefix_out2)[mask], np.asarray(prefix_out)[mask], atol=1e-5)
    assert not np.allclose(np.asarray(prefix_out2)[~mask], np.asarray(prefix_out)[~mask], atol=1e-5)


def test_compute_loss_with_prefix_is_the_same_loss():
    m, p, obs = kit.model(), kit.params(), kit.observation()
    actions = kit.noise(seed=9)
    rng = jax.random.key(3)
    loss = m.compute_loss(p, obs, actions, rng)
    loss2, prefix_out, prefix_mask = m.compute_loss(p, obs, actions, rng, return_prefix=True)
    assert loss.shape == (2, m.config.action_horizon)
    np.testing.assert_array_equal(np.asarray(loss2), np.asarray(loss))
    assert prefix_out.shape[:2] == prefix_mask.shape
