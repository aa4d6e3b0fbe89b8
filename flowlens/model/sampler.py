"""Flow-matching sampling (openpi's ``Pi0.sample_actions``) with attention capture as an output.

One *prefix pass* runs images + prompt through the PaliGemma expert and keeps the post-RoPE keys
and values of every prefix position (padding included; the mask excludes it later) as the KV
cache. Then ``num_steps`` Euler steps integrate the flow from noise (t = 1) to actions (t = 0):
``x ← x + dt·v_t(x, t)`` with ``dt = −1/num_steps`` at t = 1.0, 0.9, …, 0.1 (float32 arithmetic,
as openpi's ``while_loop``). Each step embeds the suffix at (x_t, t) and runs only the action
expert: suffix queries attend over ``[prefix cache | suffix]`` keys with the mask
``[prefix valid, repeated | block-causal suffix mask]`` and positions ``sum(prefix valid) +
cumsum(suffix valid) − 1``; the cache is never extended.

With a :class:`CaptureConfig`, the same compiled computation also returns the float32 attention
probabilities (before openpi's bf16 cast) of the requested layers, rows, heads and steps; the
host turns them into a :class:`flowlens.core.capture.Capture` whose TokenLayout is built from
the real inputs. Knockouts (:mod:`flowlens.model.knockout`) edit the masks of the same calls.

This module imports ``pi0`` (never the reverse): ``sample_actions(model, params, obs, ...)`` is
the sampling entry point (also ``flowlens.model.sample_actions``), and the sampler keeps its own
compiled functions (``jax.jit`` keyed by the model object and the static capture plan).
"""

from __future__ import annotations

import dataclasses

import einops
import jax
import jax.numpy as jnp
import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.errors import FlowlensError
from flowlens.model import gemma
from flowlens.model.capture_config import CaptureConfig
from flowlens.model.knockout import Knockout, edit_for, resolve_plan
from flowlens.model.observation import Observation
from flowlens.model.patching import RunRecord, SamplerPatch
from flowlens.model.pi0 import Pi0Model, linear, make_attn_mask


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static (hashable) description of what one compiled sampler returns."""

    num_steps: int
    prefix: gemma.LayerCapture | None
    suffix: gemma.LayerCapture | None
    slots: tuple[int, ...]  # per step: index into the captured-steps buffer, or -1
    norms_of: int | None  # batch element whose image-token norms are returned
    residual_of: int | None = None  # batch element whose residual stream is returned
    record_run: bool = False  # return the RunRecord (every batch element) an activation patch reads


def sample_core(params, arrays, noise, pre_edit, suf_edit, offsets=None, suf_steps=None, patch=None, *,
                model: Pi0Model, plan: _Plan):
    """The traceable sampler (``_sample_impl`` is its jit). ``offsets`` (None: the plain computation)
    is a dict of zero arrays the gradient code differentiates against: "embed" [B, P, D0] added to
    the prefix embeddings, "prefix" [L, B, N, P, P] / "steps" [num_steps, L, B, N, T_s, P + T_s]
    added to the attention probabilities; with offsets the output also holds "velocities"
    [num_steps, B, H_a, action_dim] and "prefix_embeddings" [B, P, D0]. ``suf_steps`` (bool
    [num_steps, M]) activates step-selected knockouts per step; ``patch`` is a SamplerPatch."""
    cfg = model.config
    llm = params["PaliGemma"]["llm"]
    images, image_masks, state, tokens, token_mask = arrays
    b = state.shape[0]
    pre, pre_mask, pre_ar, image_tokens = model.embed_prefix(params, images, image_masks, tokens, token_mask)
    offsets = offsets or {}
    pre_embeddings = pre
    if "embed" in offsets:
        pre = pre + offsets["embed"].astype(pre.dtype)
    pre_attn = make_attn_mask(pre_mask, pre_ar)
    positions = jnp.cumsum(pre_mask, axis=1) - 1
    rec = plan.residual_of
    pre_out = gemma.transformer(llm, [pre, None], positions, pre_attn, configs=model.experts, dtype=model.dtype,
                                capture=plan.prefix, edit=pre_edit, return_kv=True,
                                record_residual=rec is not None or plan.record_run,
                                prob_offsets=offsets.get("prefix"), patch=None if patch is None else patch.prefix,
                                record_heads=plan.record_run)
    kv_cache, pre_cap = pre_out.kv, pre_out.captured
    dt = -1.0 / plan.num_steps
    suffix_positions_base = jnp.sum(pre_mask, axis=-1)[:, None]
    n_slots = sum(s >= 0 for s in plan.slots)
    in_order = plan.slots == tuple(range(plan.num_steps))
    slots = jnp.asarray(plan.slots, jnp.int32)

    def step(carry, i):
        x_t, time, buf = carry
        suf, suf_mask, suf_ar, cond = model.embed_suffix(params, state, x_t, jnp.broadcast_to(time, (b,)))
        suf_attn = make_attn_mask(suf_mask, suf_ar)
        pre_part = einops.repeat(pre_mask, "b p -> b s p", s=suf.shape[1])
        full_mask = jnp.concatenate([pre_part, suf_attn], axis=-1)
        pos = suffix_positions_base + jnp.cumsum(suf_mask, axis=-1) - 1
        step_off = None
        if "steps" in offsets:
            step_off = jax.lax.dynamic_index_in_dim(offsets["steps"], i, 0, keepdims=False)
        edit = suf_edit
        if suf_steps is not None:  # step-selected knockouts: only those of step i are active
            edit = dataclasses.replace(edit, layer_heads=edit.layer_heads & suf_steps[i][:, None, None])
        step_patch = None if patch is None or patch.steps is None else patch.steps.at_step(i)
        suf_out = gemma.transformer(llm, [None, suf], pos, full_mask, configs=model.experts, dtype=model.dtype,
                                    adarms_cond=[None, cond], kv_cache=kv_cache, capture=plan.suffix,
                                    edit=edit, record_residual=rec is not None or plan.record_run,
                                    prob_offsets=step_off, patch=step_patch, record_heads=plan.record_run)
        out, cap = suf_out.outputs[1], suf_out.captured
        v_t = linear(params["action_out_proj"], out[:, -cfg.action_horizon:])
        ys = {"time": time}
        if rec is not None:
            ys["residual"] = suf_out.residual[1][:, rec]
        if plan.record_run:
            ys["run_residual"], ys["run_heads"] = suf_out.residual[1], suf_out.heads
        if offsets:
            ys["velocity"] = v_t
        if cap is not None and in_order:
            ys["probs"] = cap
        elif cap is not None:
            slot = slots[i]
            buf = jax.lax.cond(slot >= 0, lambda bb: jax.lax.dynamic_update_index_in_dim(bb, cap, slot, 0),
                               lambda bb: bb, buf)
        return (x_t + (dt * v_t).astype(x_t.dtype), time + dt, buf), ys

    buf = None
    if plan.suffix is not None and not in_order:
        n_keys = pre.shape[1] + cfg.suffix_len
        heads = cfg.num_heads if plan.suffix.head_reduction is None else 1
        buf = jnp.zeros((n_slots, len(plan.suffix.layers), heads, len(plan.suffix.rows), n_keys), jnp.float32)
    time0 = jnp.asarray(1.0, jnp.float32)
    (x0, _, buf), ys = jax.lax.scan(step, (noise, time0, buf), jnp.arange(plan.num_steps))
    out = {"actions": x0, "times": ys["time"], "prefix": pre_cap,
           "steps": ys.get("probs", buf)}
    if rec is not None:
        out["prefix_residual"] = pre_out.residual[0][:, rec]
        out["step_residual"] = ys["residual"]
    if plan.record_run:
        out["record"] = RunRecord(pre_out.residual[0], pre_out.heads, ys["run_residual"], ys["run_heads"])
    if offsets:
        out.update(velocities=ys["velocity"], prefix_embeddings=pre_embeddings)
    if plan.norms_of is not None:
        out["image_norms"] = jnp.stack([
            jnp.sqrt(jnp.sum(jnp.square(t[plan.norms_of].astype(jnp.float32)), -1)) for t in image_tokens])
    return out


# Compiled once per (model object, plan) and edit structure: jax.jit's own cache, held here.
_sample_impl = jax.jit(sample_core, static_argnames=("model", "plan"))


def sample_actions(model: Pi0Model, params: dict, obs: Observation, *, num_steps: int | None = None,
                   noise: jax.Array | np.ndarray | None = None, rng: jax.Array | None = None,
                   capture: CaptureConfig | None = None, knockouts=None,
                   empty_rows: str = "keep_self") -> tuple[np.ndarray, Capture | None]:
    """Sample an action chunk, optionally recording attention and/or knocking out edges (see :func:`_sample`)."""
    actions, cap, _ = _sample(model, params, obs, num_steps=num_steps, noise=noise, rng=rng, capture=capture,
                              knockouts=knockouts, empty_rows=empty_rows)
    return actions, cap


def sample_patched(model: Pi0Model, params: dict, obs: Observation, *, noise, num_steps: int | None = None,
                   patch: SamplerPatch | None = None, record: bool = False, knockouts=None,
                   empty_rows: str = "keep_self") -> tuple[np.ndarray, RunRecord | None]:
    """Sample with activation patches (:mod:`flowlens.model.patching`) and/or record what patches read.

    Args:
      model, params, obs, noise, num_steps, knockouts, empty_rows: as :func:`sample_actions`.
      patch: a SamplerPatch (its arrays' B must be the batch size; T the prefix / suffix length).
      record: also return the RunRecord of every batch element (residual stream and per-head
        attention outputs of the prefix pass and every step), the source of a patch.

    Returns:
      (actions float32 [B, H_a, action_dim], RunRecord of numpy arrays or None).
    """
    actions, _, rec = _sample(model, params, obs, num_steps=num_steps, noise=noise, capture=None,
                              knockouts=knockouts, empty_rows=empty_rows, patch=patch, record=record)
    return actions, rec


def _sample(model: Pi0Model, params: dict, obs: Observation, *, num_steps: int | None = None,
            noise: jax.Array | np.ndarray | None = None, rng: jax.Array | None = None,
            capture: CaptureConfig | None = None, knockouts=None, empty_rows: str = "keep_self",
            patch: SamplerPatch | None = None, record: bool = False):
    """Sample an action chunk, optionally recording attention and/or knocking out edges.

    Args:
      model: the policy.
      params: its parameters (openpi tree).
      obs: batched inputs (B elements).
      num_steps: Euler steps (default ``config.num_steps`` = 10).
      noise: float32 [B, H_a, action_dim] initial noise; drawn from ``rng`` when None.
      rng: PRNG key for the noise.
      capture: what to record (None: nothing; the computation is then openpi's exactly).
      knockouts: a Knockout or a sequence of them (None or []: no edit).
      empty_rows: "keep_self" or "raise" for rows whose keys are all knocked out.

    Returns:
      ``(actions float32 [B, H_a, action_dim] (numpy), Capture of batch element
      capture.batch_index or None, RunRecord or None)``. The Capture holds the layout, the prefix pass (rows in the
      prefix, ``prefix_len`` keys), one suffix pass per recorded step (``n`` keys) with its time,
      the actions of that element, and metadata (dtype, num_steps, knockouts, image token norms).

    Raises:
      FlowlensError: bad shapes, no noise and no rng, capture / knockout selections out of range.
    """
    cfg = model.config
    model.check(obs)
    b = obs.batch_size
    num_steps = cfg.num_steps if num_steps is None else int(num_steps)
    if num_steps <= 0:
        raise FlowlensError(f"num_steps must be a positive int, got {num_steps}.")
    shape = (b, cfg.action_horizon, cfg.action_dim)
    if noise is None:
        if rng is None:
            raise FlowlensError("sample_actions needs noise=[B, H_a, action_dim] or rng=jax.random.key(...).")
        noise = jax.random.normal(rng, shape)
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != shape:
        raise FlowlensError(
            f"noise must be [B, action_horizon, action_dim] = {shape}, got {tuple(noise.shape)}.")
    bi = capture.batch_index if capture is not None else 0
    if capture is not None and bi >= b:
        raise FlowlensError(f"CaptureConfig.batch_index {bi} out of range: the batch has {b} elements.")
    layout = model.layout(obs, bi) if (capture is not None or knockouts) else None
    pre_cap = suf_cap = None
    slots = tuple([-1] * num_steps)
    pre_rows = suf_rows = np.zeros(0, np.int64)
    if capture is not None:
        layers = capture.resolve_layers(cfg.num_layers)
        rows = capture.resolve_rows(layout)
        p = layout.prefix_len
        pre_rows, suf_rows = rows[rows < p], rows[rows >= p]
        if capture.prefix and pre_rows.size:
            pre_cap = gemma.LayerCapture(layers, tuple(int(r) for r in pre_rows), bi, capture.heads)
        steps = capture.resolve_steps(num_steps)
        if steps and suf_rows.size:
            suf_cap = gemma.LayerCapture(layers, tuple(int(r) - p for r in suf_rows), bi, capture.heads)
            slot_of = {s: j for j, s in enumerate(steps)}
            slots = tuple(slot_of.get(s, -1) for s in range(num_steps))
    kplan = resolve_plan(cfg, knockouts, layout, empty_rows)
    p_len = cfg.prefix_len if layout is None else layout.prefix_len
    on_prefix = on_steps = suf_steps = None
    if kplan is not None and kplan.timed:
        on_prefix, on_steps = kplan.passes(num_steps)
        suf_steps = jnp.asarray(on_steps)
    pre_edit = edit_for(kplan, 0, p_len, p_len, on_prefix)
    suf_edit = edit_for(kplan, p_len, p_len + cfg.suffix_len, p_len + cfg.suffix_len,
                        None if on_steps is None else on_steps.any(0))
    if suf_edit is None:
        suf_steps = None
    norms_of = bi if (capture is not None and capture.image_norms) else None
    residual_of = bi if (capture is not None and capture.residual) else None
    if residual_of is not None and suf_cap is not None and pre_cap is None:
        raise FlowlensError(
            "CaptureConfig(residual=True) records denoising steps but not the prefix pass, whose residual "
            "stream the steps' keys come from: record the prefix too (prefix=True and query rows with prefix "
            "tokens, e.g. query_rows='all').")
    plan = _Plan(num_steps, pre_cap, suf_cap, slots, norms_of, residual_of, record)
    out = _sample_impl(params, model.obs_arrays(obs), noise, pre_edit, suf_edit, suf_steps=suf_steps, patch=patch,
                       model=model, plan=plan)
    actions = np.asarray(out["actions"])
    run = jax.tree.map(np.asarray, out["record"]) if record else None
    if capture is None:
        return actions, None, run

    times = np.asarray(out["times"])
    passes = []
    if pre_cap is not None:
        passes.append(AttentionPass(PassKind.PREFIX, np.asarray(out["prefix"]), pre_cap.layers, pre_rows,
                                    head_reduction=capture.heads,
                                    residual=None if residual_of is None else np.asarray(out["prefix_residual"])))
    if suf_cap is not None:
        probs = np.asarray(out["steps"])
        step_residual = None if residual_of is None else np.asarray(out["step_residual"])
        for s in range(num_steps):
            if slots[s] >= 0:
                passes.append(AttentionPass(PassKind.SUFFIX, probs[slots[s]], suf_cap.layers, suf_rows,
                                            step=s, time=float(times[s]), head_reduction=capture.heads,
                                            residual=None if step_residual is None else step_residual[s]))
    meta = {"batch_index": bi, "dtype": cfg.dtype, "num_steps": num_steps, "times": [float(t) for t in times]}
    if norms_of is not None:
        norms = np.asarray(out["image_norms"])
        meta["image_token_norms"] = {c: norms[j].tolist() for j, c in enumerate(obs.cameras)}
    if kplan is not None:
        meta.update(knockouts=list(kplan.description), knockout_emptied_rows=kplan.emptied_rows)
    return actions, Capture(layout=layout, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                            passes=tuple(passes), actions=actions[bi], model=cfg.name, metadata=meta), run


def sample_with_knockouts(model: Pi0Model, params: dict, obs: Observation, knockouts, **kwargs):
    """``sample_actions(model, params, obs, knockouts=knockouts, **kwargs)``: the actions and capture
    of the edited model (knockouts: a Knockout or a sequence of them, see :mod:`flowlens.model.knockout`)."""
    return sample_actions(model, params, obs, knockouts=knockouts, **kwargs)
