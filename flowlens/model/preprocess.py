"""Model inputs as openpi prepares them: letterboxed camera images, masks, padded state, tokens.

openpi's inference path for Pi0 / Pi0.5 (fact sheet §4.2, §6), reproduced here without openpi:

1. optional 180° rotation of each frame (the LIBERO convention: the eval client and the training
   data both show the scene rotated by 180°, i.e. ``frame[::-1, ::-1]``);
2. ``resize_with_pad`` to the SigLIP size (224): keep the aspect ratio, PIL bilinear resize of
   the uint8 frame, paste centred on black with top/left padding ``int((224 - size) / 2)``
   (``openpi_client.image_tools``; a no-op for frames already 224×224);
3. uint8 → float32 in [-1, 1] as ``x / 255 * 2 - 1``;
4. the three openpi cameras ``base_0_rgb``, ``left_wrist_0_rgb``, ``right_wrist_0_rgb``; a camera
   without a frame gets a zero (black) image and mask False (LIBERO's right wrist);
5. (optionally) state normalisation with the checkpoint's norm stats, then the prompt is
   tokenised (Pi0 format, or Pi0.5's discrete-state format) and the state zero-padded to
   ``action_dim``.

The result is an :class:`~flowlens.model.observation.Observation` with batch size 1, carrying the
prompt's TextSegment and one :class:`~flowlens.core.frame.FrameTransform` per camera so
attention on patches can be drawn on the original frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError, did_you_mean
from flowlens.model.config import Pi0Config
from flowlens.model.norm_stats import NormStats, normalize
from flowlens.model.observation import Observation
from flowlens.model.tokenizer import PaligemmaTokenizer


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Letterbox a uint8 image into ``height × width`` like ``openpi_client.image_tools``.

    Args:
      image: uint8 [..., H, W, C] (leading batch axes allowed).
      height, width: the output size.

    Returns:
      uint8 [..., height, width, C]: the frame resized with PIL bilinear so it fits, keeping the
      aspect ratio (sizes ``int(H / ratio)``, ``int(W / ratio)``, ``ratio = max(W / width,
      H / height)``), centred on black. The content box is ``FrameTransform.content_box``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise FlowlensError(
            f"image must be uint8 [..., H, W, C], got dtype {image.dtype}. Convert floats in [0, 1] with "
            "(255 * image).astype(np.uint8) (as openpi_client.image_tools.convert_to_uint8 does)."
        )
    if image.ndim < 3:
        raise FlowlensError(f"image must be [..., H, W, C], got shape {image.shape}.")
    h, w = image.shape[-3:-1]
    if min(h, w) < 1 or min(FrameTransform((h, w), (height, width)).content_box[2:]) < 1:
        raise FlowlensError(
            f"image of {h}×{w} pixels cannot be letterboxed to {height}×{width}: "
            f"{'it is empty' if min(h, w) < 1 else 'its content would be less than one pixel thick'}. "
            "Pass the camera frame itself (crop or pad extreme aspect ratios first)."
        )
    if image.shape[-3:-1] == (height, width):
        return image
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    out = np.stack([_resize_one(im, height, width) for im in flat])
    return out.reshape(*lead, *out.shape[-3:])


def _resize_one(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left, rh, rw = FrameTransform((h, w), (height, width)).content_box
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = np.asarray(pil.resize((rw, rh), resample=Image.BILINEAR))
    out = np.zeros((height, width, image.shape[-1]), dtype=np.uint8)
    out[top : top + rh, left : left + rw] = resized.reshape(rh, rw, image.shape[-1])
    return out


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [-1, 1], ``x / 255 * 2 - 1`` (openpi's ``Observation.from_dict``)."""
    return np.asarray(image).astype(np.float32) / 255.0 * 2.0 - 1.0


def prepare_image(
    frame: np.ndarray, size: int, *, rotate180: bool = False
) -> tuple[np.ndarray, FrameTransform]:
    """One camera frame → (float32 [size, size, 3] in [-1, 1], its FrameTransform).

    Args:
      frame: uint8 [H, W, 3] as stored (before any rotation).
      size: the model's square input size (``config.siglip.image_size``).
      rotate180: rotate by 180° before letterboxing (LIBERO).
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise FlowlensError(f"a camera frame must be uint8 [H, W, 3], got shape {frame.shape}.")
    if rotate180:
        frame = frame[::-1, ::-1]
    model_img = resize_with_pad(np.ascontiguousarray(frame), size, size)
    transform = FrameTransform(tuple(frame.shape[:2]), (size, size), rotate180=rotate180)
    return to_model_range(model_img), transform


def check_state(state) -> np.ndarray:
    """``state`` as float32 [d]; FlowlensError unless it is a 1-D vector of finite numbers."""
    arr = state if isinstance(state, np.ndarray) else None
    if arr is None:
        if isinstance(state, (str, bytes)):
            raise FlowlensError(f"state must be a 1-D vector of numbers, got a {type(state).__name__} ({state!r:.40}).")
        try:
            arr = np.asarray(state)
        except (ValueError, TypeError) as e:
            raise FlowlensError(f"state must be a 1-D vector of numbers, got {type(state).__name__} ({e}).") from None
    if arr.dtype.kind not in "biuf":
        raise FlowlensError(
            f"state must be a 1-D vector of numbers, got dtype {arr.dtype}. Pass the robot state as floats."
        )
    if arr.ndim != 1:
        raise FlowlensError(
            f"state must be a 1-D vector [d], got shape {arr.shape}; flowlens does not flatten it for you. "
            "Pass one frame's state (e.g. state[t])."
        )
    arr = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise FlowlensError(
            f"state must be finite; entry {bad[0]} is {arr[bad[0]]} ({bad.size} non-finite of {arr.size}). "
            "Check the dataset's state column / the normalisation stats."
        )
    return arr


def pad_state(state: np.ndarray, action_dim: int) -> np.ndarray:
    """float32 [d] → [action_dim], zero-padded (openpi's ``PadStatesAndActions``)."""
    state = check_state(state)
    if state.shape[0] > action_dim:
        raise FlowlensError(
            f"state has {state.shape[0]} dims but the model's action_dim is {action_dim}; pass at most "
            f"{action_dim} values (openpi pads shorter states with zeros)."
        )
    return np.pad(state, (0, action_dim - state.shape[0]))


def make_observation(
    frames: Mapping[str, np.ndarray],
    prompt: str,
    state: np.ndarray | None,
    tokenizer: PaligemmaTokenizer,
    config: Pi0Config,
    rotate180: bool = False,
    *,
    norm_stats: Mapping[str, NormStats] | None = None,
    discrete_state: bool | None = None,
    image_masks: Mapping[str, bool] | None = None,
) -> Observation:
    """Build the model input for one frame, the way openpi's policy pipeline does.

    Args:
      frames: camera name → uint8 [H, W, 3] frame, for any of ``config.cameras``; a missing
        camera gets a black image and mask False (LIBERO: the right wrist).
      prompt: the task instruction.
      state: robot state float [d] (d <= action_dim), raw when ``norm_stats`` is given, else
        already normalised; None → zeros.
      tokenizer: the PaliGemma tokenizer.
      config: the model configuration (image size, action_dim, max_token_len, cameras, variant).
      rotate180: the model expects frames rotated by 180° (LIBERO); applied before letterboxing.
      norm_stats: the checkpoint's stats (``load_norm_stats``); when given, ``state`` is
        normalised with ``stats["state"]`` (z-score for Pi0, quantiles for Pi0.5).
      discrete_state: put the discretised state into the prompt (Pi0.5's format). Default:
        ``config.discrete_state_input`` if the config has it, else True for Pi0.5 configs other
        than ``pi05_libero`` (openpi's defaults) and False for Pi0.
      image_masks: override the per-camera masks (e.g. True for a provided black image).

    Returns:
      Observation with batch size 1: images float32 [1, S, S, 3], masks bool [1], state float32
      [1, action_dim], tokenized_prompt int32 [1, max_token_len], mask bool [1, max_token_len],
      the prompt's TextSegment and a FrameTransform per camera.

    Raises:
      FlowlensError: unknown camera names, frames that are not uint8 [H, W, 3], a state longer
        than action_dim, a Pi0.5 discrete-state prompt without a state.
    """
    size = config.siglip.image_size
    cameras = tuple(config.cameras)
    for cam in list(frames) + list(image_masks or {}):
        if cam not in cameras:
            raise FlowlensError(
                f"camera {cam!r} is not an input of this model; expected some of {list(cameras)}."
                f"{did_you_mean(cam, cameras)} (LIBERO: image → base_0_rgb, wrist_image → left_wrist_0_rgb.)"
            )
    if not frames:
        raise FlowlensError(f"frames is empty; give at least one of {list(cameras)} as uint8 [H, W, 3].")
    images, masks, transforms = {}, {}, {}
    for cam in cameras:
        if cam in frames:
            img, tf = prepare_image(frames[cam], size, rotate180=rotate180)
            mask = True
        else:
            img, tf, mask = (
                np.full((size, size, 3), -1.0, np.float32),
                FrameTransform((size, size), (size, size)),
                False,
            )
        if image_masks is not None and cam in image_masks:
            mask = bool(image_masks[cam])
        images[cam], masks[cam], transforms[cam] = img[None], np.array([mask]), tf

    raw = (
        np.zeros(config.action_dim, np.float32)
        if state is None
        else check_state(state)
    )
    if norm_stats is not None and state is not None:
        if "state" not in norm_stats:
            raise FlowlensError(f"norm_stats has no 'state' entry (keys {sorted(norm_stats)}).")
        raw = normalize(raw, norm_stats["state"], quantile=config.pi05).astype(np.float32)
    if discrete_state is None:
        discrete_state = getattr(config, "discrete_state_input", None)
        if discrete_state is None:
            discrete_state = config.pi05 and config.name != "pi05_libero"
    if discrete_state and state is None:
        raise FlowlensError(
            "discrete_state=True (Pi0.5's 'Task: ..., State: ...;' prompt) needs a state; pass state=... or "
            "discrete_state=False."
        )
    tok = tokenizer.tokenize(prompt, raw if discrete_state else None, max_len=config.max_token_len)
    return Observation(
        images=images,
        image_masks=masks,
        state=pad_state(raw, config.action_dim)[None],
        tokenized_prompt=tok.ids[None],
        tokenized_prompt_mask=tok.mask[None],
        text=tok.text,
        transforms=transforms,
    )


__all__ = ["make_observation", "pad_state", "prepare_image", "resize_with_pad", "to_model_range"]
