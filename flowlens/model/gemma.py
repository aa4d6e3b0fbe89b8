"""The Gemma "mixture of experts" transformer of Pi0 / Pi0.5, with attention capture built in.

Two Gemma experts with separate weights (expert 0 = PaliGemma for the prefix tokens, expert 1 =
the action expert for the suffix tokens) share ONE attention per layer: each expert projects its
own tokens to queries / keys / values, the projections are concatenated along the sequence
(expert 0 first), RoPE is applied, and every query attends over all keys allowed by the mask
(multi-query attention: ``num_heads`` query heads share ``num_kv_heads`` = 1 key/value head).
Each expert then applies its own output projection, norms (RMSNorm, or adaRMS with a gated
residual for Pi0.5's action expert) and gated-GELU MLP.

The implementation is functional: parameters are the openpi checkpoint subtree
``PaliGemma/llm`` as a nested dict (per-layer arrays stacked on a leading ``depth`` axis, names
and shapes of openpi's linen modules, fact sheet §7.2), and :func:`transformer` runs the
``depth`` layers with ``jax.lax.scan``. Numerics follow openpi's ``gemma.py`` step by step
(weights cast to the activation dtype, RMSNorm variance in float32, RoPE in float32 cast back,
logits in float32, mask value -2.3819763e38, softmax in float32, probabilities cast to the
activation dtype before they weight the values).

Capture is a return value, never global state: :class:`LayerCapture` tells :func:`transformer`
which query rows and which layers to keep and whether to fuse heads; the probabilities are the
float32 softmax output *before* the cast, ``[layer, batch, head, query, key]``. With
``record_residual`` it also returns the residual stream (each layer's input and the final
pre-norm output, float32) — the raw material of value-based attributions and activation patching.
Edge knockouts (:class:`EdgeEdit`) remove chosen (layer, head, query, key) entries from the mask before the
softmax. For gradients with respect to the attention maps, ``prob_offsets`` adds an array (zeros)
to the float32 probabilities right after the softmax; ``jax.vjp`` with respect to it gives
∂target/∂A for every layer (None, the default, traces exactly the plain computation).
Activation patches (:class:`flowlens.model.patching.Patch`) overwrite chosen layer inputs or
per-head attention outputs with values from another run; ``record_heads`` returns those per-head
outputs (the source of a head patch).

Axis letters inside this module follow openpi: B batch, T query tokens, S key tokens, N query
heads, K key/value heads, G = N / K, H head size, D width, F MLP size, L layers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flowlens.model.config import GemmaConfig

ONE_DRAW_LIMIT = 1 << 27  # parameter trees up to this size draw their normals in one RNG call
BIG_NEG = -2.3819763e38  # openpi's mask value (gemma/modules.py), not finfo.min
ROPE_MAX_WAVELENGTH = 10_000


def _name(base: str, expert: int) -> str:
    """openpi's naming: expert 0 keeps the plain name (loads from PaliGemma), expert i gets ``_i``."""
    return base if expert == 0 else f"{base}_{expert}"


# ---- parameters -------------------------------------------------------------------------------
def init_params(rng: jax.Array, configs: Sequence[GemmaConfig], *, adarms: Sequence[bool], vocab_size: int,
                param_dtype=jnp.float32) -> dict:
    """Random parameters with openpi's tree, shapes and initialisers (the ``PaliGemma/llm`` subtree).

    Args:
      rng: a PRNG key.
      configs: one GemmaConfig per expert (same depth / heads / head size).
      adarms: per expert, whether its norms are adaptive (Pi0.5: ``(False, True)``).
      vocab_size: embedding rows (257,152).
      param_dtype: dtype of the created arrays.

    Returns:
      ``{"embedder": {"input_embedding": [V, D0]}, "layers": {...}, "final_norm": ..., ...}``.
    """
    c0 = configs[0]
    depth, n, k, h = c0.depth, c0.num_heads, c0.num_kv_heads, c0.head_dim
    # (path, shape, stddev); stddev None = zeros. Kernels: normal with variance 1 / fan_in (openpi's
    # lecun_normal draws a truncated normal of that variance), embedding: normal(0.01) as openpi.
    specs: list[tuple[tuple[str, ...], tuple[int, ...], float | None]] = [
        (("embedder", "input_embedding"), (vocab_size, c0.width), 0.01)]
    for i, (c, ada) in enumerate(zip(configs, adarms, strict=True)):
        d, f = c.width, c.mlp_dim
        specs += [
            (("layers", "attn", _name("q_einsum", i), "w"), (depth, n, d, h), d**-0.5),
            (("layers", "attn", _name("kv_einsum", i), "w"), (depth, 2, k, d, h), d**-0.5),
            (("layers", "attn", _name("attn_vec_einsum", i), "w"), (depth, n, h, d), (n * h) ** -0.5),
            (("layers", _name("mlp", i), "gating_einsum"), (depth, 2, d, f), d**-0.5),
            (("layers", _name("mlp", i), "linear"), (depth, f, d), f**-0.5),
        ]
        for norm, lead in [(("layers", _name("pre_attention_norm", i)), (depth,)),
                           (("layers", _name("pre_ffw_norm", i)), (depth,)), ((_name("final_norm", i),), ())]:
            if ada:  # zero-initialised modulation Dense (scale, shift, gate)
                specs += [(norm + ("Dense_0", "kernel"), lead + (d, 3 * d), None),
                          (norm + ("Dense_0", "bias"), lead + (3 * d,), None)]
            else:
                specs.append((norm + ("scale",), lead + (d,), None))
    return _materialise(rng, specs, param_dtype)


def _materialise(rng, specs, dtype) -> dict:
    """Build the nested dict. Small trees draw all normals at once (one RNG op compiles ~10× faster
    on CPU than dozens); large ones draw per array (no giant float32 temporary)."""
    sizes = [int(np.prod(shape)) for _, shape, std in specs if std is not None]
    one_draw = sum(sizes) <= ONE_DRAW_LIMIT
    flat = jax.random.normal(rng, (sum(sizes),), jnp.float32) if one_draw else None
    keys = iter(jax.random.split(rng, len(specs)))
    out: dict = {}
    offset = 0
    for path, shape, std in specs:
        key = next(keys)
        if std is None:
            arr = jnp.zeros(shape, dtype)
        else:
            size = int(np.prod(shape))
            if one_draw:
                z = flat[offset:offset + size].reshape(shape)
                arr = (z * std).astype(dtype)
            elif isinstance(key, jax.core.Tracer):
                arr = (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)
            elif size <= (1 << 26) or len(shape) < 2:  # eager: one compiled draw per array
                arr = _scaled_normal(key, shape, std, jnp.dtype(dtype))
            else:  # huge arrays: chunks along axis 0 of <= 2**26 entries bound the float32 temporaries
                rows = max(1, (1 << 26) // int(np.prod(shape[1:])))
                starts = range(0, shape[0], rows)
                arr = jnp.concatenate([
                    _scaled_normal(k, (min(rows, shape[0] - s),) + shape[1:], std, jnp.dtype(dtype))
                    for k, s in zip(jax.random.split(key, len(starts)), starts, strict=True)])
            offset += size
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = arr
    return out


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _scaled_normal(key, shape, std, dtype):
    return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)


def lecun_normal(key, shape, dtype, fan_in: int):
    """Normal with variance 1 / fan_in (projection kernels)."""
    return (jax.random.normal(key, shape, jnp.float32) * fan_in**-0.5).astype(dtype)


def param_count(configs: Sequence[GemmaConfig], *, adarms: Sequence[bool], vocab_size: int) -> int:
    """Number of parameters of :func:`init_params` (fact sheet §7.3 formulas)."""
    total = vocab_size * configs[0].width
    for c, ada in zip(configs, adarms, strict=True):
        d, n, k, h, f = c.width, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim
        norm = (d * 3 * d + 3 * d) if ada else d
        total += c.depth * (n * d * h + 2 * k * d * h + n * h * d + 3 * d * f + 2 * norm) + norm
    return total


# ---- building blocks (openpi numerics) --------------------------------------------------------
def embed_tokens(params: dict, tokens: jax.Array, dtype) -> jax.Array:
    """int [B, T] → [B, T, D0]: embedding row times sqrt(D0) (in the table dtype), cast to ``dtype``."""
    table = params["embedder"]["input_embedding"]
    x = table[(tokens,)]
    x = x * jnp.sqrt(table.shape[1]).astype(x.dtype)
    return x.astype(dtype)


def rms_norm(x: jax.Array, p: dict, cond: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """RMSNorm (``p["scale"]``) or adaRMS (``p["Dense_0"]`` applied to ``cond`` [B, Dc]).

    Returns ``(normed [B, T, D] in x's dtype, gate [B, 1, D] or None)``.
    """
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jnp.reciprocal(jnp.sqrt(var + 1e-06))
    lead = (1,) * (x.ndim - 1)
    if cond is None:
        scale = (1 + p["scale"]).astype(jnp.float32)  # 1 + scale in the parameter dtype, as openpi
        return (normed * scale.reshape(lead + scale.shape)).astype(dtype), None
    dense = p["Dense_0"]
    mod = jnp.dot(cond.astype(dtype), dense["kernel"].astype(dtype)) + dense["bias"].astype(dtype)[None, :]
    scale, shift, gate = jnp.split(mod[:, None, :], 3, axis=-1)
    normed = normed * (1 + scale).astype(jnp.float32) + shift.astype(jnp.float32)
    return normed.astype(dtype), gate


def apply_rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """RoPE, split-halves convention: x [B, T, heads, H], positions int [B, T]; f32 math, cast back."""
    h = x.shape[-1]
    freq_exponents = (2.0 / h) * jnp.arange(h // 2, dtype=jnp.float32)
    timescale = ROPE_MAX_WAVELENGTH ** freq_exponents
    radians = positions.astype(jnp.float32)[..., None] / timescale[None, None, :]
    radians = radians[..., None, :]
    sin, cos = jnp.sin(radians), jnp.cos(radians)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def feed_forward(x: jax.Array, p: dict) -> jax.Array:
    """Gated GELU (tanh approximation): ``(gelu(x Wg0) * (x Wg1)) Wlin``."""
    w = p["gating_einsum"].astype(x.dtype)
    act = nn.gelu(jnp.dot(x, w[0])) * jnp.dot(x, w[1])
    return jnp.dot(act, p["linear"].astype(x.dtype))


def _gated_residual(x, y, gate):
    return x + y if gate is None else x + y * gate


# ---- capture and knockout specifications ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerCapture:
    """What one :func:`transformer` call keeps of its attention probabilities (static, hashable).

    Attributes:
      layers: model layers to keep, ascending.
      rows: query rows (indices into this call's T queries) to keep.
      batch_index: the batch element kept.
      head_reduction: None keeps every head; "mean" / "max" / "min" fuses them to one.
    """

    layers: tuple[int, ...]
    rows: tuple[int, ...]
    batch_index: int = 0
    head_reduction: str | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EdgeEdit:
    """M rank-one edge knockouts for one attention call (a pytree of arrays).

    Entry m removes the edges (query t, key s) with ``queries[m, t] & keys[m, s]`` in the layers
    and heads where ``layer_heads[m, l, n]``. A query row that had allowed keys but loses all of
    them keeps its own (diagonal) key, so its softmax stays defined.

    Attributes:
      queries: bool [M, T].
      keys: bool [M, S].
      layer_heads: bool [M, L, N].
      self_offset: key index of query 0's own token (S - T for prefix/suffix/full calls).
    """

    queries: jax.Array
    keys: jax.Array
    layer_heads: jax.Array
    self_offset: int = dataclasses.field(default=0, metadata={"static": True})


def _edited_mask(mask: jax.Array, edit: EdgeEdit, layer: jax.Array) -> jax.Array:
    """mask bool [B, 1, T, S] → per-head mask [B, N, T, S] with the knocked-out edges removed."""
    lh = jax.lax.dynamic_index_in_dim(edit.layer_heads, layer, axis=1, keepdims=False)  # [M, N]
    removed = jnp.einsum("mn,mt,ms->nts", lh.astype(jnp.float32), edit.queries.astype(jnp.float32),
                         edit.keys.astype(jnp.float32)) > 0
    allowed = mask & ~removed[None]
    t, s = mask.shape[-2:]
    emptied = ~allowed.any(-1) & mask.any(-1)  # [B, N, T]
    diag = jnp.arange(s)[None, :] == (jnp.arange(t) + edit.self_offset)[:, None]  # [T, S]
    return allowed | (emptied[..., None] & diag)


# ---- the layers -------------------------------------------------------------------------------
def attention(lp: dict, xs: Sequence[jax.Array | None], positions: jax.Array, mask: jax.Array,
              kv_cache: tuple[jax.Array, jax.Array] | None, configs: Sequence[GemmaConfig],
              edit: EdgeEdit | None = None, layer: jax.Array | None = None, prob_offset: jax.Array | None = None,
              head_patch=None, return_heads: bool = False):
    """One shared attention over all present experts' tokens.

    Args:
      lp: this layer's ``attn`` params.
      xs: per expert [B, T_i, D_i] (normed) or None.
      positions: int [B, T] (T = sum of present T_i).
      mask: bool [B, 1, T, S].
      kv_cache: None or (k, v) [B, S_cache, K, H] of earlier tokens (already RoPE'd).
      edit: optional knockouts; ``layer`` is this layer's index (for ``edit``).
      prob_offset: optional float32 [B, N, T, S] added to the probabilities after the softmax
        (zeros: differentiate with respect to it to get ∂/∂probabilities).
      head_patch: None or (where bool [B, T, N], values [B, T, N, H]): per-head attention outputs
        (before the output projection) replaced by ``values`` where ``where``.
      return_heads: also return those per-head outputs, float32 [B, T, N, H].

    Returns:
      (per-expert outputs [B, T_i, D_i] or None, (k, v) [B, S, K, H], probs float32 [B, N, T, S]),
      and the per-head outputs last when ``return_heads``.
    """
    c0 = configs[0]
    dtype = next(x.dtype for x in xs if x is not None)
    qs, ks, vs = [], [], []
    for i, x in enumerate(xs):
        if x is None:
            continue
        qs.append(jnp.einsum("BTD,NDH->BTNH", x, lp[_name("q_einsum", i)]["w"].astype(dtype)))
        k, v = jnp.einsum("BSD,2KDH->2BSKH", x, lp[_name("kv_einsum", i)]["w"].astype(dtype))
        ks.append(k)
        vs.append(v)
    q, k, v = (jnp.concatenate(y, axis=1) for y in (qs, ks, vs))
    q = apply_rope(q, positions)
    q = q * c0.head_dim ** -0.5
    k = apply_rope(k, positions)
    if kv_cache is not None:
        k = jnp.concatenate([kv_cache[0], k], axis=1)
        v = jnp.concatenate([kv_cache[1], v], axis=1)
    b, t = q.shape[:2]
    kh, g = c0.num_kv_heads, c0.num_heads // c0.num_kv_heads
    q = q.reshape(b, t, kh, g, c0.head_dim)  # (K G) head order, as openpi's einops rearrange
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
    if edit is None:
        masked = jnp.where(mask[:, :, None, :, :], logits, BIG_NEG)
    else:
        per_head = _edited_mask(mask, edit, layer).reshape(b, kh, g, t, k.shape[1])
        masked = jnp.where(per_head, logits, BIG_NEG)
    probs32 = jax.nn.softmax(masked, axis=-1)
    if prob_offset is not None:
        probs32 = probs32 + prob_offset.reshape(probs32.shape)
    probs = probs32.astype(dtype)
    encoded = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, c0.num_heads, c0.head_dim)
    if head_patch is not None:
        where, values = head_patch
        encoded = jnp.where(where[..., None], values.astype(dtype), encoded)
    out, start = [], 0
    for i, x in enumerate(xs):
        if x is None:
            out.append(None)
            continue
        end = start + x.shape[1]
        out.append(jnp.einsum("BTNH,NHD->BTD", encoded[:, start:end],
                              lp[_name("attn_vec_einsum", i)]["w"].astype(dtype)))
        start = end
    probs32 = probs32.reshape(b, c0.num_heads, t, k.shape[1])
    if return_heads:
        return out, (k, v), probs32, encoded.astype(jnp.float32)
    return out, (k, v), probs32


def block(lp: dict, xs, positions, mask, adarms_cond, kv_cache, configs, edit=None, layer=None, prob_offset=None,
          head_patch=None, return_heads: bool = False):
    """One pre-norm layer for all present experts. Returns (xs, (k, v), probs float32 [B, N, T, S]) and,
    with ``return_heads``, the per-head attention outputs float32 [B, T, N, H] (see :func:`attention`)."""
    normed, gates = [], []
    for i, x in enumerate(xs):
        if x is None:
            normed.append(None)
            gates.append(None)
            continue
        y, gate = rms_norm(x, lp[_name("pre_attention_norm", i)], adarms_cond[i])
        normed.append(y)
        gates.append(gate)
    post, kv, probs, *heads = attention(lp["attn"], normed, positions, mask, kv_cache, configs, edit, layer,
                                        prob_offset, head_patch, return_heads)
    xs = [None if x is None else _gated_residual(x, y, gt) for x, y, gt in zip(xs, post, gates, strict=True)]
    out = []
    for i, x in enumerate(xs):
        if x is None:
            out.append(None)
            continue
        y, gate = rms_norm(x, lp[_name("pre_ffw_norm", i)], adarms_cond[i])
        out.append(_gated_residual(x, feed_forward(y, lp[_name("mlp", i)]), gate))
    return (out, kv, probs, heads[0]) if return_heads else (out, kv, probs)


def _keep(probs: jax.Array, cap: LayerCapture) -> jax.Array:
    """probs [B, N, T, S] → the kept slice [heads', rows, S] (float32)."""
    p = probs[cap.batch_index]
    lo, hi = cap.rows[0], cap.rows[-1] + 1
    if cap.rows == tuple(range(lo, hi)):  # a run of rows: a slice, not a gather (2× the capture cost)
        p = p[:, lo:hi] if hi - lo != p.shape[1] else p
    else:
        p = p[:, np.asarray(cap.rows, dtype=np.int32)]
    if cap.head_reduction is not None:  # heads folded one by one: XLA's reduce over the leading
        # axis inside the layer scan cost 2.5× the whole layer on CPU
        fold = {"mean": jnp.add, "max": jnp.maximum, "min": jnp.minimum}[cap.head_reduction]
        acc = p[0]
        for h in range(1, p.shape[0]):
            acc = fold(acc, p[h])
        p = (acc / p.shape[0] if cap.head_reduction == "mean" else acc)[None]
    return p


class TransformerOut(NamedTuple):
    """What :func:`transformer` returns.

    Attributes:
      outputs: per expert the final-normed hidden states [B, T_i, D_i], or None (expert not run).
      kv: (k, v) [L, B, S, K, H] of this call (``return_kv``), or None.
      captured: float32 [len(capture.layers), heads', rows, S] (``capture``), or None.
      residual: per expert None or float32 [L+1, B, T_i, D_i] (``record_residual``): the input of
        layers 0..L-1 and, last, the final output before the final norm.
      heads: float32 [L, B, T, N, H] (``record_heads``): every layer's per-head attention output
        before the output projection, tokens of all present experts.
    """

    outputs: list
    kv: tuple | None
    captured: jax.Array | None
    residual: list | None
    heads: jax.Array | None = None


def transformer(params: dict, embedded: Sequence[jax.Array | None], positions: jax.Array, mask: jax.Array, *,
                configs: Sequence[GemmaConfig], dtype, adarms_cond: Sequence[jax.Array | None] | None = None,
                kv_cache: tuple[jax.Array, jax.Array] | None = None, capture: LayerCapture | None = None,
                edit: EdgeEdit | None = None, return_kv: bool = False, remat: bool = False,
                record_residual: bool = False, prob_offsets: jax.Array | None = None, patch=None,
                record_heads: bool = False) -> TransformerOut:
    """Run all layers of the expert mixture (openpi's ``gemma.Module.__call__``).

    Args:
      params: the ``PaliGemma/llm`` subtree.
      embedded: per expert [B, T_i, D_i] or None (expert not run); cast to ``dtype``.
      positions: int [B, T], T = sum of present T_i.
      mask: bool [B, T, S] (S = S_cache + T).
      configs: one GemmaConfig per expert.
      dtype: activation dtype ("bfloat16" / "float32").
      adarms_cond: per expert None or [B, D_i] (adaRMS conditioning).
      kv_cache: (k, v) [L, B, S_cache, K, H] from an earlier call (keys are prefixed to this call's).
      capture: which probabilities to return (None: none).
      edit: knockouts.
      return_kv: also return this call's (k, v) [L, B, S, K, H].
      remat: rematerialise each layer in the backward pass (training).
      record_residual: also return the residual stream (float32) of every present expert.
      prob_offsets: None or float32 [L, B, N, T, S] added to each layer's probabilities after the
        softmax (zeros; for gradients with respect to the attention maps).
      patch: a :class:`flowlens.model.patching.Patch` (one expert present): layer inputs / the
        final output / per-head outputs overwritten with another run's values.
      record_heads: also return every layer's per-head attention outputs (``TransformerOut.heads``).

    Returns:
      a :class:`TransformerOut` ``(outputs, kv, captured, residual)``.
    """
    depth = configs[0].depth
    embedded = [None if e is None else e.astype(dtype) for e in embedded]
    mask = jnp.asarray(mask)[:, None, :, :]
    adarms_cond = list(adarms_cond) if adarms_cond is not None else [None] * len(configs)
    layers_p = params["layers"]
    present = [i for i, e in enumerate(embedded) if e is not None]
    if patch is not None and len(present) != 1:
        raise ValueError("an activation patch needs exactly one expert present (the prefix pass or a step).")

    def body(xs, layer, keep: bool):
        lp = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, layer, 0, keepdims=False), layers_p)
        cache = None
        if kv_cache is not None:
            cache = tuple(jax.lax.dynamic_index_in_dim(c, layer, 0, keepdims=False) for c in kv_cache)
        if patch is not None:
            xs = list(xs)
            xs[present[0]] = patch.apply_residual(xs[present[0]], layer)
        ys = {}
        if record_residual:
            ys["residual"] = [None if x is None else x.astype(jnp.float32) for x in xs]
        off = None if prob_offsets is None else jax.lax.dynamic_index_in_dim(prob_offsets, layer, 0, keepdims=False)
        head_patch = None if patch is None else patch.head_patch(layer)
        xs, kv, probs, *heads = block(lp, xs, positions, mask, adarms_cond, cache, configs, edit, layer, off,
                                      head_patch, record_heads)
        if record_heads:
            ys["heads"] = heads[0]
        if return_kv:
            ys["kv"] = kv
        if keep:
            ys["probs"] = _keep(probs, capture)
        return xs, ys

    if remat:
        body = jax.checkpoint(body, static_argnums=(2,), prevent_cse=False,
                              policy=jax.checkpoint_policies.nothing_saveable)

    # Contiguous runs of kept / not-kept layers, each one lax.scan over layer indices (params are
    # indexed inside the body, so nothing is copied).
    kept = set(capture.layers) if capture is not None else set()
    runs: list[tuple[int, int, bool]] = []
    for layer in range(depth):
        keep = layer in kept
        if runs and runs[-1][2] == keep:
            runs[-1] = (runs[-1][0], layer + 1, keep)
        else:
            runs.append((layer, layer + 1, keep))
    xs = embedded
    kvs, captured, residuals, heads = [], [], [], []
    for lo, hi, keep in runs:
        xs, ys = jax.lax.scan(lambda c, i, keep=keep: body(c, i, keep), xs, jnp.arange(lo, hi))
        if record_heads:
            heads.append(ys["heads"])
        if return_kv:
            kvs.append(ys["kv"])
        if keep:
            captured.append(ys["probs"])
        if record_residual:
            residuals.append(ys["residual"])
    if patch is not None:  # the final pre-norm output is "layer L" of the residual stream
        xs = list(xs)
        xs[present[0]] = patch.apply_residual(xs[present[0]], depth)
    residual = None
    if record_residual:
        residual = [None if x is None else
                    jnp.concatenate([r[i] for r in residuals] + [x.astype(jnp.float32)[None]], axis=0)
                    for i, x in enumerate(xs)]
    outputs = []
    for i, (x, cond) in enumerate(zip(xs, adarms_cond, strict=True)):
        outputs.append(None if x is None else rms_norm(x, params[_name("final_norm", i)], cond)[0])
    kv = None
    if return_kv:
        kv = tuple(jnp.concatenate([r[j] for r in kvs], axis=0) for j in range(2))
    cap = None
    if captured:
        cap = jnp.concatenate(captured, axis=0)
    return TransformerOut(outputs, kv, cap, residual, jnp.concatenate(heads, axis=0) if record_heads else None)
