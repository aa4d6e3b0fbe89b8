"""SigLIP encoder: openpi's parameter tree, shapes, and attention against independent oracles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model.config import SiglipConfig, get_config, so400m
from flowlens.model.siglip import Siglip, SiglipOutput, siglip_param_shapes

TINY = SiglipConfig(width=32, depth=3, mlp_dim=48, num_heads=4, patch_size=7, image_size=28, out_dim=24)

# Fact sheet §7.2, written out literally (So400m/14, head to 2048).
SO400M_TREE = {
    "embedding/kernel": (14, 14, 3, 1152),
    "embedding/bias": (1152,),
    "pos_embedding": (1, 256, 1152),
    "Transformer/encoderblock/LayerNorm_0/scale": (27, 1152),
    "Transformer/encoderblock/LayerNorm_0/bias": (27, 1152),
    "Transformer/encoderblock/LayerNorm_1/scale": (27, 1152),
    "Transformer/encoderblock/LayerNorm_1/bias": (27, 1152),
    **{
        f"Transformer/encoderblock/MultiHeadDotProductAttention_0/{n}/kernel": (27, 1152, 16, 72)
        for n in ("query", "key", "value")
    },
    **{
        f"Transformer/encoderblock/MultiHeadDotProductAttention_0/{n}/bias": (27, 16, 72)
        for n in ("query", "key", "value")
    },
    "Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel": (27, 16, 72, 1152),
    "Transformer/encoderblock/MultiHeadDotProductAttention_0/out/bias": (27, 1152),
    "Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": (27, 1152, 4304),
    "Transformer/encoderblock/MlpBlock_0/Dense_0/bias": (27, 4304),
    "Transformer/encoderblock/MlpBlock_0/Dense_1/kernel": (27, 4304, 1152),
    "Transformer/encoderblock/MlpBlock_0/Dense_1/bias": (27, 1152),
    "Transformer/encoder_norm/scale": (1152,),
    "Transformer/encoder_norm/bias": (1152,),
    "head/kernel": (1152, 2048),
    "head/bias": (2048,),
}


def _shapes(tree):
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}


def _random_params(cfg, seed=0, dtype=np.float32):
    """Params with every leaf random (biases and LayerNorm params too), so the oracle checks them all."""
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in siglip_param_shapes(cfg).items():
        scale = 1.0 / np.sqrt(shape[-2] if key.endswith("kernel") and len(shape) > 1 else 4.0)
        if key.endswith("out/kernel"):
            scale = 1.0 / np.sqrt(shape[-3] * shape[-2])
        base = 1.0 if key.endswith("scale") else 0.0
        flat[tuple(key.split("/"))] = (base + scale * rng.standard_normal(shape)).astype(dtype)
    return traverse_util.unflatten_dict(flat)


def _images(cfg, batch=2, seed=1):
    return (
        np.random.default_rng(seed)
        .uniform(-1, 1, (batch, cfg.image_size, cfg.image_size, 3))
        .astype(np.float32)
    )


# ---- numpy oracle: the SigLIP forward written independently, float64 -------------------------
def _np_layernorm(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * scale + bias


def _np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_siglip(params, images, cfg):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b, pz, g = images.shape[0], cfg.patch_size, cfg.image_size // cfg.patch_size
    patches = images.astype(np.float64).reshape(b, g, pz, g, pz, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, g * g, pz * pz * 3)
    x = patches @ p["embedding"]["kernel"].reshape(pz * pz * 3, cfg.width) + p["embedding"]["bias"]
    x = x + p["pos_embedding"]
    blk = p["Transformer"]["encoderblock"]
    att = blk["MultiHeadDotProductAttention_0"]
    probs_all, norms = [], []
    hd = cfg.width // cfg.num_heads
    for layer in range(cfg.depth):

        def lp(d, layer=layer):
            return {k: v[layer] for k, v in d.items()}

        y = _np_layernorm(x, **lp(blk["LayerNorm_0"]))
        q, k, v = (
            np.einsum("bpw,whd->bphd", y, att[n]["kernel"][layer]) + att[n]["bias"][layer]
            for n in ("query", "key", "value")
        )
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
        probs = _np_softmax(logits)
        probs_all.append(probs)
        o = np.einsum("bhqk,bkhd->bqhd", probs, v)
        x = x + np.einsum("bqhd,hdw->bqw", o, att["out"]["kernel"][layer]) + att["out"]["bias"][layer]
        y = _np_layernorm(x, **lp(blk["LayerNorm_1"]))
        mlp = blk["MlpBlock_0"]
        y = _np_gelu(y @ mlp["Dense_0"]["kernel"][layer] + mlp["Dense_0"]["bias"][layer])
        x = x + y @ mlp["Dense_1"]["kernel"][layer] + mlp["Dense_1"]["bias"][layer]
        norms.append(np.linalg.norm(x, axis=-1))
    x = _np_layernorm(x, **p["Transformer"]["encoder_norm"])
    tokens = x @ p["head"]["kernel"] + p["head"]["bias"]
    return tokens, np.stack(probs_all), np.stack(norms)


# ---- openpi-structured reference built from flax's own attention module ------------------------
class _RefMlp(nn.Module):
    mlp_dim: int
    dtype: str

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype)(h)


class _RefEncoderBlock(nn.Module):
    cfg: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x, _):
        y = nn.LayerNorm(dtype=self.dtype)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.cfg.num_heads, dtype=self.dtype)(y, y)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        return x + _RefMlp(self.cfg.mlp_dim, self.dtype, name="MlpBlock_0")(y), None


class _RefTransformer(nn.Module):
    cfg: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x):
        x, _ = nn.scan(
            _RefEncoderBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.cfg.depth,
        )(self.cfg, self.dtype, name="encoderblock")(x, None)
        return nn.LayerNorm(name="encoder_norm", dtype=self.dtype)(x)


class _RefSiglip(nn.Module):
    """openpi's siglip.py structure with flax's MultiHeadDotProductAttention (the module openpi uses)."""

    cfg: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, images):
        c, p = self.cfg, self.cfg.patch_size
        x = nn.Conv(c.width, (p, p), strides=(p, p), padding="VALID", name="embedding")(
            images.astype(jnp.float32)
        )
        x = x.reshape(x.shape[0], -1, c.width)
        x = x + self.param("pos_embedding", nn.initializers.zeros, (1, x.shape[1], c.width))
        x = x.astype(self.dtype)
        x = _RefTransformer(c, self.dtype, name="Transformer")(x)
        return nn.Dense(c.out_dim, dtype=self.dtype, name="head")(x)


def _run(dtype, params, images, **flags):
    """One jit-compiled apply (eager linen dispatch compiles op by op and is slow on CPU)."""
    enc = Siglip(TINY, dtype=dtype)
    return jax.jit(lambda p, x: enc.apply({"params": p}, x, **flags))(params, images)


@pytest.fixture(scope="module")
def tiny_params():
    return _random_params(TINY)


@pytest.fixture(scope="module")
def tiny_f32_full(tiny_params):
    return _run("float32", tiny_params, _images(TINY), return_attention=True, return_norms=True)


@pytest.fixture(scope="module")
def tiny_bf16_params(tiny_params):
    """bf16 parameters, as openpi (and load_checkpoint by default) loads them for inference."""
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), tiny_params)


@pytest.fixture(scope="module")
def tiny_bf16_plain(tiny_bf16_params):
    return _run("bfloat16", tiny_bf16_params, _images(TINY))


@pytest.fixture(scope="module")
def tiny_bf16_full_strict(tiny_bf16_params):
    """bf16 params and compute, every diagnostic, under strict dtype and rank promotion."""
    params = tiny_bf16_params
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        return _run("bfloat16", params, jnp.asarray(_images(TINY)), return_attention=True, return_norms=True)


# ---- tests -------------------------------------------------------------------------------------
def test_so400m_param_tree_matches_fact_sheet():
    cfg = so400m(2048)
    shapes = jax.eval_shape(lambda: Siglip(cfg).init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    tree = _shapes(shapes["params"])
    assert tree == SO400M_TREE
    assert tree == siglip_param_shapes(cfg)
    assert sum(int(np.prod(s)) for s in tree.values()) == 414_803_696
    assert 1152 * 2048 + 2048 == 2_361_344  # the head's share, as stated in §7.3
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}


def test_dummy_config_keeps_full_so400m_with_small_head():
    cfg = get_config("dummy").siglip
    shapes = jax.eval_shape(lambda: Siglip(cfg).init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    tree = _shapes(shapes["params"])
    assert tree["head/kernel"] == (1152, 64)
    assert tree["pos_embedding"] == (1, 256, 1152)


@pytest.mark.slow
def test_tiny_init_and_forward_shape_and_dtype():
    cfg = get_config("test_tiny").siglip
    images = _images(cfg, batch=3)
    params = jax.jit(Siglip(cfg, dtype="float32").init)(jax.random.key(0), images)
    assert _shapes(params["params"]) == siglip_param_shapes(cfg)
    for dtype in ("float32", "bfloat16"):
        tokens = jax.jit(Siglip(cfg, dtype=dtype).apply)(params, images)
        assert tokens.shape == (3, cfg.num_patches, cfg.out_dim) == (3, 16, 64)
        assert tokens.dtype == jnp.dtype(dtype)


def test_attention_and_tokens_match_numpy_oracle(tiny_params, tiny_f32_full):
    out = tiny_f32_full
    assert isinstance(out, SiglipOutput)
    tokens, probs, norms = _np_siglip(tiny_params, _images(TINY), TINY)
    n = TINY.num_patches
    assert out.attention.shape == (TINY.depth, 2, TINY.num_heads, n, n)
    assert out.attention.dtype == jnp.float32
    np.testing.assert_allclose(out.attention, probs, atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.sum(out.attention, -1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.tokens, tokens, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(out.residual_norms, norms, rtol=1e-4)
    np.testing.assert_allclose(out.token_norms, np.linalg.norm(tokens, axis=-1), rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_openpi_structure_built_on_flax_attention(
    dtype, tiny_params, tiny_bf16_params, tiny_f32_full, tiny_bf16_plain
):
    """Same params in a module laid out like openpi's (flax MultiHeadDotProductAttention): same tokens."""
    ref = _RefSiglip(TINY, dtype)
    images = _images(TINY)
    ref_shapes = jax.eval_shape(lambda: ref.init(jax.random.key(0), images))["params"]
    assert _shapes(ref_shapes) == siglip_param_shapes(TINY)  # openpi's tree == ours
    got = tiny_f32_full.tokens if dtype == "float32" else tiny_bf16_plain
    params = tiny_params if dtype == "float32" else tiny_bf16_params
    want = jax.jit(lambda p, x: ref.apply({"params": p}, x))(params, images)
    assert got.dtype == want.dtype
    if dtype == "float32":
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_output_shapes(tiny_f32_full):
    n = TINY.num_patches
    assert tiny_f32_full.tokens.shape == (2, n, TINY.out_dim) and tiny_f32_full.tokens.dtype == jnp.float32
    assert tiny_f32_full.residual_norms.shape == (TINY.depth, 2, n)
    assert tiny_f32_full.token_norms.shape == (2, n)


def test_diagnostics_do_not_change_tokens_bf16_strict(tiny_bf16_plain, tiny_bf16_full_strict):
    """Asking for attention changes nothing in the forward; bf16 params run under strict promotion."""
    out = tiny_bf16_full_strict
    assert out.tokens.dtype == jnp.bfloat16 and tiny_bf16_plain.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(tiny_bf16_plain, np.float32), np.asarray(out.tokens, np.float32))
    assert out.attention.dtype == jnp.float32 and out.residual_norms.dtype == jnp.float32
    np.testing.assert_allclose(np.sum(out.attention, -1), 1.0, atol=1e-5)


def test_each_flag_alone(tiny_params):
    enc, images = Siglip(TINY, dtype="float32"), _images(TINY)
    norms = jax.eval_shape(lambda p, x: enc.apply({"params": p}, x, return_norms=True), tiny_params, images)
    assert norms.residual_norms.shape == (TINY.depth, 2, TINY.num_patches) and norms.attention is None
    att = jax.eval_shape(lambda p, x: enc.apply({"params": p}, x, return_attention=True), tiny_params, images)
    assert att.attention.shape == (TINY.depth, 2, TINY.num_heads, 16, 16) and att.token_norms is None


@pytest.mark.parametrize(
    "shape", [(2, 27, 28, 3), (28, 28, 3), (1, 28, 28, 1)], ids=["size", "rank", "channels"]
)
def test_wrong_image_shape_raises(shape):
    enc = Siglip(TINY, dtype="float32")
    with pytest.raises(FlowlensError, match=r"images must be \[B, 28, 28, 3\]"):
        enc.init(jax.random.key(0), jnp.zeros(shape))
