"""Pi0 / Pi0.5 sampling with capture: exactness against an independent oracle and openpi semantics.

All model runs use the tiny configurations (18 layers, 8 query heads sharing 1 KV head) in float32.
"""

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
from flowlens.model import CaptureConfig, Observation, sample_actions  # noqa: E402
from flowlens.model.pi0 import make_attn_mask, posemb_sincos  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = ["test_tiny", "test_tiny_pi05"]


@pytest.mark.parametrize("name", NAMES)
def test_capture_does_not_change_actions(name):
    plain, none = kit.plain_run(name)
    captured, cap = kit.full_run(name)
    assert none is None
    np.testing.assert_array_equal(plain, captured)
    np.testing.assert_array_equal(cap.actions, captured[0])
    assert plain.shape == (2, 8, 32) and np.isfinite(plain).all()


@pytest.mark.parametrize("name", NAMES)
def test_layout_built_from_the_real_inputs(name):
    _, cap = kit.full_run(name)
    lay = cap.layout
    pi05 = name.endswith("pi05")
    assert lay.variant == ("pi05" if pi05 else "pi0")
    assert [s.name for s in lay.cameras] == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert [s.valid for s in lay.cameras] == [True, True, False]  # element 0 has the right wrist masked
    assert lay.cameras[0].grid == (4, 4)
    assert lay.prefix_len == 3 * 16 + 12
    assert (lay.state is None) == pi05
    assert lay.suffix_len == 8 + (0 if pi05 else 1)
    assert set(lay.groups()) >= {"base_0_rgb", "bos", "words", "newline", "actions"}
    assert lay.text.roles[:7] == ("bos", "", "", "", "", "", "newline")
    # Capture layout positions = openpi's cumsum(valid) - 1.
    assert lay.positions[32] == 31 and lay.positions[48] == 32
    assert cap.times == pytest.approx((1.0, 1.0 - 1 / 3, 1.0 - 2 / 3), abs=1e-6)
    assert [p.kind for p in cap.passes] == [PassKind.PREFIX] + [PassKind.SUFFIX] * 3
    assert cap.prefix.probs.shape == (18, 8, lay.prefix_len, lay.prefix_len)
    assert cap.step(0).probs.shape == (18, 8, lay.suffix_len, lay.n)
    assert cap.model == name and cap.metadata["dtype"] == "float32"
    norms = cap.metadata["image_token_norms"]
    assert set(norms) == {c.name for c in lay.cameras} and len(norms["base_0_rgb"]) == 16


@pytest.mark.parametrize("name", NAMES)
def test_masked_query_rows_are_uniform_like_openpi(name):
    _, cap = kit.full_run(name)
    lay = cap.layout
    pre = cap.prefix.probs
    invalid = ~lay.valid[: lay.prefix_len]
    assert invalid.sum() == 16 + 5  # masked camera + text padding
    np.testing.assert_allclose(pre[:, :, invalid, :], 1.0 / lay.prefix_len, rtol=1e-6)
    # Valid rows give masked keys exactly zero.
    valid = ~invalid
    assert (pre[:, :, valid][..., invalid] == 0).all()
    np.testing.assert_allclose(pre[:, :, valid].sum(-1), 1.0, atol=1e-5)
    step = cap.step(1).probs
    assert (step[..., np.flatnonzero(~lay.valid)] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_prefix_plus_step_equals_full_pass(name):
    """Attention stitched from the cached prefix pass + step 0 equals the joint (training) pass."""
    model, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    _, cap = kit.full_run(name)
    _, full = model.forward(params, obs, kit.noise(name), 1.0, capture=CaptureConfig())
    lay = cap.layout
    p = lay.prefix_len
    f = full.full.probs
    assert full.full.kind == PassKind.FULL and f.shape == (18, 8, lay.n, lay.n)
    valid = np.flatnonzero(lay.valid[:p])
    np.testing.assert_allclose(f[:, :, valid, :p], cap.prefix.probs[:, :, valid], atol=2e-6)
    assert (f[:, :, valid, p:] == 0).all()
    np.testing.assert_allclose(f[:, :, p:, :], cap.step(0).probs, atol=2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_recorded_probabilities_equal_an_independent_oracle(name):
    """Every layer's probabilities equal a float64 numpy re-implementation from the parameters."""
    model, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    x_t = kit.noise(name)
    t = np.full(2, 0.7, np.float32)
    _, full = model.forward(params, obs, x_t, t, capture=CaptureConfig())
    images, image_masks, state, tokens, token_mask = model.obs_arrays(obs)
    pre, pre_mask, pre_ar, _ = model.embed_prefix(params, images, image_masks, tokens, token_mask)
    suf, suf_mask, suf_ar, cond = model.embed_suffix(params, state, jnp.asarray(x_t), jnp.asarray(t))
    input_mask = jnp.concatenate([pre_mask, suf_mask], 1)
    mask = np.asarray(make_attn_mask(input_mask, jnp.concatenate([pre_ar, suf_ar])))
    positions = np.cumsum(np.asarray(input_mask), 1) - 1
    np.testing.assert_array_equal(mask[0], full.layout.attention_mask())
    np.testing.assert_array_equal(positions[0], full.layout.positions)
    want = kit.oracle_probs(params["PaliGemma"]["llm"], pre, suf, mask, positions, cond, 18)[:, 0]
    np.testing.assert_allclose(full.full.probs, want, atol=5e-5)


def test_posemb_sincos_matches_formula():
    t = jnp.asarray([0.0, 0.3, 1.0])
    got = np.asarray(posemb_sincos(t, 8, 4e-3, 4.0))
    period = 4e-3 * (4.0 / 4e-3) ** np.linspace(0, 1, 4)
    arg = np.asarray(t)[:, None] * (2 * np.pi / period)
    np.testing.assert_allclose(got, np.concatenate([np.sin(arg), np.cos(arg)], 1), atol=2e-4)


def test_selective_capture_layers_rows_heads_steps():
    name = "test_tiny"
    model, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    _, ref = kit.full_run(name)
    cfg = CaptureConfig(layers=[2, 11], steps=(0, 1), query_rows="actions", heads="mean", image_norms=False)
    actions, cap = sample_actions(model, params, obs, noise=kit.noise(name), num_steps=3, capture=cfg)
    np.testing.assert_array_equal(actions, kit.plain_run(name)[0])
    assert cap.prefix is None and cap.num_steps == 2  # action rows do not exist in the prefix pass
    lay = cap.layout
    rows = lay.select(group="actions")
    for s in range(2):
        p = cap.step(s)
        assert p.layers == (2, 11) and p.head_reduction == "mean" and p.probs.shape == (2, 1, 8, lay.n)
        np.testing.assert_array_equal(p.query_rows, rows)
        want = ref.step(s).probs[[2, 11]][:, :, rows - lay.prefix_len].mean(1, keepdims=True)
        np.testing.assert_allclose(p.probs, want, atol=1e-6)
    assert "image_token_norms" not in cap.metadata


def test_non_contiguous_steps_and_batch_index():
    name = "test_tiny"
    model, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    cfg = CaptureConfig(steps=(2,), layers=[0], query_rows="state", batch_index=1)
    _, cap = sample_actions(model, params, obs, noise=kit.noise(name), num_steps=3, capture=cfg)
    assert [p.step for p in cap.steps] == [2]
    assert cap.step(2).time == pytest.approx(1 / 3)
    assert cap.layout.cameras[2].valid  # element 1 has all cameras
    assert cap.prefix is None


def test_bfloat16_compute_captures_float32_under_strict_promotion():
    """bf16 as openpi; probabilities recorded before the bf16 cast; no implicit promotion anywhere."""
    name = "test_tiny_pi05"
    model = kit.model(name, "bfloat16")
    params = jax.tree.map(lambda a: np.asarray(a).astype(jnp.bfloat16), kit.params(name))
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        actions, cap = sample_actions(model, params, kit.observation(name), noise=kit.noise(name), num_steps=3,
                                            capture=CaptureConfig(layers=[0, 17]))
    assert actions.dtype == np.float32 and np.isfinite(actions).all()
    valid = cap.layout.valid
    for p in cap.passes:
        assert p.probs.dtype == np.float32
        rows = valid[p.query_rows]
        np.testing.assert_allclose(p.probs[:, :, rows].sum(-1), 1.0, atol=1e-5)
        # float32 softmax output: far more distinct values than bf16 could hold
        assert not np.array_equal(p.probs, p.probs.astype(jnp.bfloat16).astype(np.float32))
    assert np.abs(actions - kit.plain_run(name)[0]).max() < 0.1  # bf16 vs float32 compute


def test_observation_errors_name_the_field():
    name = "test_tiny"
    model, params, obs = kit.model(name), kit.params(name), kit.observation(name)
    bad = Observation(images={k: v[:, :28] for k, v in obs.images.items()}, image_masks=obs.image_masks,
                      state=obs.state, tokenized_prompt=obs.tokenized_prompt,
                      tokenized_prompt_mask=obs.tokenized_prompt_mask)
    with pytest.raises(FlowlensError, match=r"images\['base_0_rgb'\]"):
        sample_actions(model, params, bad, noise=kit.noise(name))
    with pytest.raises(FlowlensError, match="noise=.*or rng"):
        sample_actions(model, params, obs)
    with pytest.raises(FlowlensError, match="batch_index 2"):
        sample_actions(model, params, obs, noise=kit.noise(name), capture=CaptureConfig(batch_index=2))


def test_the_model_does_not_import_the_sampler():
    # issue 12: the arrow runs one way (sampler → pi0); sampling is flowlens.model.sample_actions.
    import ast

    import flowlens.model.pi0 as pi0

    tree = ast.parse(pathlib.Path(pi0.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "flowlens.model.sampler" not in imported and "flowlens.model.knockout" in imported
    assert not hasattr(pi0.Pi0Model, "sample_actions")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_state_is_named_not_blamed_on_the_softmax(bad):
    import dataclasses

    obs = kit.observation("test_tiny")
    state = np.array(obs.state, np.float32)
    state[1, 0] = bad
    with pytest.raises(FlowlensError, match=r"Observation\.state holds NaN or inf"):
        sample_actions(
            kit.model("test_tiny"), kit.params("test_tiny"), dataclasses.replace(obs, state=state), rng=jax.random.key(0),
            capture=CaptureConfig(),
        )


@pytest.mark.parametrize("rows", [(0, 1, 2, 3, 4), (1, 2, 3), (4,), (0, 2, 3)])
@pytest.mark.parametrize("heads", [None, "mean", "max", "min"])
def test_kept_slice_equals_numpy_indexing(rows, heads):
    # runs of rows are sliced, other selections gathered; heads are folded one by one
    from flowlens.model.gemma import LayerCapture, _keep

    probs = np.random.default_rng(0).random((2, 3, 5, 7)).astype(np.float32)  # [B, N, T, S]
    got = np.asarray(jax.jit(lambda p: _keep(p, LayerCapture((0,), rows, 1, heads)))(jnp.asarray(probs)))
    want = probs[1][:, list(rows)]
    if heads is not None:
        want = {"mean": np.mean, "max": np.max, "min": np.min}[heads](want, axis=0, keepdims=True)
    assert got.shape == ((3 if heads is None else 1), len(rows), 7)
    np.testing.assert_allclose(got, want, rtol=0, atol=0 if heads != "mean" else 1e-7)
