"""Training samples for the tabletop policy: (base + wrist image, prompt) → action chunk.

Each sample also carries the robot state (normalised and padded like openpi's), but the tabletop
model does not read it: as ``pi05_libero`` it has no state token and a Pi0-format prompt, so its
chunks are the same for any state (``flowlens.tasks.tabletop.config``).

A sample is one frame of an expert episode, turned into model inputs the way inference does it
(:func:`flowlens.model.preprocess.resize_with_pad` letterboxes each frame into the 56-px model
input; the prompt is tokenised in Pi0's format). State and actions are normalised with the
training set's norm stats (quantiles for Pi0.5, z-scores for Pi0, as openpi) and zero-padded to
``action_dim``.

Samples are a deterministic function of the seeds: scene ``seed`` and the frames drawn from
``numpy.random.default_rng([seed, 1])``, reach and transport frames (where the chunk heads for a
named object) three times as likely as the others.

Shapes (N samples, C = 2 cameras, S = 56, L = 20 prompt tokens, H = 10 actions, P = 16 patches)::

    images uint8 [N, C, S, S, 3]   states float32 [N, 4]   actions float32 [N, H, 4]
    tokens int32 [N, L]            token_mask bool [N, L]  patch_labels float32 [N, C, P, 3]
    goals float32 [N, 8]

The targets of the two pre-training heads (see :mod:`flowlens.tasks.tabletop.train`) come from
the renderer's id buffers and the expert: :func:`patch_labels` (which patches show the named
source, the named target, the gripper) and :func:`grounding_target` (where they are).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.model.config import Pi0Config
from flowlens.model.norm_stats import NormStats, normalize
from flowlens.model.preprocess import resize_with_pad, to_model_range
from flowlens.model.tokenizer import PaligemmaTokenizer
from flowlens.tasks.tabletop.expert import HORIZON, PHASES, run_expert
from flowlens.tasks.tabletop.scene import sample_scene

# Held-out scenes (tests, benchmarks) use seeds from here on; training uses seeds below it.
HELD_OUT_SEED = 1_000_000


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
    """A set of training / evaluation samples (raw, unnormalised state and actions).

    Attributes:
      images: uint8 [N, C, S, S, 3] model inputs per camera (config.cameras order).
      states: float32 [N, 4] (x, y, z, g).
      actions: float32 [N, H, 4] expert action chunks.
      tokens: int32 [N, L]; token_mask: bool [N, L].
      seeds: int64 [N] scene seed; frames: int64 [N] frame index in the episode.
      phases: int64 [N] index into PHASES (len(PHASES) for the final frame).
      patch_labels: float32 [N, C, P, 3] share of each model patch (P = grid², row-major)
        covered by the named source, the named target and the gripper, through the same letterbox
        as the images (the targets of the referring-segmentation pre-training head).
      goals: float32 [N, 8] targets of the grounding pre-training head (:func:`grounding_target`).
    """

    images: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    tokens: np.ndarray
    token_mask: np.ndarray
    seeds: np.ndarray
    frames: np.ndarray
    phases: np.ndarray
    patch_labels: np.ndarray
    goals: np.ndarray

    def __len__(self) -> int:
        return int(self.states.shape[0])


def frame_inputs(views: dict, config: Pi0Config) -> np.ndarray:
    """camera → (rgb, ids) of one frame → uint8 [C, S, S, 3] letterboxed model inputs."""
    s = config.siglip.image_size
    return np.stack([resize_with_pad(views[c][0], s, s) for c in config.cameras])


def patch_labels(views: dict, scene, config: Pi0Config) -> np.ndarray:
    """camera → (rgb, ids) of one frame → float32 [C, P, 3]: per model patch, the share covered by
    the named source, the named target and the gripper (ids letterboxed like the images)."""
    from flowlens.tasks.tabletop.render import GRIPPER_ID

    s, p = config.siglip.image_size, config.siglip.patch_size
    out = []
    for c in config.cameras:
        ids = views[c][1]
        planes = np.stack([ids == scene.source + 1, ids == scene.target + 1, ids == GRIPPER_ID], -1)
        boxed = resize_with_pad((planes * 255).astype(np.uint8), s, s).astype(np.float32) / 255
        g = s // p
        out.append(boxed.reshape(g, p, g, p, 3).mean(axis=(1, 3)).reshape(g * g, 3))
    return np.stack(out)


GOAL_SCALE = 0.5  # table units per unit of a grounding target


def grounding_target(scene, episode, t: int) -> np.ndarray:
    """What the prompt refers to at frame ``t``, for the grounding head of pre-training.

    Returns:
      float32 [8]: the named source's and the named target's plane offsets from the gripper and
      the gripper's own pose, ``(src_dx, src_dy, tgt_dx, tgt_dy, x, y, z, g)``, in units of
      ``GOAL_SCALE`` table units (the gripper's x, y centred on the table).
    """
    from flowlens.tasks.tabletop.scene import TABLE_SIZE

    st, xy = episode.states[t], episode.object_xy[t]
    out = np.concatenate(
        [xy[scene.source] - st[:2], xy[scene.target] - st[:2], st[:2] - np.asarray(TABLE_SIZE) / 2, st[2:4]]
    )
    return (out / GOAL_SCALE).astype(np.float32)


def make_samples(
    seeds: Iterable[int],
    tokenizer: PaligemmaTokenizer,
    config: Pi0Config,
    *,
    frames_per_episode: int = 6,
    num_objects: int | None = None,
    progress: bool = False,
) -> Samples:
    """Samples from the expert episodes of ``seeds`` (``frames_per_episode`` random frames each)."""
    seeds = list(seeds)
    if frames_per_episode <= 0:
        raise FlowlensError(f"frames_per_episode must be positive, got {frames_per_episode}.")
    cols: dict[str, list] = {
        k: []
        for k in (
            "images",
            "states",
            "actions",
            "tokens",
            "token_mask",
            "seeds",
            "frames",
            "phases",
            "patch_labels",
            "goals",
        )
    }
    tok_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    it = seeds
    if progress:
        from tqdm import tqdm

        it = tqdm(seeds, desc="rendering samples", unit="episode")
    phase_index = {p: i for i, p in enumerate(PHASES)}
    for seed in it:
        scene = sample_scene(int(seed), num_objects=num_objects)
        ep = run_expert(scene, render_frames=False)
        rng = np.random.default_rng([int(seed), 1])
        # frames where the chunk heads for a named object (reach, transport) are drawn 3x as often
        w = np.array([3.0 if ph in ("reach", "transport") else 1.0 for ph in ep.phases])
        ts = rng.choice(ep.num_frames, size=min(frames_per_episode, ep.num_frames), replace=False, p=w / w.sum())
        if scene.prompt not in tok_cache:
            tp = tokenizer.tokenize(scene.prompt, max_len=config.max_token_len)
            tok_cache[scene.prompt] = (tp.ids, tp.mask)
        ids, mask = tok_cache[scene.prompt]
        for t in sorted(int(t) for t in ts):
            views = ep.render_frame(t)
            cols["images"].append(frame_inputs(views, config))
            cols["patch_labels"].append(patch_labels(views, scene, config))
            cols["goals"].append(grounding_target(scene, ep, t))
            cols["states"].append(ep.states[t])
            cols["actions"].append(ep.action_chunk(t, config.action_horizon))
            cols["tokens"].append(ids)
            cols["token_mask"].append(mask)
            cols["seeds"].append(int(seed))
            cols["frames"].append(t)
            cols["phases"].append(phase_index.get(ep.phases[t], len(PHASES)))
    arrays = {
        k: np.stack(v)
        if k in ("images", "states", "actions", "tokens", "token_mask", "patch_labels", "goals")
        else np.asarray(v)
        for k, v in cols.items()
    }
    return Samples(**arrays)


def compute_norm_stats(samples: Samples) -> dict[str, NormStats]:
    """openpi-style norm stats ("state", "actions": mean, std, q01, q99 over the 4 native dims)."""
    out = {}
    for name, x in (
        ("state", samples.states),
        ("actions", samples.actions.reshape(-1, samples.actions.shape[-1])),
    ):
        x = x.astype(np.float64)
        out[name] = NormStats(
            mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, axis=0), q99=np.quantile(x, 0.99, axis=0)
        )
    return out


def model_batch(
    samples: Samples, index: np.ndarray, norm_stats: dict[str, NormStats], config: Pi0Config
) -> dict[str, np.ndarray]:
    """Normalised, padded arrays for samples ``index``.

    Returns:
      dict with images float32 [B, C, S, S, 3] in [-1, 1], state float32 [B, action_dim],
      tokens int32 [B, L], token_mask bool [B, L], actions float32 [B, H, action_dim].
    """
    a = config.action_dim
    q = config.pi05  # openpi: quantile normalisation for Pi0.5, z-scores for Pi0
    state = normalize(samples.states[index], norm_stats["state"], quantile=q).astype(np.float32)
    actions = normalize(samples.actions[index], norm_stats["actions"], quantile=q).astype(np.float32)
    pad = lambda x: np.concatenate([x, np.zeros(x.shape[:-1] + (a - x.shape[-1],), np.float32)], -1)  # noqa: E731
    return {
        "images": to_model_range(samples.images[index]),
        "state": pad(state),
        "tokens": samples.tokens[index],
        "token_mask": samples.token_mask[index],
        "actions": pad(actions),
    }


__all__ = [
    "HELD_OUT_SEED",
    "HORIZON",
    "Samples",
    "compute_norm_stats",
    "frame_inputs",
    "grounding_target",
    "make_samples",
    "model_batch",
]
