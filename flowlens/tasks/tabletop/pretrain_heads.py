"""The pre-training heads of the tabletop model: what stage 1 of training asks the prefix to know.

Real Pi0 starts from PaliGemma, a VLM pre-trained to ground phrases such as "red bowl" in
images. The tabletop model is trained from scratch, so stage 1 of
:mod:`flowlens.tasks.tabletop.train` trains its prefix (image encoder + PaliGemma expert) on two
linear heads that read the prefix's final-normed outputs ``prefix_out [B, P, D]``:

* **referring segmentation**: per image token, the share of its patch covered by the named
  source, the named target and the gripper (targets: :func:`dataset.patch_labels`), mean squared
  error × ``SEG_SCALE``;
* **grounding**: the mean over valid prefix tokens → the named objects' offsets from the gripper
  and the gripper's pose (targets: :func:`dataset.grounding_targets`), mean squared error.

The heads are not part of the model and never ship; ``aux_heads.npz`` keeps them next to a
training run's ``params.npz`` so that ``--init`` can resume them.
"""

from __future__ import annotations

import pathlib

import numpy as np

GOAL_DIM = 8  # grounding targets: (src_dx, src_dy, tgt_dx, tgt_dy, x, y, z, g)
SEG_CLASSES = 3  # segmentation targets: (source, target, gripper) share of each patch
SEG_SCALE = 10.0  # patch shares are small (most patches 0): their mean squared error is scaled up
HEADS_FILE = "aux_heads.npz"


def init_heads(rng, width: int) -> dict:
    """Random heads for a prefix of ``width``: kernels normal(1/sqrt(width)), zero biases."""
    import jax
    import jax.numpy as jnp

    return {
        "kernel": jax.random.normal(jax.random.fold_in(rng, 2), (width, GOAL_DIM)) / width**0.5,
        "bias": jnp.zeros((GOAL_DIM,)),
        "seg_kernel": jax.random.normal(jax.random.fold_in(rng, 3), (width, SEG_CLASSES)) / width**0.5,
        "seg_bias": jnp.zeros((SEG_CLASSES,)),
    }


def save_heads(heads: dict, run_dir: pathlib.Path) -> None:
    np.savez(pathlib.Path(run_dir) / HEADS_FILE, **{k: np.asarray(v) for k, v in heads.items()})


def load_heads(run_dir: pathlib.Path) -> dict | None:
    """The heads saved in ``run_dir`` (None when there are none)."""
    path = pathlib.Path(run_dir) / HEADS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def segmentation(heads: dict, prefix_out, num_image_tokens: int):
    """float [B, num_image_tokens, 3]: the segmentation head on the image tokens (cameras first)."""
    return prefix_out[:, :num_image_tokens] @ heads["seg_kernel"] + heads["seg_bias"]


def head_losses(heads: dict, prefix_out, prefix_mask, goals, patch_labels):
    """(grounding loss, segmentation loss), scalars.

    Args:
      prefix_out: [B, P, D] final-normed prefix outputs; prefix_mask: bool [B, P].
      goals: [B, GOAL_DIM]; patch_labels: [B, C, patches, 3].
    """
    import jax.numpy as jnp

    m = prefix_mask[..., None].astype(jnp.float32)
    pooled = jnp.sum(prefix_out * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    grounding = jnp.mean(jnp.square(pooled @ heads["kernel"] + heads["bias"] - goals))
    n_img = patch_labels.shape[1] * patch_labels.shape[2]
    seg = segmentation(heads, prefix_out, n_img)
    seg_loss = jnp.mean(jnp.square(seg - patch_labels.reshape(seg.shape))) * SEG_SCALE
    return grounding, seg_loss


def source_hit_rate(predicted: np.ndarray, labels: np.ndarray, min_share: float = 0.1) -> list[float]:
    """Per camera: how often the patch the head scores highest for "named source" shows it.

    Args:
      predicted, labels: float [N, C, patches, 3].
      min_share: a patch "shows" the source when at least this share of it is covered.

    Returns:
      C hit rates in [0, 1].
    """
    best = predicted[..., 0].argmax(-1)
    hit = np.take_along_axis(labels[..., 0], best[..., None], -1)[..., 0] > min_share
    return hit.mean(axis=0).tolist()
