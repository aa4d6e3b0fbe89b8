"""Activation patches through the real model: inert when empty or self-sourced, exact when total,
equal to a hand-run oracle at one site; step-selected knockouts touch only their steps."""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pi0_testkit as kit  # noqa: E402

from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.model import CaptureConfig, Knockout, Patch, SamplerPatch, gemma, sample_actions  # noqa: E402
from flowlens.model import sample_patched  # noqa: E402
from flowlens.model.pi0 import make_attn_mask  # noqa: E402

pytestmark = pytest.mark.slow
NAME = "test_tiny"
STEPS = 3


def _run(obs_seed=0, patch=None, name=NAME):
    return sample_patched(kit.model(name), kit.params(name), kit.observation(name, seed=obs_seed),
                          noise=kit.noise(name), num_steps=STEPS, patch=patch, record=True)


def _full_patch(src, prefix_where, step_where, heads=False):
    """A SamplerPatch writing ``src`` (a RunRecord) where the masks say (residual or head site)."""
    if heads:
        return SamplerPatch(prefix=Patch(head_where=prefix_where, heads=src.prefix_heads),
                            steps=Patch(head_where=step_where, heads=src.step_heads))
    return SamplerPatch(prefix=Patch(residual_where=prefix_where, residual=src.prefix_residual),
                        steps=Patch(residual_where=step_where, residual=src.step_residual))


@pytest.mark.parametrize("name", ["test_tiny", "test_tiny_pi05"])
def test_recording_is_inert_and_matches_the_residual_record(name):
    plain, _ = kit.plain_run(name, STEPS)
    actions, rec = _run(name=name)
    np.testing.assert_array_equal(actions, plain)
    cfg = kit.model(name).config
    _, cap = sample_actions(kit.model(name), kit.params(name), kit.observation(name), noise=kit.noise(name),
                            num_steps=STEPS, capture=CaptureConfig(residual=True, batch_index=1))
    np.testing.assert_array_equal(rec.prefix_residual[:, 1], cap.prefix.residual)
    for s, p in enumerate(cap.steps):
        np.testing.assert_array_equal(rec.step_residual[s, :, 1], p.residual)
    assert rec.prefix_heads.shape == (cfg.num_layers, 2, cap.layout.prefix_len, cfg.num_heads, cfg.paligemma.head_dim)
    assert rec.step_heads.shape[:4] == (STEPS, cfg.num_layers, 2, cap.layout.suffix_len)


@pytest.mark.parametrize("heads", [False, True])
def test_patching_a_run_with_itself_changes_nothing(heads):
    plain, rec = _run()
    pw = np.ones(rec.prefix_heads.shape[:4] if heads else rec.prefix_residual.shape[:3], bool)
    sw = np.ones(rec.step_heads.shape[:5] if heads else rec.step_residual.shape[:4], bool)
    actions, _ = _run(patch=_full_patch(rec, pw, sw, heads))
    np.testing.assert_array_equal(actions, plain)
    # an all-False patch from another run: also untouched
    _, other = _run(obs_seed=1)
    actions, _ = _run(patch=_full_patch(other, ~pw, ~sw, heads))
    np.testing.assert_array_equal(actions, plain)


def test_patching_every_position_reproduces_the_corrupted_run():
    clean, _ = _run()
    corrupt, src = _run(obs_seed=1)
    assert not np.allclose(clean, corrupt)
    pw = np.ones(src.prefix_residual.shape[:3], bool)
    sw = np.ones(src.step_residual.shape[:4], bool)
    actions, _ = _run(patch=_full_patch(src, pw, sw))  # every layer's input (and the final output)
    np.testing.assert_array_equal(actions, corrupt)
    last = np.zeros_like(sw)
    last[:, -1] = True  # only the last layer's output of every step
    actions, _ = _run(patch=SamplerPatch(steps=Patch(residual_where=last, residual=src.step_residual)))
    np.testing.assert_array_equal(actions, corrupt)


def _prefix_oracle(name, rec_clean, rec_src, layer, token, b, head=None):
    """Run the prefix layers by hand from the clean input of ``layer`` with one site replaced."""
    m, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    arrays = m.obs_arrays(obs)
    _, pre_mask, pre_ar, _ = m.embed_prefix(params, *arrays[:2], *arrays[3:])
    mask = make_attn_mask(pre_mask, pre_ar)[:, None]
    positions = jnp.cumsum(pre_mask, axis=1) - 1
    layers = params["PaliGemma"]["llm"]["layers"]
    x = rec_clean.prefix_residual[layer].copy()
    if head is None:
        x[b, token] = rec_src.prefix_residual[layer, b, token]
    out = [x]
    for i in range(layer, m.config.num_layers):
        lp = jax.tree.map(lambda a, i=i: a[i], layers)
        if head is not None and i == layer:  # the layer by hand: norm, attention heads, patch, projection, MLP
            normed, _ = gemma.rms_norm(jnp.asarray(x), lp["pre_attention_norm"], None)
            _, _, _, enc = gemma.attention(lp["attn"], [normed, None], positions, mask, None, m.experts,
                                           return_heads=True)
            enc = np.array(enc)
            enc[b, token, head] = rec_src.prefix_heads[layer, b, token, head]
            h = x + np.einsum("btnh,nhd->btd", enc, np.asarray(lp["attn"]["attn_vec_einsum"]["w"]))
            y, _ = gemma.rms_norm(jnp.asarray(h), lp["pre_ffw_norm"], None)
            x = h + np.asarray(gemma.feed_forward(y, lp["mlp"]))
        else:
            (nxt, _), _, _ = gemma.block(lp, [jnp.asarray(x), None], positions, mask, [None, None], None, m.experts)
            x = np.asarray(nxt)
        out.append(x)
    return np.stack(out)


@pytest.mark.parametrize("site", ["residual", "head"])
def test_one_site_patch_equals_running_the_layers_by_hand(site):
    _, clean = _run()
    _, src = _run(obs_seed=1)
    layer, token, b, head = 2, 5, 1, 3
    if site == "residual":
        where = np.zeros(src.prefix_residual.shape[:3], bool)
        where[layer, b, token] = True
        patch = SamplerPatch(prefix=Patch(residual_where=where, residual=src.prefix_residual))
    else:
        where = np.zeros(src.prefix_heads.shape[:4], bool)
        where[layer, b, token, head] = True
        patch = SamplerPatch(prefix=Patch(head_where=where, heads=src.prefix_heads))
    _, got = _run(patch=patch)
    np.testing.assert_array_equal(got.prefix_residual[:layer + 1 if site == "head" else layer],
                                  clean.prefix_residual[:layer + 1 if site == "head" else layer])
    want = _prefix_oracle(NAME, clean, src, layer, token, b, None if site == "residual" else head)
    np.testing.assert_allclose(got.prefix_residual[layer:], want, rtol=2e-5, atol=2e-5)
    assert not np.allclose(got.prefix_residual[-1], clean.prefix_residual[-1], atol=1e-4)
    # the patched prefix changes the KV cache every denoising step reads
    assert not np.allclose(got.step_residual[:, 1:, b], clean.step_residual[:, 1:, b], atol=1e-5)


# ---- step-selected knockouts -------------------------------------------------------------------
def test_knockout_restricted_to_step_k_changes_steps_from_k_on_only():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    _, ref = kit.full_run(NAME, STEPS)
    for k in range(STEPS):
        _, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=STEPS, capture=CaptureConfig(),
                                knockouts=Knockout("actions", "words", steps=[k]))
        np.testing.assert_array_equal(cap.prefix.probs, ref.prefix.probs)
        for s in range(STEPS):
            if s < k:
                np.testing.assert_array_equal(cap.step(s).probs, ref.step(s).probs)
            else:
                assert not np.allclose(cap.step(s).probs, ref.step(s).probs, atol=1e-6), (k, s)
        lay = cap.layout
        words, act = lay.select(group="words"), lay.select(group="actions") - lay.prefix_len
        assert (cap.step(k).probs[:, :, act][..., words] == 0).all()


def test_knockout_on_the_prefix_pass_only_if_asked():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    _, ref = kit.full_run(NAME, STEPS)
    ko = Knockout("words", "base_0_rgb", steps=[1])  # a prefix edge, steps only: nothing is edited
    _, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=STEPS, capture=CaptureConfig(),
                            knockouts=ko)
    for a, b in zip(cap.passes, ref.passes, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)
    _, cap = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=STEPS, capture=CaptureConfig(),
                            knockouts=Knockout("words", "base_0_rgb", steps=["prefix"]))
    lay = cap.layout
    assert (cap.prefix.probs[:, :, lay.select(group="words")][..., lay.select(group="base_0_rgb")] == 0).all()
    assert cap.metadata["knockouts"][0]["steps"] == ["prefix"]


def test_knocking_out_massless_edges_is_bit_identical():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    plain, _ = kit.plain_run(NAME, STEPS)
    lay = kit.full_run(NAME, STEPS)[1].layout
    padding = np.flatnonzero(~lay.valid)  # of batch element 0 (its masked camera and prompt padding)
    assert padding.size
    for ko in [Knockout("actions", padding), Knockout(np.flatnonzero(lay.valid), padding, steps=["prefix", 2])]:
        actions, _ = sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=STEPS, knockouts=ko)
        np.testing.assert_array_equal(actions[0], plain[0])  # element 1's layout has those tokens valid


def test_step_selection_errors_name_the_fix():
    model, params, obs = kit.model(NAME), kit.params(NAME), kit.observation(NAME)
    with pytest.raises(FlowlensError, match=r"Knockout.steps has step 3, but sampling runs 3 denoising steps"):
        sample_actions(model, params, obs, noise=kit.noise(NAME), num_steps=STEPS,
                       knockouts=Knockout("actions", "words", steps=[3]))
    with pytest.raises(FlowlensError, match="Knockout.steps must be None"):
        Knockout("actions", "words", steps=["prefx"])
    with pytest.raises(FlowlensError, match="Drop steps="):
        model.forward(params, obs, kit.noise(NAME), 0.5, knockouts=Knockout("actions", "words", steps=[0]))
