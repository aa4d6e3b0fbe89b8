"""FrameTransform: how the image the model saw relates to the frame a person looks at.

openpi letterboxes every camera image into 224×224 (``resize_with_pad``: keep the aspect ratio,
pad with black, centred, top/left pad = floor) and the LIBERO pipeline rotates frames by 180°.
A FrameTransform records exactly that, so scores on image patches can be drawn on the model's
input *and* on the original frame.

Coordinates are pixels, ``(row, col)``; boxes are ``(top, left, height, width)`` in float pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True)
class FrameTransform:
    """Original frame → model input: optional 180° rotation, then resize-with-pad.

    Attributes:
      frame_size: (height, width) of the frame as stored in the file the user has.
      model_size: (height, width) of the model input (224×224 for Pi0 / Pi0.5).
      rotate180: True when the model saw the frame rotated by 180° (both axes flipped).
    """

    # (height, width) of the original frame.
    frame_size: tuple[int, int] = (224, 224)
    # (height, width) of the model's input image.
    model_size: tuple[int, int] = (224, 224)
    # The model saw the frame rotated by 180 degrees.
    rotate180: bool = False

    def __post_init__(self) -> None:
        for name in ("frame_size", "model_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) <= 0:
                raise FlowlensError(f"FrameTransform.{name} must be (height, width) > 0, got {size!r}.")
            object.__setattr__(self, name, (int(size[0]), int(size[1])))

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the resized frame inside the model input (openpi rounding)."""
        fh, fw = self.frame_size
        mh, mw = self.model_size
        ratio = max(fw / mw, fh / mh)
        rh, rw = int(fh / ratio), int(fw / ratio)
        top, left = max(0, int((mh - rh) / 2)), max(0, int((mw - rw) / 2))
        return top, left, rh, rw

    @property
    def is_identity(self) -> bool:
        return self.frame_size == self.model_size and not self.rotate180

    def model_to_frame(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map model-input pixel coordinates to original-frame coordinates (float, may fall outside)."""
        top, left, rh, rw = self.content_box
        fh, fw = self.frame_size
        r = (np.asarray(rows, dtype=np.float64) - top) * (fh / rh)
        c = (np.asarray(cols, dtype=np.float64) - left) * (fw / rw)
        if self.rotate180:
            r, c = fh - r, fw - c
        return r, c

    def frame_to_model(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map original-frame pixel coordinates to model-input coordinates."""
        top, left, rh, rw = self.content_box
        fh, fw = self.frame_size
        r, c = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
        if self.rotate180:
            r, c = fh - r, fw - c
        return r * (rh / fh) + top, c * (rw / fw) + left

    def model_box_to_frame(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A (top, left, height, width) box in model pixels → the same region in frame pixels,
        clipped to the frame; a box entirely in the letterbox padding has height or width 0."""
        top, left, h, w = box
        r, c = self.model_to_frame(np.array([top, top + h]), np.array([left, left + w]))
        fh, fw = self.frame_size
        r0, r1 = np.clip(np.sort(r), 0, fh)
        c0, c1 = np.clip(np.sort(c), 0, fw)
        return float(r0), float(c0), float(r1 - r0), float(c1 - c0)

    def to_dict(self) -> dict:
        return {"frame_size": list(self.frame_size), "model_size": list(self.model_size),
                "rotate180": self.rotate180}

    @classmethod
    def from_dict(cls, d: dict) -> FrameTransform:
        return cls(tuple(d["frame_size"]), tuple(d["model_size"]), bool(d["rotate180"]))
