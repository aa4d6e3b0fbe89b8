"""Observation: the model-ready inputs of one (batched) Pi0 / Pi0.5 inference.

This is what openpi's model consumes after its input transforms (resize-with-pad to the SigLIP
size, normalisation, tokenisation, padding of state to ``action_dim``), plus what flowlens needs
to build the TokenLayout from the real inputs: the prompt's TextSegment (pieces, words, special
roles) and, per camera, the FrameTransform from the original frame to the model input.

Cameras enter the prefix in **sorted name order**, which is the order openpi's jitted
``embed_prefix`` sees (JAX flattens dicts by sorted key); for openpi's LIBERO keys
(base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb) that is also the declared order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.segments import TextSegment
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True, eq=False)
class Observation:
    """Batched model inputs (B = batch size).

    Attributes:
      images: camera name → float32 [B, H, W, 3] in [-1, 1] (H = W = the SigLIP image size).
      image_masks: camera name → bool [B]; False marks a missing camera (its patches are masked).
        A camera without an entry counts as present (openpi's default).
      state: float32 [B, action_dim] robot state, padded to action_dim (Pi0 embeds it as a token;
        Pi0.5 does not use it).
      tokenized_prompt: int32 [B, max_token_len] token ids, right-padded.
      tokenized_prompt_mask: bool [B, max_token_len], True on real tokens.
      text: the prompt as a TextSegment (pieces, words, roles) for the layout; one segment, or one
        per batch element. None: the layout gets generic pieces built from the ids and the mask.
      transforms: camera name → FrameTransform (original frame → model input); missing cameras
        get the identity.
    """

    images: Mapping[str, np.ndarray]
    image_masks: Mapping[str, np.ndarray]
    state: np.ndarray
    tokenized_prompt: np.ndarray
    tokenized_prompt_mask: np.ndarray
    text: TextSegment | Sequence[TextSegment] | None = None
    transforms: Mapping[str, FrameTransform] | None = None

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera names in prefix order (sorted, as openpi's jitted model sees them)."""
        return tuple(sorted(self.images))

    @property
    def batch_size(self) -> int:
        return int(np.shape(self.tokenized_prompt)[0])

    def image_mask(self, camera: str) -> np.ndarray:
        """bool [B]: the mask of ``camera`` (all True when not given)."""
        if camera in self.image_masks:
            return np.asarray(self.image_masks[camera], dtype=bool).reshape(self.batch_size)
        return np.ones(self.batch_size, dtype=bool)

    def text_segment(self, batch_index: int) -> TextSegment | None:
        """The TextSegment of batch element ``batch_index`` (None when not given)."""
        if self.text is None or isinstance(self.text, TextSegment):
            return self.text
        return self.text[batch_index]

    def transform(self, camera: str) -> FrameTransform:
        if self.transforms is None or camera not in self.transforms:
            size = tuple(np.shape(self.images[camera])[1:3])
            return FrameTransform(size, size)
        return self.transforms[camera]


def check_observation(obs: Observation, *, action_dim: int, max_token_len: int, image_size: int,
                      cameras: Sequence[str] | None = None) -> None:
    """Validate shapes against a model configuration; raise FlowlensError naming the field."""
    if not obs.images:
        raise FlowlensError("Observation.images is empty; expected camera name → [B, H, W, 3] images.")
    b = obs.batch_size
    for cam, img in obs.images.items():
        shape = tuple(np.shape(img))
        if shape != (b, image_size, image_size, 3):
            raise FlowlensError(
                f"Observation.images[{cam!r}] must be [B, {image_size}, {image_size}, 3] = "
                f"{(b, image_size, image_size, 3)}, got {shape}. Resize with pad to {image_size} px first "
                "(flowlens.model.preprocess)."
            )
    unknown = set(obs.image_masks) - set(obs.images)
    if unknown:
        raise FlowlensError(f"Observation.image_masks names cameras without images: {sorted(unknown)}.")
    if cameras is not None and sorted(cameras) != sorted(obs.images):
        raise FlowlensError(
            f"Observation.images has cameras {sorted(obs.images)} but the model expects {sorted(cameras)}."
        )
    if tuple(np.shape(obs.state)) != (b, action_dim):
        raise FlowlensError(
            f"Observation.state must be [B, action_dim] = {(b, action_dim)}, "
            f"got {tuple(np.shape(obs.state))}. "
            "Pad the state with zeros to action_dim."
        )
    for name in ("state", *(f"images[{c!r}]" for c in obs.images)):
        value = obs.state if name == "state" else obs.images[name[8:-2]]
        if not np.isfinite(np.asarray(value, dtype=np.float32)).all():
            raise FlowlensError(
                f"Observation.{name} holds NaN or inf; the model would turn it into non-finite attention. "
                "Check the dataset / normalisation stats (flowlens.model.preprocess.check_state)."
            )
    for name in ("tokenized_prompt", "tokenized_prompt_mask"):
        shape = tuple(np.shape(getattr(obs, name)))
        if shape != (b, max_token_len):
            raise FlowlensError(f"Observation.{name} must be [B, max_token_len] = {(b, max_token_len)}, "
                                f"got {shape}.")
    if obs.text is not None and not isinstance(obs.text, TextSegment) and len(obs.text) != b:
        raise FlowlensError(f"Observation.text must be one TextSegment or one per batch element ({b}), "
                            f"got {len(obs.text)}.")
    for seg in [obs.text] if isinstance(obs.text, TextSegment) else (obs.text or []):
        if seg.size != max_token_len:
            raise FlowlensError(
                f"Observation.text has {seg.size} tokens but the prompt has max_token_len={max_token_len}."
            )
