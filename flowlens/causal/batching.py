"""Frames in batches: stack batch-1 observations into fixed-size batches for one compiled call.

Interventions run over many frames; the sampler takes a batch. :func:`frame_batches` cuts the
frames into batches of at most ``batch_size`` (the last one padded with copies of its last frame,
so every call has the same shape and compiles once), optionally only frames that share a token
layout and prompt (knockout token sets resolve on one layout per call, word selections on its
prompt). :func:`frame_noise` draws the noise of frame i as ``normal(key(seed), [F, H, A])[i]`` (the
embedded task's convention), so results do not depend on the batch size. :func:`sample_frames` is
the one batched sampler of interventions: knockout sweeps and ``flowlens.hypotheses.prefetch_actions``
both run through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.model.observation import Observation


def layout_key(layout: TokenLayout) -> tuple:
    """Hashable signature of a layout: its groups' token indices, the valid mask and the prompt's
    token ids (frames with equal keys resolve every knockout selection, words included, identically)."""
    words = tuple(layout.text.token_ids) if layout.text is not None else ()
    return (layout.n, tuple((name, tuple(idx.tolist())) for name, idx in layout.groups().items()),
            layout.valid.tobytes(), words)


def frame_noise(config, frames: int, *, noise=None, seed: int = 0) -> np.ndarray:
    """float32 [F, H_a, action_dim]: ``noise`` checked, or drawn from ``seed`` (frame i → row i)."""
    shape = (frames, config.action_horizon, config.action_dim)
    if noise is None:
        import jax

        return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)
    noise = np.asarray(noise, np.float32)
    if noise.shape != shape:
        raise FlowlensError(f"noise must be [frames, action_horizon, action_dim] = {shape}, got {noise.shape}.")
    return noise


def check_frames(observations: Sequence[Observation], argument: str) -> list[Observation]:
    """Frames as a list of batch-1 observations (a batched Observation is refused)."""
    if isinstance(observations, Observation):
        raise FlowlensError(f"{argument} must be a list of batch-1 Observations (one per frame), got one "
                            f"Observation; pass [obs] or a list of frames.")
    frames = list(observations)
    if not frames:
        raise FlowlensError(f"{argument} is empty; pass at least one frame (a batch-1 Observation).")
    for i, o in enumerate(frames):
        if not isinstance(o, Observation) or o.batch_size != 1:
            got = f"an Observation of batch {o.batch_size}" if isinstance(o, Observation) else type(o).__name__
            raise FlowlensError(f"{argument}[{i}] must be a batch-1 Observation, got {got}.")
    return frames


def frame_batches(frames: Sequence[int], batch_size: int, keys: Sequence | None = None) -> Iterator[list[int]]:
    """Frame indices in batches of at most ``batch_size``; with ``keys``, only equal keys share a batch."""
    if batch_size < 1:
        raise FlowlensError(f"batch_size must be >= 1, got {batch_size}.")
    groups: dict = {}
    for f in frames:
        groups.setdefault(None if keys is None else keys[f], []).append(f)
    for members in groups.values():
        for lo in range(0, len(members), batch_size):
            yield members[lo:lo + batch_size]


def sample_frames(model, params, frames: Sequence[Observation], noise: np.ndarray, knockouts=(), *,
                  batch_size: int = 16, keys: Sequence | None = None, pad: str = "full", num_steps: int | None = None,
                  empty_rows: str = "keep_self") -> tuple[np.ndarray, int]:
    """Sample every frame with ``knockouts``, batched; returns (actions float32 [F, H_a, A], sampler calls).

    Args:
      frames: F batch-1 Observations; noise: float32 [F, H_a, A] (frame i → row i).
      knockouts: Knockouts applied in every call (() : the unedited model).
      batch_size: frames per call; keys: per frame a hashable key, only equal keys share a call
        (default :func:`layout_key` of each frame's layout).
      pad: "full" pads every call to ``min(batch_size, F)`` frames (one compiled shape); "pow2" to
        the next power of two of the call's frames (few shapes, less padding).
    """
    from flowlens.model.sampler import sample_actions

    if pad not in ("full", "pow2"):
        raise FlowlensError(f"pad must be 'full' or 'pow2', got {pad!r}.")
    keys = [layout_key(model.layout(o, 0)) for o in frames] if keys is None else list(keys)
    full = min(batch_size, len(frames))
    out = np.zeros(np.shape(noise), np.float32)
    calls = 0
    for batch in frame_batches(range(len(frames)), full, keys):
        size = full if pad == "full" else 1 << (len(batch) - 1).bit_length()
        acts, _ = sample_actions(model, params, stack([frames[f] for f in batch], size),
                                 noise=pad_rows(np.asarray(noise)[batch], size), num_steps=num_steps,
                                 knockouts=list(knockouts) or None, empty_rows=empty_rows)
        out[batch] = np.asarray(acts)[: len(batch)]
        calls += 1
    return out, calls


def stack(observations: Sequence[Observation], size: int) -> Observation:
    """Stack batch-1 observations (same cameras) into one batch of ``size`` (padded with the last)."""
    from flowlens.tasks.tabletop.policy import stack_observations

    obs = list(observations)
    return stack_observations(obs + [obs[-1]] * (size - len(obs)))


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
    """a [b, ...] → [size, ...] padded with copies of its last row."""
    return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)]) if a.shape[0] < size else a
