"""Episode sources: one robot episode, frame by frame, in the terms a Pi0-family model consumes.

Every source (MP4 rollout, LeRobot v2 dataset episode, flowlens episode folder) yields ``Frame``
records: the camera images as stored in the file (uint8 ``[height, width, 3]`` RGB, keyed by the
*model's* camera name, e.g. ``base_0_rgb``), the prompt, the robot state and recorded action when
the file has them, and for each camera the exact ``FrameTransform`` from the stored image to the
224×224 image the model sees (``to_model_input`` applies it). Cameras the model expects but the
source lacks are listed in ``missing_cameras``: the model adapter feeds a zero image for them and
masks them (``image_mask=False``), as openpi's ``LiberoInputs`` does for ``right_wrist_0_rgb``.

``orientation`` says in words how the stored frames relate to the simulator's raw render; keep
it in mind when comparing sources (LIBERO frames appear raw, rotated 180°, or flipped depending on
who wrote them — see reference/landscape.md §4).
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np
from PIL import Image

from flowlens.core.frame import FrameTransform
from flowlens.core.openpi_layout import PI0_CAMERAS
from flowlens.errors import FlowlensError

MODEL_SIZE = (224, 224)


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One time step of an episode.

    Attributes:
      index: frame index in the episode (0-based).
      images: model camera name → uint8 [height, width, 3] RGB, as stored in the file.
      prompt: the task instruction given to the model.
      state: float32 [state_dim] robot state (LIBERO: eef pos 3 + axis-angle 3 + gripper 2), or None.
      actions: float32 [action_dim] action recorded at this step (LIBERO: 7), or None.
      transforms: model camera name → FrameTransform (stored image → model input).
      missing_cameras: model cameras with no image in this source (feed zeros, mask them).
      timestamp: seconds since the episode start, or None.
    """

    index: int
    images: dict[str, np.ndarray]
    prompt: str
    state: np.ndarray | None
    actions: np.ndarray | None
    transforms: dict[str, FrameTransform]
    missing_cameras: tuple[str, ...]
    timestamp: float | None = None

    def model_inputs(self, cameras=PI0_CAMERAS) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        """The images the model sees (uint8 [224, 224, 3] per camera; zeros for missing cameras) and
        the image mask (False for missing cameras), in ``cameras`` order."""
        images, mask = {}, {}
        for cam in cameras:
            if cam in self.images:
                images[cam] = to_model_input(self.images[cam], self.transforms[cam])
                mask[cam] = True
            else:
                images[cam] = np.zeros((*MODEL_SIZE, 3), np.uint8)
                mask[cam] = False
        return images, mask


def to_model_input(image: np.ndarray, transform: FrameTransform) -> np.ndarray:
    """Apply ``transform`` to a stored frame: optional 180° rotation, then openpi's resize_with_pad
    (PIL bilinear, black padding centred, a no-op at the target size).

    Args:
      image: uint8 [height, width, 3], of size ``transform.frame_size``.

    Returns:
      uint8 [model height, model width, 3].
    """
    image = np.asarray(image)
    if image.shape[:2] != transform.frame_size:
        raise FlowlensError(
            f"image is {image.shape[:2]} but the transform expects frame_size "
            f"{transform.frame_size}; pass the frame this transform was recorded for."
        )
    if transform.rotate180:
        image = image[::-1, ::-1]
    if image.shape[:2] == transform.model_size:
        return np.ascontiguousarray(image)
    top, left, rh, rw = transform.content_box
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((rw, rh), resample=Image.BILINEAR)
    out = np.zeros((*transform.model_size, 3), np.uint8)
    out[top : top + rh, left : left + rw] = np.asarray(resized)
    return out


class EpisodeSource(abc.ABC):
    """One episode, readable frame by frame. Subclasses fill the attributes and ``_images``.

    Attributes:
      name: a short, file-name-safe name of the episode.
      kind: "mp4", "lerobot" or "episode_dir".
      path: the file or folder it reads.
      fps: frames per second, or None.
      success: whether the episode succeeded, None when unknown.
      transforms: model camera → FrameTransform.
      missing_cameras: model cameras this source has no image for.
      orientation: how stored frames relate to the raw simulator render, in words.
    """

    kind: str = "?"
    name: str
    path: object
    fps: float | None = None
    success: bool | None = None
    transforms: dict[str, FrameTransform]
    missing_cameras: tuple[str, ...] = ()
    orientation: str = ""
    _prompt: str | None = None
    _prompt_hint: str = "pass prompt='...' to open_episode"

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _images(self, index: int) -> dict[str, np.ndarray]: ...

    def _state(self, index: int) -> np.ndarray | None:
        return None

    def _actions(self, index: int) -> np.ndarray | None:
        return None

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.transforms)

    @property
    def prompt(self) -> str:
        """The task instruction; FlowlensError when the source has none and none was given."""
        if not self._prompt:
            raise FlowlensError(
                f"episode {self.name!r} ({self.path}) has no prompt in its files; {self._prompt_hint}."
            )
        return self._prompt

    def check_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise FlowlensError(f"frame index must be an integer, got {index!r}.")
        if not -n <= int(index) < n:
            raise FlowlensError(
                f"frame {index} out of range: episode {self.name!r} has {n} frames "
                f"(valid: 0–{n - 1}, or negative from the end)."
            )
        return int(index) % n

    def images(self, index: int) -> dict[str, np.ndarray]:
        """Camera images of frame ``index`` (no prompt needed)."""
        return self._images(self.check_index(index))

    def frame(self, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end)."""
        i = self.check_index(index)
        prompt = self.prompt
        return Frame(
            index=i,
            images=self._images(i),
            prompt=prompt,
            state=self._state(i),
            actions=self._actions(i),
            transforms=dict(self.transforms),
            missing_cameras=tuple(self.missing_cameras),
            timestamp=i / self.fps if self.fps else None,
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self.frame(i)

    def close(self) -> None:  # noqa: B027 - a no-op default; sources with open files override it
        """Release open files (sources re-open on the next read)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            return (
                f"{type(self).__name__}({self.name!r}, {len(self)} frames, cameras={list(self.cameras)}, "
                f"success={self.success})"
            )
        except AttributeError:  # repr of a half-initialised source (inside an error traceback)
            return f"{type(self).__name__}(<opening>)"
