"""SigLIP: the ViT image encoder of PaliGemma / Pi0 (So400m/14, no pooling, a linear head).

Each camera image is encoded on its own (no cross-image attention). The image, float32
``[B, H, W, 3]`` in [-1, 1], is cut into ``patch_size`` × ``patch_size`` patches by a strided
convolution (computed in float32), a learned position embedding is added (float32), and the
sequence is cast to the compute dtype and runs through ``depth`` pre-LayerNorm encoder blocks
(self-attention, GELU MLP), a final LayerNorm and a per-token linear ``head`` into the PaliGemma
width. There is no CLS token and no pooling: every patch becomes one prefix token, row-major over
the ``image_size // patch_size`` grid (16 × 16 = 256 tokens for So400m/14 at 224 px).

Numerics follow openpi's ``siglip.py`` (itself big_vision's ViT): flax LayerNorm (eps 1e-6),
``nn.gelu`` (tanh approximation), attention with biases and scale ``head_dim ** -0.5`` applied to
the queries, logits and softmax in the compute dtype (flax's ``force_fp32_for_softmax=False``).
The parameter tree is exactly openpi's ``PaliGemma/img`` subtree (fact sheet §7.2), per-block
parameters stacked over a leading ``depth`` axis (``nn.scan``)::

    embedding/{kernel [p, p, 3, W], bias [W]}          pos_embedding [1, P, W]
    Transformer/encoderblock/LayerNorm_0|1/{scale, bias} [depth, W]
    Transformer/encoderblock/MultiHeadDotProductAttention_0/
        query|key|value/{kernel [depth, W, heads, W/heads], bias [depth, heads, W/heads]}
        out/{kernel [depth, heads, W/heads, W], bias [depth, W]}
    Transformer/encoderblock/MlpBlock_0/Dense_0/{kernel [depth, W, mlp], bias [depth, mlp]}
    Transformer/encoderblock/MlpBlock_0/Dense_1/{kernel [depth, mlp, W], bias [depth, W]}
    Transformer/encoder_norm/{scale, bias} [W]          head/{kernel [W, out_dim], bias [out_dim]}

Diagnostics (visual attention sinks, high-norm "register-like" background patches) are explicit
outputs, never global state: ``return_attention=True`` adds every block's attention
probabilities, float32 ``[depth, B, heads, P, P]`` (softmax of the same logits the forward uses,
taken in float32 before any cast; memory ``depth·B·heads·P²·4`` bytes, 113 MB per image for
So400m), and ``return_norms=True`` adds the L2 norm of the residual stream after every block
``[depth, B, P]`` and of the output tokens ``[B, P]``.

Example::

    enc = Siglip(get_config("test_tiny").siglip, dtype="float32")
    params = enc.init(jax.random.key(0), jnp.zeros((1, 56, 56, 3)))["params"]
    tokens = enc.apply({"params": params}, images)                    # [B, 16, 64]
    out = enc.apply({"params": params}, images, return_attention=True)
    out.attention                                                     # [2, B, 2, 16, 16]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowlens.errors import FlowlensError
from flowlens.model.config import SiglipConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SiglipOutput:
    """What :class:`Siglip` returns when a diagnostic is asked for (a pytree).

    Attributes:
      tokens: [B, P, out_dim] image tokens in the compute dtype (what the LLM receives).
      attention: float32 [depth, B, heads, P, P] attention probabilities per block (query rows,
        key columns, both row-major patch indices); None unless ``return_attention``.
      residual_norms: float32 [depth, B, P] L2 norm of the residual stream after each block
        (before the final LayerNorm); None unless ``return_norms``.
      token_norms: float32 [B, P] L2 norm of ``tokens``; None unless ``return_norms``.
    """

    tokens: jax.Array
    attention: jax.Array | None = None
    residual_norms: jax.Array | None = None
    token_norms: jax.Array | None = None


def _layer_norm(x: jax.Array, dtype: Any, name: str) -> jax.Array:
    """flax LayerNorm (eps 1e-6, statistics in float32), as openpi. flax itself promotes bf16 with
    float32 implicitly, so it runs under "standard" promotion even when the caller set "strict"."""
    with jax.numpy_dtype_promotion("standard"):
        return nn.LayerNorm(epsilon=1e-6, dtype=dtype, name=name)(x)


def _l2(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return jnp.sqrt(jnp.sum(x * x, axis=-1))


class SelfAttention(nn.Module):
    """Multi-head self-attention with flax ``MultiHeadDotProductAttention``'s parameter layout.

    ``query``/``key``/``value``: DenseGeneral W → (heads, head_dim); ``out``: (heads, head_dim) → W.
    Returns ``(y [B, P, W], probs float32 [B, heads, P, P] or None)``.
    """

    num_heads: int
    dtype: Any = jnp.float32
    return_attention: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            features=(self.num_heads, head_dim),
            axis=-1,
            dtype=self.dtype,
            name=name,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
        )
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B, P, heads, head_dim]
        q = q / jnp.sqrt(head_dim).astype(q.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        probs = jax.nn.softmax(logits).astype(self.dtype)
        captured = jax.nn.softmax(logits.astype(jnp.float32)) if self.return_attention else None
        encoded = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        y = nn.DenseGeneral(
            features=width,
            axis=(-2, -1),
            dtype=self.dtype,
            name="out",
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
        )(encoded)
        return y, captured


class MlpBlock(nn.Module):
    """Dense(W → mlp_dim), GELU (tanh approximation), Dense(mlp_dim → W)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        inits = {
            "kernel_init": nn.initializers.xavier_uniform(),
            "bias_init": nn.initializers.normal(stddev=1e-6),
        }
        width = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0", **inits)(x)
        x = nn.gelu(x, approximate=True)
        return nn.Dense(width, dtype=self.dtype, name="Dense_1", **inits)(x)


class EncoderBlock(nn.Module):
    """One pre-LN block: ``x + SA(LN(x))`` then ``x + MLP(LN(x))``; scanned over depth.

    Returns ``(x, per-block outputs)``; the outputs (stacked by the scan) hold ``attention``
    [B, heads, P, P] and ``norm`` [B, P] when asked for.
    """

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    return_attention: bool = False
    return_norms: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        y = _layer_norm(x, self.dtype, "LayerNorm_0")
        y, probs = SelfAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            return_attention=self.return_attention,
            name="MultiHeadDotProductAttention_0",
        )(y)
        x = x + y
        y = _layer_norm(x, self.dtype, "LayerNorm_1")
        x = x + MlpBlock(mlp_dim=self.mlp_dim, dtype=self.dtype, name="MlpBlock_0")(y)
        out = {}
        if probs is not None:
            out["attention"] = probs
        if self.return_norms:
            out["norm"] = _l2(x)
        return x, out


class Encoder(nn.Module):
    """``depth`` scanned EncoderBlocks (params stacked on axis 0) and ``encoder_norm``."""

    depth: int
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    remat: bool = False
    return_attention: bool = False
    return_norms: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        block = EncoderBlock
        if self.remat:
            block = nn.remat(block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
        scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth)
        x, per_block = scanned(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dtype=self.dtype,
            return_attention=self.return_attention,
            return_norms=self.return_norms,
            name="encoderblock",
        )(x)
        return _layer_norm(x, self.dtype, "encoder_norm"), per_block


class Siglip(nn.Module):
    """SigLIP image encoder; openpi's ``PaliGemma/img`` (``siglip.Module(variant="So400m/14",
    pool_type="none", scan=True)``).

    Attributes:
      config: sizes (width, depth, mlp_dim, num_heads, patch_size, image_size, out_dim).
      dtype: compute dtype of the encoder blocks and the head ("bfloat16" as openpi, or
        "float32"); the patch embedding and position embedding are always float32. Parameters
        are created in float32 and cast per operation, so bf16-loaded weights work too.
      remat: rematerialise each block in the backward pass (training memory); no effect on values.
      head_zeroinit: initialise the head kernel with zeros (openpi / big_vision default).
    """

    config: SiglipConfig
    dtype: Any = "bfloat16"
    remat: bool = False
    head_zeroinit: bool = True

    @nn.compact
    def __call__(
        self, images: jax.Array, *, return_attention: bool = False, return_norms: bool = False
    ) -> jax.Array | SiglipOutput:
        """Encode images into patch tokens.

        Args:
          images: float32 [B, image_size, image_size, 3] in [-1, 1].
          return_attention: also return every block's attention probabilities (float32).
          return_norms: also return residual-stream and output-token L2 norms.

        Returns:
          tokens [B, P, out_dim] (P = num_patches) in the compute dtype when no diagnostic is
          asked for; otherwise a :class:`SiglipOutput` holding the tokens and the diagnostics.

        Raises:
          FlowlensError: images of the wrong rank, size or channel count.
        """
        cfg = self.config
        shape = tuple(images.shape)
        want = (cfg.image_size, cfg.image_size, 3)
        if len(shape) != 4 or shape[1:] != want:
            raise FlowlensError(
                f"images must be [B, {cfg.image_size}, {cfg.image_size}, 3] float in [-1, 1], got shape "
                f"{shape}. Letterbox frames to {cfg.image_size} px first (flowlens.model.preprocess)."
            )
        dtype = jnp.dtype(self.dtype)
        p = cfg.patch_size
        x = jnp.asarray(images, jnp.float32)
        x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding="VALID", dtype=jnp.float32, name="embedding")(
            x
        )
        b, gh, gw, c = x.shape
        x = jnp.reshape(x, (b, gh * gw, c))
        posemb = self.param(
            "pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)), (1, gh * gw, c), jnp.float32
        )
        x = (x + jnp.asarray(posemb, jnp.float32)).astype(dtype)
        x, per_block = Encoder(
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_dim=cfg.mlp_dim,
            dtype=dtype,
            remat=self.remat,
            return_attention=return_attention,
            return_norms=return_norms,
            name="Transformer",
        )(x)
        head_init = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
        tokens = nn.Dense(cfg.out_dim, dtype=dtype, name="head", **head_init)(x)
        if not (return_attention or return_norms):
            return tokens
        return SiglipOutput(
            tokens=tokens,
            attention=per_block.get("attention"),
            residual_norms=per_block.get("norm"),
            token_norms=_l2(tokens) if return_norms else None,
        )


def siglip_param_shapes(config: SiglipConfig) -> dict[str, tuple[int, ...]]:
    """Expected parameter shapes of :class:`Siglip`, ``"a/b/c" → shape`` (fact sheet §7.2).

    Computed from the sizes, without tracing the module (the checkpoint validator uses it).
    """
    w, d, m, h, p, o = (
        config.width,
        config.depth,
        config.mlp_dim,
        config.num_heads,
        config.patch_size,
        config.out_dim,
    )
    hd = w // h
    blk = "Transformer/encoderblock"
    att = f"{blk}/MultiHeadDotProductAttention_0"
    shapes = {
        "embedding/kernel": (p, p, 3, w),
        "embedding/bias": (w,),
        "pos_embedding": (1, config.num_patches, w),
        f"{blk}/MlpBlock_0/Dense_0/kernel": (d, w, m),
        f"{blk}/MlpBlock_0/Dense_0/bias": (d, m),
        f"{blk}/MlpBlock_0/Dense_1/kernel": (d, m, w),
        f"{blk}/MlpBlock_0/Dense_1/bias": (d, w),
        f"{att}/out/kernel": (d, h, hd, w),
        f"{att}/out/bias": (d, w),
        "Transformer/encoder_norm/scale": (w,),
        "Transformer/encoder_norm/bias": (w,),
        "head/kernel": (w, o),
        "head/bias": (o,),
    }
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        shapes[f"{blk}/{ln}/scale"] = (d, w)
        shapes[f"{blk}/{ln}/bias"] = (d, w)
    for name in ("query", "key", "value"):
        shapes[f"{att}/{name}/kernel"] = (d, w, h, hd)
        shapes[f"{att}/{name}/bias"] = (d, h, hd)
    return shapes
