"""Gradients of a scalar action target through the real sampler, with ``jax.vjp``.

A :class:`ActionTarget` is a linear read-out of one batch element's output,
``y = Σ_h Σ_j c_j · out[h, dims[j]]`` over chosen action steps ``h``: the sampled chunk (the
model's normalised action space) or, with ``step=s``, the flow-matching velocity v_t predicted at
denoising step ``s``. One action dimension of one action step, a heading (the first k actions'
plane displacement projected on a direction) and a velocity component are all of this form.

The sampler (:func:`flowlens.model.sampler.sample_core`) takes zero *offsets*: arrays added to the
attention probabilities after each softmax (every layer of the prefix pass and of every denoising
step) or to the prefix embeddings. The derivative of ``y`` with respect to an offset at zero is
the derivative with respect to that quantity; one reverse pass gives all of them.

* :func:`attention_gradients` → :class:`flowlens.core.gradients.AttentionGradients` (the Capture
  of every pass, all heads, and ∂y/∂A per pass): input of Chefer's relevancy.
* :func:`path_gradients` → :class:`flowlens.core.gradients.PathGradients` (∂y/∂x on the straight
  path from a baseline to the image-patch and prompt embeddings, the path points batched):
  input of Integrated Gradients.

Memory. The offsets and their gradients hold float32 ``L·N·P²`` for the prefix pass and
``S·L·N·T_s·(P+T_s)`` for the steps: at Pi0 LIBERO scale (L 18, N 8, P 816, T_s 51, S 10)
383 + 255 MB each, and the returned probabilities as much again; the reverse pass keeps every
layer's activations of the prefix pass and of all steps. XLA's own estimate for full-size Pi0 in
bfloat16 (``benchmarks/bench_faithfulness.py --pi0-memory``, compiled on abstract shapes for the
CPU): a plain ``sample_actions`` needs 6.0 GiB of weights and 10.2 GiB of temporaries,
``attention_gradients`` 6.6 GiB of arguments (weights + offsets), 20.5 GiB of temporaries and
1.2 GiB of outputs — about twice the plain working set. ``path_gradients`` costs the same per
path point without the attention offsets, ``batch`` points at a time.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.gradients import AttentionGradients, PathGradients
from flowlens.errors import FlowlensError
from flowlens.model import gemma
from flowlens.model.observation import Observation
from flowlens.model.pi0 import Pi0Model
from flowlens.model.sampler import _Plan, sample_core


@dataclasses.dataclass(frozen=True)
class ActionTarget:
    """A scalar read-out ``y = Σ_{h ∈ horizon} Σ_j coefficients[j] · out[h, dims[j]]``.

    Attributes:
      horizon: action steps summed (None: all of the chunk).
      dims: action dimensions read.
      coefficients: one weight per entry of ``dims`` (None: all 1).
      step: None reads the sampled chunk; an int reads the velocity v_t of that denoising step.
    """

    horizon: tuple[int, ...] | None = (0,)
    dims: tuple[int, ...] = (0,)
    coefficients: tuple[float, ...] | None = None
    step: int | None = None

    @classmethod
    def heading(cls, direction, k: int = 5, *, step: int | None = None) -> ActionTarget:
        """The first ``k`` actions' plane displacement (dims 0, 1) projected on ``direction`` [2]."""
        d = np.asarray(direction, dtype=np.float64).reshape(-1)
        if d.size != 2 or not np.all(np.isfinite(d)):
            raise FlowlensError(f"direction must be 2 finite numbers (dx, dy), got {direction!r}.")
        return cls(horizon=tuple(range(int(k))), dims=(0, 1), coefficients=(float(d[0]), float(d[1])), step=step)

    def describe(self) -> str:
        coef = self.coefficients or (1.0,) * len(self.dims)
        terms = " + ".join(f"{c:.3g}·a[:, {d}]" for c, d in zip(coef, self.dims, strict=True))
        rows = "all actions" if self.horizon is None else f"actions {list(self.horizon)}"
        what = "chunk" if self.step is None else f"velocity at step {self.step}"
        return f"Σ over {rows} of ({terms}) of the {what}"

    def weights(self, horizon: int, action_dim: int, num_steps: int) -> np.ndarray:
        """float32 [horizon, action_dim] read-out weights; FlowlensError for out-of-range entries."""
        rows = range(horizon) if self.horizon is None else self.horizon
        coef = self.coefficients if self.coefficients is not None else (1.0,) * len(self.dims)
        if len(coef) != len(self.dims):
            raise FlowlensError(
                f"ActionTarget.coefficients has {len(coef)} entries but dims has {len(self.dims)}; give one per dim.")
        bad_h = [h for h in rows if not 0 <= h < horizon]
        bad_d = [d for d in self.dims if not 0 <= d < action_dim]
        if bad_h or bad_d or not len(rows):
            raise FlowlensError(
                f"ActionTarget reads actions {list(rows)} and dims {list(self.dims)}, but the chunk is "
                f"[{horizon}, {action_dim}]; pick actions 0–{horizon - 1} and dims 0–{action_dim - 1}.")
        if self.step is not None and not 0 <= self.step < num_steps:
            raise FlowlensError(f"ActionTarget.step {self.step} out of range: the sampler runs {num_steps} steps.")
        w = np.zeros((horizon, action_dim), np.float32)
        for d, c in zip(self.dims, coef, strict=True):
            w[list(rows), d] += c
        return w


def _value_and_grads(params, arrays, noise, weights, offsets, *, model, plan, step):
    """Σ_b y_b and its gradient with respect to ``offsets``; y [B] and the sampler's outputs too."""
    def f(off):
        out = sample_core(params, arrays, noise, None, None, off, model=model, plan=plan)
        y = out["actions"] if step is None else out["velocities"][step]
        per = jnp.sum(y * weights[None], axis=(1, 2))
        return jnp.sum(per), (per, out)

    (_, (per, out)), grads = jax.value_and_grad(f, has_aux=True)(offsets)
    return per, grads, out


_value_and_grads_jit = jax.jit(_value_and_grads, static_argnames=("model", "plan", "step"))


def _element(model: Pi0Model, obs: Observation, noise, batch_index: int, num_steps: int | None):
    cfg = model.config
    model.check(obs)
    if not 0 <= batch_index < obs.batch_size:
        raise FlowlensError(f"batch_index {batch_index} out of range: the batch has {obs.batch_size} elements.")
    shape = (obs.batch_size, cfg.action_horizon, cfg.action_dim)
    noise = np.asarray(noise, np.float32)
    if noise.shape != shape:
        raise FlowlensError(f"noise must be [B, action_horizon, action_dim] = {shape}, got {noise.shape}.")
    num_steps = cfg.num_steps if num_steps is None else int(num_steps)
    if num_steps <= 0:
        raise FlowlensError(f"num_steps must be a positive int, got {num_steps}.")
    arrays = jax.tree.map(lambda a: a[batch_index:batch_index + 1], model.obs_arrays(obs))
    return arrays, jnp.asarray(noise[batch_index:batch_index + 1]), num_steps


def attention_gradients(model: Pi0Model, params: dict, obs: Observation, target: ActionTarget, *, noise,
                        num_steps: int | None = None, batch_index: int = 0) -> AttentionGradients:
    """∂target/∂A for every attention map (all layers and heads, the prefix pass and every step).

    Args:
      model, params: the policy.
      obs: inputs; batch element ``batch_index`` is explained.
      target: the scalar read-out.
      noise: float32 [B, H_a, action_dim] initial noise (as ``sample_actions``).
      num_steps: Euler steps (default the config's).

    Returns:
      AttentionGradients: a Capture with the prefix pass ([L, N, P, P]) and one suffix pass per
      step ([L, N, T_s, P + T_s]), every row and head, and the matching float32 gradients.
    """
    cfg = model.config
    arrays, noise, num_steps = _element(model, obs, noise, batch_index, num_steps)
    weights = jnp.asarray(target.weights(cfg.action_horizon, cfg.action_dim, num_steps))
    layout = model.layout(obs, batch_index)
    p, t_s, n = layout.prefix_len, cfg.suffix_len, layout.n
    L, N = cfg.num_layers, cfg.num_heads
    layers = tuple(range(L))
    plan = _Plan(num_steps, gemma.LayerCapture(layers, tuple(range(p)), 0, None),
                 gemma.LayerCapture(layers, tuple(range(t_s)), 0, None), tuple(range(num_steps)), None)
    offsets = {"prefix": jnp.zeros((L, 1, N, p, p), jnp.float32),
               "steps": jnp.zeros((num_steps, L, 1, N, t_s, n), jnp.float32)}
    per, grads, out = _value_and_grads_jit(params, arrays, noise, weights, offsets, model=model, plan=plan,
                                           step=target.step)
    times = np.asarray(out["times"])
    g_pre, g_steps = np.asarray(grads["prefix"][:, 0]), np.asarray(grads["steps"][:, :, 0])
    passes = [AttentionPass(PassKind.PREFIX, np.asarray(out["prefix"]), layers, np.arange(p))]
    steps_probs = np.asarray(out["steps"])
    passes += [AttentionPass(PassKind.SUFFIX, steps_probs[s], layers, np.arange(p, n), step=s, time=float(times[s]))
               for s in range(num_steps)]
    actions = np.asarray(out["actions"])[0]
    capture = Capture(layout=layout, num_layers=L, num_heads=N, passes=tuple(passes), actions=actions,
                      model=cfg.name, metadata={"batch_index": batch_index, "dtype": cfg.dtype,
                                                "num_steps": num_steps, "times": times.tolist(),
                                                "target": target.describe()})
    return AttentionGradients(capture, (g_pre,) + tuple(g_steps), target=float(per[0]),
                              target_name=target.describe())


@functools.partial(jax.jit, static_argnames=("model",))
def _prefix_embeddings(params, arrays, *, model: Pi0Model):
    return model.embed_prefix(params, *arrays[:2], *arrays[3:])[0]


def path_gradients(model: Pi0Model, params: dict, obs: Observation, target: ActionTarget, *, noise,
                   steps: int = 32, baseline: str | np.ndarray = "mean", num_steps: int | None = None,
                   batch_index: int = 0, batch: int = 16, refine: int = 0) -> PathGradients:
    """∂target/∂x at ``x' + α (x − x')`` for ``α = 0, 1/steps, …, 1`` (x: the prefix embeddings).

    The path points run as batch elements of the sampler (``batch`` at a time), each with the same
    noise, so the per-element target's gradient is the gradient at that point. A policy that
    switches between objects along the path has a sharp step in F there; ``refine`` extra points
    go into the intervals of the uniform grid where F changes most (in proportion to |ΔF|), so the
    quadrature follows the step at a fraction of the cost of a finer uniform grid.

    Args:
      steps: intervals of the path (``steps + 1`` points, both ends included).
      baseline: "mean" (default: every token's x' = the mean over the valid prefix
        tokens), "zeros" (x' = 0: on RMSNorm's singularity, see flowlens.attribution.integrated_gradients)
        or float [P, D0] embeddings.
      batch: path points per sampler call (memory: ``batch`` × one inference with gradients).
      refine: extra path points placed where F changes most (0: the uniform grid only).

    Returns:
      PathGradients with inputs / baseline [P, D0], alphas [steps + 1], gradients [steps + 1, P, D0]
      and the target's values at the path points.
    """
    cfg = model.config
    if int(steps) < 1 or int(batch) < 1:
        raise FlowlensError(f"steps and batch must be positive ints, got steps={steps}, batch={batch}.")
    arrays, noise, num_steps = _element(model, obs, noise, batch_index, num_steps)
    weights = jnp.asarray(target.weights(cfg.action_horizon, cfg.action_dim, num_steps))
    layout = model.layout(obs, batch_index)
    x = np.asarray(_prefix_embeddings(params, arrays, model=model))[0].astype(np.float32)
    if isinstance(baseline, str):
        if baseline == "zeros":
            base = np.zeros_like(x)
        elif baseline == "mean":
            base = np.broadcast_to(x[layout.valid[: layout.prefix_len]].mean(0), x.shape).copy()
        else:
            raise FlowlensError(f"baseline={baseline!r} is not known; expected 'zeros', 'mean' or a [P, D0] array.")
    else:
        base = np.asarray(baseline, np.float32)
        if base.shape != x.shape:
            raise FlowlensError(f"baseline must be [P, D0] = {x.shape} embeddings, got shape {base.shape}.")
    plan = _Plan(num_steps, None, None, tuple([-1] * num_steps), None)

    def run(alphas: np.ndarray):
        values, grads = [], []
        for lo in range(0, alphas.size, batch):
            a = alphas[lo:lo + batch]
            m = int(batch) if alphas.size > batch else a.size  # pad to one shape: one compile
            a_pad = np.concatenate([a, np.repeat(a[-1:], m - a.size)])
            tiled = jax.tree.map(lambda arr: jnp.repeat(arr, m, axis=0), arrays)
            off = ((a_pad[:, None, None] - 1.0) * (x - base)[None]).astype(np.float32)  # x + off = x' + α(x − x')
            per, g, _ = _value_and_grads_jit(params, tiled, jnp.repeat(noise, m, axis=0), weights,
                                             {"embed": jnp.asarray(off)}, model=model, plan=plan, step=target.step)
            values.append(np.asarray(per, np.float64)[:a.size])
            grads.append(np.asarray(g["embed"])[:a.size])
        return np.concatenate(values), np.concatenate(grads)

    alphas = np.linspace(0.0, 1.0, int(steps) + 1)
    values, grads = run(alphas)
    if int(refine) > 0:
        extra = refined_alphas(alphas, values, int(refine))
        v2, g2 = run(extra)
        order = np.argsort(np.concatenate([alphas, extra]), kind="stable")
        alphas, values = np.concatenate([alphas, extra])[order], np.concatenate([values, v2])[order]
        grads = np.concatenate([grads, g2])[order]
    return PathGradients(layout=layout, inputs=x, baseline=base, alphas=alphas, gradients=grads, values=values,
                         target_name=target.describe())


def refined_alphas(alphas: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """``count`` new path points inside the intervals of ``alphas``, in proportion to |ΔF| there
    (largest remainders first), spread evenly within each interval; e.g. alphas (0, .5, 1) with
    values (0, 0, 1) and 3 points give (.625, .75, .875).
    """
    jumps = np.abs(np.diff(values))
    share = jumps / jumps.sum() * count if jumps.sum() > 0 else np.full(jumps.size, count / jumps.size)
    per = np.floor(share).astype(int)
    for i in np.argsort(-(share - per), kind="stable")[:count - per.sum()]:
        per[i] += 1
    return np.concatenate([np.linspace(alphas[i], alphas[i + 1], k + 2)[1:-1] for i, k in enumerate(per) if k])
