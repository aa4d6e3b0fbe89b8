"""Running a Pi0 policy on tabletop frames: batched observations in, task-space action chunks out.

Inputs go through the same path as any checkpoint (:func:`flowlens.model.preprocess.make_observation`:
letterbox to the model size, normalise the state with the norm stats, tokenise the prompt in Pi0's
format, pad the state); observations are stacked into one batch, sampled with
:func:`flowlens.model.sampler.sample_actions`, and the actions are unnormalised back to the
task's 4 dimensions ``(dx, dy, dz, gripper)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.model.norm_stats import NormStats, unnormalize
from flowlens.model.observation import Observation
from flowlens.model.preprocess import make_observation
from flowlens.model.sampler import sample_actions
from flowlens.tasks.tabletop.expert import ACTION_DIM


def stack_observations(observations: Sequence[Observation]) -> Observation:
    """Batch-1 observations (same cameras) → one Observation with B = len(observations)."""
    if not observations:
        raise FlowlensError("stack_observations needs at least one observation.")
    first = observations[0]
    cams = list(first.images)
    return Observation(
        images={c: np.concatenate([np.asarray(o.images[c]) for o in observations]) for c in cams},
        image_masks={c: np.concatenate([o.image_mask(c) for o in observations]) for c in cams},
        state=np.concatenate([np.asarray(o.state) for o in observations]),
        tokenized_prompt=np.concatenate([np.asarray(o.tokenized_prompt) for o in observations]),
        tokenized_prompt_mask=np.concatenate([np.asarray(o.tokenized_prompt_mask) for o in observations]),
        text=None if any(o.text is None for o in observations) else [o.text_segment(0) for o in observations],
        transforms=first.transforms,
    )


def observe(
    frames: Mapping[str, np.ndarray],
    prompt: str,
    state: np.ndarray,
    tokenizer,
    config,
    norm_stats: Mapping[str, NormStats],
) -> Observation:
    """One tabletop frame (camera → uint8 [H, W, 3]), prompt and raw state [4] → Observation (B = 1).

    The prompt is in Pi0's format (``discrete_state=False``, as ``pi05_libero``): the tabletop
    model is trained without the state in the prompt and, being a Pi0.5, has no state token, so
    the state does not change its actions. It is still checked (a finite 4-vector; FlowlensError
    otherwise) and carried in the Observation like openpi's.
    """
    return make_observation(
        frames,
        prompt,
        np.asarray(state, np.float32),
        tokenizer,
        config,
        norm_stats=norm_stats,
        discrete_state=False,
    )


def predict_chunks(
    model,
    params,
    observations: Sequence[Observation],
    norm_stats: Mapping[str, NormStats],
    *,
    seed: int = 0,
    batch_size: int = 64,
    knockouts=None,
) -> np.ndarray:
    """Sample action chunks for many observations.

    Args:
      model: a :class:`flowlens.model.pi0.Pi0Model`.
      params: its parameters.
      observations: batch-1 observations.
      norm_stats: "actions" stats used to unnormalise.
      seed: the noise of observation i is ``normal(key(seed), ...)[i]``, so results do not depend
        on ``batch_size``.
      batch_size: observations per sampler call (the last batch is padded to keep one compile).
      knockouts: attention edges to remove (:class:`flowlens.model.knockout.Knockout` s). Their
        token sets resolve on one layout per call and prompts differ in length, so with
        knockouts every observation is sampled on its own (``batch_size`` is ignored).

    Returns:
      float32 [N, H, 4] task-space action chunks (dx, dy, dz, gripper).
    """
    import jax

    cfg = model.config
    n = len(observations)
    if knockouts:
        batch_size = 1
    noise = np.asarray(jax.random.normal(jax.random.key(seed), (n, cfg.action_horizon, cfg.action_dim)))
    out = []
    for lo in range(0, n, batch_size):
        chunk = list(observations[lo : lo + batch_size])
        m = len(chunk)
        chunk += [chunk[-1]] * (min(batch_size, n) - m)
        nz = noise[lo : lo + m]
        nz = np.concatenate([nz, np.repeat(nz[-1:], len(chunk) - m, axis=0)])
        actions, _ = sample_actions(model, params, stack_observations(chunk), noise=nz, knockouts=knockouts)
        out.append(np.asarray(actions)[:m])
    actions = np.concatenate(out)[..., :ACTION_DIM]
    return unnormalize(actions, norm_stats["actions"], quantile=cfg.pi05).astype(np.float32)
