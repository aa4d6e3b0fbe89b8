"""A Capture with the residual stream → a Capture of token-to-token *contributions* per layer.

``contribution_capture(model, params, capture, kind)`` returns a copy of ``capture`` whose every
pass holds, instead of attention probabilities, one row-stochastic matrix per layer
``[layer, 1, rows, keys]`` (``head_reduction="mean"``: one fused "head") of the chosen
decomposition (:mod:`flowlens.attribution.decompose`): "norm" (Kobayashi fused norms, rows
normalised), "norm_heads" (Kobayashi per head, every head kept), "alti" or "value_zeroing". Every graph analysis then runs on it unchanged —
rollout over ALTI is ALTI's own aggregation, attention flow over ALTI is the flow variant.

Pi0's mixture of experts, per pass:

- prefix pass: queries and keys are prefix tokens, PaliGemma weights (``q/kv/attn_vec_einsum``);
- denoising step s: suffix queries (action expert, ``..._1`` weights, its output projection)
  read the prefix tokens' values — PaliGemma's value head on the *prefix pass* residual, i.e. the
  KV cache — and the suffix tokens' own values (the action expert's value head on the step's
  residual). For Pi0.5 the adaRMS conditioning is recomputed from the step's flow time, and its
  gate scales the attention branch (and, for value zeroing, the MLP branch).

What it needs from the run: every head of every layer (``CaptureConfig(heads=None)``), all valid
query rows, and the residual stream (``CaptureConfig(residual=True)``); missing pieces raise a
FlowlensError that names the fix.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from flowlens.attribution import decompose
from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.errors import FlowlensError, unknown_name_error

KINDS = ("norm", "norm_heads", "alti", "value_zeroing")
CAPTURE_FIX = ("capture with flowlens.model.CaptureConfig(residual=True, heads=None, query_rows='valid') "
               "(the CLI does this for --method alti / norm / value_zeroing)")


def check_capture(capture: Capture, what: str) -> None:
    """Raise FlowlensError when ``capture`` lacks the residual stream, the prefix pass or every head."""
    if capture.prefix is None:
        raise FlowlensError(f"{what} needs the prefix pass (its values feed every step); got a capture without "
                            f"it. Fix: {CAPTURE_FIX}.")
    for p in capture.passes:
        where = p.kind.value if p.step is None else f"step {p.step}"
        if p.residual is None:
            raise FlowlensError(f"{what} needs the residual stream, but the {where} pass has none "
                                f"(AttentionPass.residual is None). Fix: {CAPTURE_FIX}.")
        if p.head_reduction is not None:
            raise FlowlensError(f"{what} needs every attention head, but the {where} pass kept only their "
                                f"{p.head_reduction}. Fix: {CAPTURE_FIX}.")
        if p.kind == PassKind.FULL:
            raise FlowlensError(f"{what} reads sample_actions captures (prefix + steps), got a full pass.")


def _adarms_cond(model, params, time: float | None):
    """The Pi0.5 action expert's adaRMS conditioning [Dc] at flow time ``time`` (None for Pi0)."""
    if not model.config.pi05:
        return None
    cfg = model.config
    _, _, _, cond = model.embed_suffix(params, jnp.zeros((1, cfg.action_dim), jnp.float32),
                                       jnp.zeros((1, cfg.action_horizon, cfg.action_dim), jnp.float32),
                                       jnp.full((1,), time, jnp.float32))
    return cond[0].astype(jnp.float32)


def _layer(params, layer: int) -> dict:
    return jax.tree.map(lambda a: a[layer], params["PaliGemma"]["llm"]["layers"])


_values = jax.jit(decompose.values, static_argnums=(2,))


@functools.partial(jax.jit, static_argnames=("kind", "q_expert", "chunk"))
def _layer_matrix(lp, v, x_own, local_rows, rows, probs, cond, *, kind: str, q_expert: int, chunk: int):
    """One layer's [rows, keys] matrix of ``kind`` from the keys' values v [S, K, H] (compiled)."""
    f = decompose.head_vectors(lp, v, q_expert)
    gate = decompose.attention_gate(lp, x_own, q_expert, cond)
    x_q = x_own[local_rows]
    if kind == "norm_heads":  # Kobayashi per head: α^h_ij ‖f^h_j‖ (gate included), each head's rows normalised
        g = 1.0 if gate is None else gate
        per_head = decompose.per_head_norms(probs, f * g)
        return per_head / jnp.maximum(per_head.sum(-1, keepdims=True), 1e-30)
    if kind == "value_zeroing":
        return decompose.value_zeroing(lp, probs, f, x_q, gate, cond, expert=q_expert, chunk=max(1, chunk // 4))
    c = decompose.contributions(probs, f, x_q, rows, gate, chunk=chunk)
    return c["alti"] if kind == "alti" else c["norm"] / jnp.maximum(c["norm"].sum(-1, keepdims=True), 1e-30)


def pass_contributions(model, params, prefix: AttentionPass, p: AttentionPass, kind: str, *,
                       chunk: int = 32, cache: dict | None = None) -> np.ndarray:
    """float32 [layer, 1, rows, keys] (``norm_heads``: [layer, head, rows, keys]) contributions of pass ``p`` (``prefix`` supplies the cached values).

    ``cache`` (optional, a dict owned by the caller) keeps each layer's parameters and the prefix
    tokens' values across the passes of one capture.
    """
    cache = {} if cache is None else cache
    suffix = p.kind == PassKind.SUFFIX
    n_pre = prefix.residual.shape[1]
    cond = _adarms_cond(model, params, p.time) if suffix else None
    q_expert = 1 if suffix else 0
    rows = jnp.asarray(p.query_rows)
    local_rows = rows - (n_pre if suffix else 0)
    out = []
    for li, layer in enumerate(p.layers):
        if layer not in cache:
            lp = _layer(params, layer)
            cache[layer] = (lp, _values(lp, jnp.asarray(prefix.residual[layer]), 0, None))
        lp, v = cache[layer]
        x_own = jnp.asarray(p.residual[layer])
        if suffix:
            v = jnp.concatenate([v, _values(lp, x_own, 1, cond)], axis=0)
        m = _layer_matrix(lp, v, x_own, local_rows, rows, jnp.asarray(p.probs[li]), cond, kind=kind,
                          q_expert=q_expert, chunk=chunk)
        out.append(np.asarray(m, np.float32))
    out = np.stack(out)
    return out if kind == "norm_heads" else out[:, None]


def contribution_capture(model, params, capture: Capture, kind: str, *, chunk: int = 32) -> Capture:
    """``capture`` with each pass's probabilities replaced by ``kind`` contributions (see module doc).

    Args:
      model: the ``Pi0Model`` that made the capture; params: its parameters.
      capture: from ``sample_actions(..., capture=CaptureConfig(residual=True, heads=None))``.
      kind: "norm", "norm_heads" (Kobayashi per head, every head kept: the graph analyses' ``heads``
        argument then picks heads), "alti" or "value_zeroing".
      chunk: query rows per chunk (memory: chunk · keys · width floats).
    Returns:
      Capture with passes of probs float32 [layer, 1, rows, keys], head_reduction "mean" (norm_heads:
      [layer, head, rows, keys], head_reduction None), no residual.
    Raises:
      FlowlensError: unknown kind, or a capture without residual / prefix / every head.
    """
    if kind not in KINDS:
        raise unknown_name_error("kind", kind, KINDS)
    check_capture(capture, f"the {kind} attribution")
    prefix = capture.prefix
    cache: dict = {}
    passes = tuple(
        dataclasses.replace(p, probs=pass_contributions(model, params, prefix, p, kind, chunk=chunk, cache=cache),
                            head_reduction=None if kind == "norm_heads" else "mean", residual=None)
        for p in capture.passes)
    meta = {**capture.metadata, "contributions": kind}
    return dataclasses.replace(capture, passes=passes, metadata=meta)
