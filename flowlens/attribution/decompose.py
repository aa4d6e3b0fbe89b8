"""Token-to-token decomposition of one pre-norm attention block: norm-based, ALTI, value zeroing.

One layer of Pi0 / Pi0.5 (``flowlens.model.gemma.block``) maps each query token's residual x_i to

    y_i = x_i + g_i ⊙ Σ_j T_ij,     T_ij = Σ_h α^h_ij · v_j W_O^{h, e(i)},
    v_j = RMSNorm_{e(j)}(x_j) W_V^{e(j)},
    out_i = y_i + g'_i ⊙ MLP_{e(i)}(RMSNorm'_{e(i)}(y_i)),

where e(t) is the expert that runs token t (0: PaliGemma, prefix tokens; 1: the action expert),
α^h the float32 softmax of head h, W_V the (shared) key/value head of head h, W_O the *query*
token's expert output projection, and g, g' the adaRMS gates (Pi0.5's action expert; 1 otherwise).
Because the pre-attention RMSNorm acts on each key token alone, T_ij depends on x_j only: the
attention output is an exact sum of per-key vectors, no linearisation of the norm is needed (the
norm, and the Pi0.5 gate, are part of each vector). The MLP acts per token, so it moves nothing
between tokens: ALTI and the norm-based method stop at y_i (as ALTI does at the attention block);
value zeroing compares the block *output* out_i, MLP included, as Mohebbi et al. do.

- norm-based (Kobayashi et al. 2020): per head α^h_ij ‖v_j W_O^h‖, fused ‖g_i ⊙ T_ij‖₂;
- ALTI (Ferrando et al. 2022): with T'_ij = g_i ⊙ T_ij + [i = j] x_i (the residual is the query's
  own term), c_ij = max(0, ‖y_i‖₁ − ‖y_i − T'_ij‖₁), rows normalised to sum 1;
- value zeroing (Mohebbi et al. 2023): zero v_j (so y_i loses g_i ⊙ T_ij), recompute out_i, and
  score the cosine distance between the zeroed and the real out_i; rows normalised to sum 1.

Everything here is plain JAX on arrays (one layer, one batch element): ``lp`` is one layer's slice
of the ``PaliGemma/llm/layers`` tree. Rows are processed in chunks (``lax.map``) so Pi0's
[rows, keys, width] tensors never exist whole. Shapes: N query heads, K key/value heads, H head
size, R query rows, S keys, D width of the query expert.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flowlens.model.gemma import feed_forward, rms_norm


def _name(base: str, expert: int) -> str:
    return base if expert == 0 else f"{base}_{expert}"


def values(lp: dict, x: jax.Array, expert: int, cond: jax.Array | None) -> jax.Array:
    """Value vectors of tokens run by ``expert``: x float [T, D_e] → float32 [T, K, H]."""
    normed, _ = rms_norm(x[None].astype(jnp.float32), lp[_name("pre_attention_norm", expert)],
                         None if cond is None else cond[None])
    w = lp["attn"][_name("kv_einsum", expert)]["w"][1].astype(jnp.float32)  # [K, D, H]
    return jnp.einsum("TD,KDH->TKH", normed[0], w)


def attention_gate(lp: dict, x: jax.Array, expert: int, cond: jax.Array | None, name: str = "pre_attention_norm"):
    """The adaRMS gate of the branch after norm ``name`` for tokens x [T, D] (float32 [D]), or None."""
    if cond is None:
        return None
    _, gate = rms_norm(x[None].astype(jnp.float32), lp[_name(name, expert)], cond[None])
    return gate[0, 0].astype(jnp.float32)


def head_vectors(lp: dict, v: jax.Array, query_expert: int) -> jax.Array:
    """f^h_j = v_j W_O^h of the query expert: v [S, K, H] → float32 [N, S, D] (head n reads kv head n // G)."""
    w_o = lp["attn"][_name("attn_vec_einsum", query_expert)]["w"].astype(jnp.float32)  # [N, H, D]
    n, k = w_o.shape[0], v.shape[1]
    per_head = jnp.repeat(v, n // k, axis=1)  # [S, N, H], (K G) head order as the model
    return jnp.einsum("SNH,NHD->NSD", per_head, w_o)


def per_head_norms(probs: jax.Array, f: jax.Array) -> jax.Array:
    """Kobayashi per head: α^h_ij ‖f^h_j‖₂ for probs [N, R, S], f [N, S, D] → float32 [N, R, S]."""
    return probs * jnp.linalg.norm(f, axis=-1)[:, None, :]


def _chunks(r: int, chunk: int) -> tuple[int, int]:
    chunk = max(1, min(int(chunk), r))
    return chunk, -(-r // chunk)


def _map_rows(fn, arrays, r: int, chunk: int):
    """``fn`` over chunks of ``chunk`` query rows: ``arrays`` are (array, its row axis) pairs; each chunk
    passes the arrays with the row axis first; outputs are concatenated back to R rows (padding dropped)."""
    chunk, n_chunks = _chunks(r, chunk)
    pad = n_chunks * chunk - r

    def prep(a, axis):
        a = jnp.pad(a, [(0, pad) if i == axis else (0, 0) for i in range(a.ndim)])
        a = jnp.moveaxis(a, axis, 0).reshape((n_chunks, chunk) + tuple(a.shape[i] for i in range(a.ndim) if i != axis))
        return a

    stacked = [prep(a, axis) for a, axis in arrays]
    out = jax.lax.map(lambda xs: fn(*xs), stacked)
    return jax.tree.map(lambda o: o.reshape((n_chunks * chunk,) + o.shape[2:])[:r], out)


@functools.partial(jax.jit, static_argnames=("chunk",))
def contributions(probs: jax.Array, f: jax.Array, x_q: jax.Array, self_cols: jax.Array, gate: jax.Array | None,
                  *, chunk: int = 32) -> dict:
    """Norm-based (fused) and ALTI contributions of every key to every query row of one layer.

    Args:
      probs: float32 [N, R, S] attention of the query rows (0 at masked keys).
      f: float32 [N, S, D] head vectors (``head_vectors``).
      x_q: float32 [R, D] the query rows' residual (layer input).
      self_cols: int [R] key index of each row's own token (its residual term in ALTI).
      gate: float32 [D] adaRMS gate of the attention branch, or None.
      chunk: query rows per chunk.
    Returns:
      ``{"norm": float32 [R, S] ‖g ⊙ T_ij‖₂, "alti": float32 [R, S] rows summing to 1,
      "y": float32 [R, D] the attention block output}``.
    """
    s = f.shape[1]
    g = jnp.ones(f.shape[-1], jnp.float32) if gate is None else gate

    def one(p, x, col):  # p [c, N, S], x [c, D], col [c]
        t = jnp.einsum("cns,nsd->csd", p, f) * g  # [c, S, D]
        y = x + t.sum(axis=1)
        own = (jnp.arange(s)[None, :] == col[:, None])[..., None]  # [c, S, 1]
        t_res = t + jnp.where(own, x[:, None, :], 0.0)
        dist = jnp.abs(y[:, None, :] - t_res).sum(-1)
        c = jnp.maximum(0.0, jnp.abs(y).sum(-1, keepdims=True) - dist)
        c = jnp.where((p.sum(1) > 0) | own[..., 0], c, 0.0)  # unread keys: exactly 0, not rounding
        alti = c / jnp.maximum(c.sum(-1, keepdims=True), 1e-30)
        return {"norm": jnp.linalg.norm(t, axis=-1), "alti": alti, "y": y}

    r = x_q.shape[0]
    return _map_rows(one, [(probs, 1), (x_q, 0), (self_cols, 0)], r, chunk)


@functools.partial(jax.jit, static_argnames=("expert", "chunk"))
def value_zeroing(lp: dict, probs: jax.Array, f: jax.Array, x_q: jax.Array, gate: jax.Array | None,
                  cond: jax.Array | None, *, expert: int, chunk: int = 8) -> jax.Array:
    """Value zeroing of one layer: 1 − cos(out_i with v_j zeroed, out_i), rows normalised.

    Zeroing v_j removes exactly g_i ⊙ T_ij from y_i (the block is linear in the values, the
    attention weights unchanged); each zeroed y is run through the query expert's pre-FFW norm and
    MLP (``jax.vmap`` over the keys of a chunk).

    Args:
      lp: this layer's parameters.
      probs: float32 [N, R, S]; f: float32 [N, S, D]; x_q: float32 [R, D]; gate: [D] or None.
      cond: adaRMS conditioning [Dc] of the query expert, or None.
      expert: the query expert.
      chunk: query rows per chunk.
    Returns:
      float32 [R, S], rows summing to 1 (0 at keys the rows do not attend to).
    """
    g = jnp.ones(f.shape[-1], jnp.float32) if gate is None else gate
    norm_p, mlp_p = lp[_name("pre_ffw_norm", expert)], lp[_name("mlp", expert)]

    def block_out(y):  # y [T, D] → [T, D]
        normed, g2 = rms_norm(y[None], norm_p, None if cond is None else cond[None])
        ff = feed_forward(normed, jax.tree.map(lambda a: a.astype(jnp.float32), mlp_p))[0]
        return y + (ff if g2 is None else ff * g2[0])

    def one(p, x):  # p [c, N, S], x [c, D]
        t = jnp.einsum("cns,nsd->csd", p, f) * g  # [c, S, D]
        y = x + t.sum(axis=1)
        out = block_out(y)  # [c, D]
        zeroed = jax.vmap(block_out, in_axes=1, out_axes=1)(y[:, None, :] - t)  # [c, S, D]
        cos = jnp.sum(zeroed * out[:, None, :], -1) / jnp.maximum(
            jnp.linalg.norm(zeroed, axis=-1) * jnp.linalg.norm(out, axis=-1)[:, None], 1e-30)
        d = jnp.where(p.sum(1) > 0, jnp.maximum(1.0 - cos, 0.0), 0.0)
        return d / jnp.maximum(d.sum(-1, keepdims=True), 1e-30)

    return _map_rows(one, [(probs, 1), (x_q, 0)], x_q.shape[0], chunk)
